"""Middle mile: line-haul trips between hubs, on the hubs' timetables.

    middle-mile legs waiting (planned, on no live route)
      ──▶ each leg's ready time (its previous leg's arrival + the hub's handling)
      ──▶ the first departure (cut-off) of its origin hub at or after that time,
          on the day being planned
      ──▶ grouped by (origin, destination, departure); each group fills trips up
          to the trip's capacity, the overflow waits for the next departure
      ──▶ a trip = a route (mile ``middle``) with two hub stops, both carrying
          every consolidated leg, so one scan at departure moves them all in
          transit and one scan at arrival completes them (see driver_events).

A trip is assigned and published like any route (``route_assign``,
``route_publish``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from routing.models import Route, RouteStop
from shipments.models import Hub, Leg
from shipments.planning import travel_time
from shipments.states import LegStatus, Mile, TransportMode

from .models import LineHaulTrip, Vehicle
from .route_log import route_event_record
from .services import MIDDLE_MILE_VEHICLE_TYPES, Load, _shipment_load

LIVE_ROUTE_STATUSES = (
    Route.Status.DRAFT,
    Route.Status.PUBLISHED,
    Route.Status.IN_PROGRESS,
)
# Loading a trip at the dock before it leaves.
LOADING_MINUTES = 20


@dataclass
class TripPlanResult:
    trips: list[int] = field(default_factory=list)  # created or topped up
    consolidated: dict[int, list[int]] = field(
        default_factory=dict
    )  # trip id -> leg ids
    waiting: list[dict] = field(default_factory=list)  # {"leg_id", "reason"}


def leg_ready_at(leg: Leg) -> datetime | None:
    """When the leg's freight can leave its origin hub."""
    previous = leg.depends_on
    handling = timedelta(minutes=leg.from_hub.handling_minutes if leg.from_hub else 0)
    if previous is None:
        return leg.planned_departure
    if previous.status == LegStatus.COMPLETED and previous.actual_arrival:
        return previous.actual_arrival + handling
    if previous.planned_arrival:
        return previous.planned_arrival + handling
    return leg.planned_departure


def _departures(hub: Hub, day: date) -> list[datetime]:
    out = []
    for value in hub.cutoff_times or []:
        hours, minutes = (int(part) for part in value.split(":")[:2])
        out.append(timezone.make_aware(datetime.combine(day, time(hours, minutes))))
    return sorted(out)


def trip_capacity(hub: Hub) -> Load:
    """What a trip from ``hub`` can carry: its biggest line-haul vehicle."""
    vehicles = Vehicle.objects.filter(
        home_hub=hub, is_active=True, type__in=MIDDLE_MILE_VEHICLE_TYPES
    ).order_by("-capacity_kg")
    best = vehicles.first()
    if best is None:
        return Load()
    return Load(best.capacity_kg, best.capacity_m3, best.capacity_parcels)


def _fits(load: Load, cap: Load) -> bool:
    return (
        load.weight_kg <= cap.weight_kg
        and load.volume_m3 <= cap.volume_m3
        and load.parcels <= cap.parcels
    )


def legs_waiting_for_trips() -> list[Leg]:
    """Middle-mile legs not yet on any live route."""
    on_live_route = Q(
        route_stops__route__status__in=LIVE_ROUTE_STATUSES,
    ) & ~Q(route_stops__status__in=(RouteStop.Status.SKIPPED, RouteStop.Status.FAILED))
    busy = Leg.objects.filter(on_live_route).values("pk")
    return list(
        Leg.objects.filter(
            mile=Mile.MIDDLE,
            status=LegStatus.PLANNED,
            from_hub__isnull=False,
            to_hub__isnull=False,
            shipment__status__in=("planned", "picked_up", "at_hub"),
        )
        .exclude(pk__in=busy)
        .select_related(
            "shipment", "from_hub", "to_hub", "depends_on", "from_hub__location"
        )
        .order_by("shipment__promised_by", "id")
    )


def _trip_load(route: Route) -> Load:
    load = Load()
    first = route.stops.order_by("sequence").first()
    if first is None:
        return load
    for leg in first.legs.select_related("shipment"):
        load = load + _shipment_load(leg.shipment)
    return load


def _trip_get_or_create(
    *, origin: Hub, destination: Hub, departs_at: datetime, day: date, actor
):
    trip = (
        LineHaulTrip.objects.select_related("route")
        .filter(origin_hub=origin, destination_hub=destination, departs_at=departs_at)
        .first()
    )
    if trip is not None:
        return trip, False
    arrives_at = departs_at + travel_time(
        origin.location, destination.location, TransportMode.TRUCK
    )
    route = Route.objects.create(
        service_date=day,
        hub=origin,
        mile=Mile.MIDDLE,
        planned_start=departs_at - timedelta(minutes=LOADING_MINUTES),
        planned_end=arrives_at + timedelta(minutes=destination.handling_minutes),
        distance_meters=0,
    )
    RouteStop.objects.create(
        route=route,
        sequence=1,
        kind=RouteStop.Kind.HUB,
        location=origin.location,
        hub=origin,
        service_seconds=LOADING_MINUTES * 60,
        planned_arrival=departs_at - timedelta(minutes=LOADING_MINUTES),
        planned_departure=departs_at,
        eta=departs_at - timedelta(minutes=LOADING_MINUTES),
        window_end=departs_at,
        notes=f"Departure {timezone.localtime(departs_at):%H:%M} to {destination.code}.",
    )
    RouteStop.objects.create(
        route=route,
        sequence=2,
        kind=RouteStop.Kind.HUB,
        location=destination.location,
        hub=destination,
        service_seconds=destination.handling_minutes * 60,
        planned_arrival=arrives_at,
        planned_departure=arrives_at + timedelta(minutes=destination.handling_minutes),
        eta=arrives_at,
        notes=f"Unload at {destination.code}.",
    )
    trip = LineHaulTrip.objects.create(
        route=route,
        origin_hub=origin,
        destination_hub=destination,
        departs_at=departs_at,
        arrives_at=arrives_at,
    )
    route_event_record(
        route=route,
        type="trip.created",
        source="system",
        actor=actor,
        payload={
            "origin": origin.code,
            "destination": destination.code,
            "departs_at": departs_at.isoformat(),
        },
    )
    return trip, True


@transaction.atomic
def trips_plan_day(*, service_date: date, actor=None) -> TripPlanResult:
    """Consolidate the waiting middle-mile legs onto the day's trips."""
    result = TripPlanResult()
    groups: dict[tuple[int, int, datetime], list[Leg]] = defaultdict(list)
    hubs: dict[int, Hub] = {}
    for leg in legs_waiting_for_trips():
        hubs[leg.from_hub_id], hubs[leg.to_hub_id] = leg.from_hub, leg.to_hub
        ready = leg_ready_at(leg)
        departures = [
            d
            for d in _departures(leg.from_hub, service_date)
            if ready is None or d >= ready
        ]
        if not departures:
            if ready is not None and timezone.localdate(ready) > service_date:
                continue  # not this day's freight
            result.waiting.append(
                {"leg_id": leg.pk, "reason": "no_departure_left_today"}
            )
            continue
        groups[(leg.from_hub_id, leg.to_hub_id, departures[0])].append(leg)

    for origin_id, destination_id, departs_at in sorted(
        groups, key=lambda k: (k[2], k[0], k[1])
    ):
        origin, destination = hubs[origin_id], hubs[destination_id]
        capacity = trip_capacity(origin)
        pending = groups[(origin_id, destination_id, departs_at)]
        later = [d for d in _departures(origin, service_date) if d > departs_at]
        for slot in [departs_at, *later]:
            if not pending:
                break
            trip, _ = _trip_get_or_create(
                origin=origin,
                destination=destination,
                departs_at=slot,
                day=service_date,
                actor=actor,
            )
            route = Route.objects.select_for_update().get(pk=trip.route_id)
            if route.status != Route.Status.DRAFT:
                continue  # already published: freight waits for the next one
            if route.vehicle_id is not None:
                vehicle = route.vehicle
                capacity = Load(
                    vehicle.capacity_kg, vehicle.capacity_m3, vehicle.capacity_parcels
                )
            load = _trip_load(route)
            taken, overflow = [], []
            for leg in pending:
                amount = _shipment_load(leg.shipment)
                if capacity.parcels and not _fits(load + amount, capacity):
                    overflow.append(leg)
                    continue
                load = load + amount
                taken.append(leg)
            if taken:
                for stop in route.stops.all():
                    stop.legs.add(*taken)
                route.version += 1
                route.save(update_fields=["version", "updated_at"])
                route_event_record(
                    route=route,
                    type="trip.consolidated",
                    source="system",
                    actor=actor,
                    payload={"leg_ids": [leg.pk for leg in taken]},
                )
                if route.pk not in result.trips:
                    result.trips.append(route.pk)
                result.consolidated.setdefault(route.pk, []).extend(
                    leg.pk for leg in taken
                )
            pending = overflow
        result.waiting += [
            {"leg_id": leg.pk, "reason": "no_capacity_left_today"} for leg in pending
        ]
    return result
