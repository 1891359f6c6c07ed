"""Synthetic routes with controlled plans, for the ETA and propagation tests."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from django.utils import timezone

from dispatch.models import Driver, DriverPosition
from routing.models import Route, RouteStop
from shipments.models import Hub, Leg, Shipment
from shipments.services import leg_transition


def local_at(day_offset: int, hh: int, mm: int = 0) -> datetime:
    day = timezone.localdate() + timedelta(days=day_offset)
    return timezone.make_aware(datetime.combine(day, time(hh, mm)))


def legs_of(shipment: Shipment) -> dict[str, Leg]:
    return {leg.mile: leg for leg in shipment.legs.order_by("sequence")}


def chain_plan(shipment: Shipment, *, day: int, first, middle, last, promised) -> None:
    """Overwrite the planned times of a first → middle → last chain ((dep, arr) in local hours)."""
    legs = legs_of(shipment)
    for mile, (dep, arr) in (("first", first), ("middle", middle), ("last", last)):
        Leg.objects.filter(pk=legs[mile].pk).update(
            planned_departure=local_at(day, *dep),
            planned_arrival=local_at(day, *arr),
            eta=local_at(day, *arr),
        )
    Shipment.objects.filter(pk=shipment.pk).update(
        promised_by=local_at(day, *promised), eta=local_at(day, *last[1])
    )


def route_make(
    *,
    hub: Hub,
    mile: str,
    driver: Driver | None,
    planned_start: datetime,
    stops: list[tuple[str, object, list[Leg]]],
    service_seconds: int = 120,
    status: str = Route.Status.PUBLISHED,
) -> Route:
    """A route whose stops are (kind, location, legs); legs become assigned."""
    route = Route.objects.create(
        service_date=timezone.localdate(planned_start),
        hub=hub,
        mile=mile,
        driver=driver,
        status=status,
        planned_start=planned_start,
    )
    for sequence, (kind, location, legs) in enumerate(stops, start=1):
        stop = RouteStop.objects.create(
            route=route,
            sequence=sequence,
            kind=kind,
            location=location,
            hub=hub if kind == RouteStop.Kind.HUB else None,
            service_seconds=service_seconds,
        )
        stop.legs.set(legs)
        for leg in legs:
            if leg.status == "planned":
                leg_transition(leg_id=leg.pk, to="assigned", source="system")
    return route


def position_set(driver: Driver, *, at: datetime, lat_lng: tuple[float, float], route: Route | None = None):
    DriverPosition.objects.update_or_create(
        driver=driver,
        defaults={
            "route": route,
            "latitude": lat_lng[0],
            "longitude": lat_lng[1],
            "accuracy_meters": 10,
            "recorded_at": at,
            "updated_at": at,
        },
    )


def fixed_travel(seconds: float):
    """Known travel times: ``seconds`` between any two different points, 0 in place."""

    def travel(a, b):
        return 0.0 if (round(a[0], 6), round(a[1], 6)) == (round(b[0], 6), round(b[1], 6)) else seconds

    return travel
