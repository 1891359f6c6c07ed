"""Read side of the dashboard: the map snapshot and the shipments table."""

from __future__ import annotations

from datetime import date

from django.db.models import Prefetch, Q, QuerySet

from dispatch.models import Driver
from routing.models import Route, RouteStop
from shipments.models import Hub, Leg, Shipment, ShipmentEvent

from .exceptions import UNRESOLVED, exception_summary
from .models import DeliveryException, LegForecast
from .positions import driver_positions
from .relay import stream_last_seq

MAP_ROUTE_STATUSES = (
    Route.Status.DRAFT,
    Route.Status.PUBLISHED,
    Route.Status.IN_PROGRESS,
    Route.Status.COMPLETED,
)


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def route_map_list(*, service_date: date | None = None, job_id: int | None = None) -> list[dict]:
    """Routes with their stops in order, for drawing: one query per table."""
    routes = Route.objects.select_related("driver__user", "vehicle", "hub", "forecast").order_by("id")
    if job_id is not None:
        routes = routes.filter(job_id=job_id)
    else:
        routes = routes.filter(service_date=service_date, status__in=MAP_ROUTE_STATUSES)
    stops = RouteStop.objects.select_related("location").prefetch_related(
        Prefetch("legs", queryset=Leg.objects.only("id", "shipment_id"))
    ).order_by("sequence")
    result = []
    for route in routes.prefetch_related(Prefetch("stops", queryset=stops)):
        forecast = getattr(route, "forecast", None) if hasattr(route, "forecast") else None
        result.append(
            {
                "id": route.pk,
                "mile": route.mile,
                "status": route.status,
                "hub_id": route.hub_id,
                "job_id": route.job_id,
                "driver": (
                    {"id": route.driver_id, "name": str(route.driver)} if route.driver_id else None
                ),
                "vehicle": route.vehicle.code if route.vehicle_id else None,
                "vehicle_id": route.vehicle_id,
                "distance_meters": route.distance_meters,
                "duration_seconds": route.duration_seconds,
                "delay_seconds": forecast.delay_seconds if forecast else 0,
                "hub": [route.hub.location.latitude, route.hub.location.longitude]
                if route.hub_id
                else None,
                "stops": [
                    {
                        "id": stop.pk,
                        "sequence": stop.sequence,
                        "kind": stop.kind,
                        "status": stop.status,
                        "lat": stop.location.latitude,
                        "lng": stop.location.longitude,
                        "planned_arrival": _iso(stop.planned_arrival),
                        "eta": _iso(stop.eta),
                        "actual_arrival": _iso(stop.actual_arrival),
                        "shipment_ids": sorted({leg.shipment_id for leg in stop.legs.all()}),
                    }
                    for stop in route.stops.all()
                ],
            }
        )
    return result


def dashboard_snapshot(*, service_date: date) -> dict:
    """Everything the dashboard map and panels start from; then live messages."""
    from .kpis import kpis_for_day

    hubs = Hub.objects.filter(is_active=True).select_related("location")
    routes = route_map_list(service_date=service_date)
    driver_ids = [r["driver"]["id"] for r in routes if r["driver"]]
    drivers = {
        d.pk: d for d in Driver.objects.filter(pk__in=driver_ids).select_related("user")
    }
    positions = driver_positions(list(drivers))
    return {
        # Read first: messages after this number are applied on top of the snapshot.
        "last_seq": stream_last_seq(),
        "date": service_date.isoformat(),
        "hubs": [
            {
                "id": hub.pk,
                "code": hub.code,
                "name": hub.name,
                "lat": hub.location.latitude,
                "lng": hub.location.longitude,
                "cutoff_times": hub.cutoff_times,
            }
            for hub in hubs
        ],
        "routes": routes,
        "drivers": [
            {
                "id": driver_id,
                "name": str(drivers[driver_id]),
                "lat": p.latitude,
                "lng": p.longitude,
                "recorded_at": p.recorded_at.isoformat(),
                "route_id": p.route_id,
            }
            for driver_id, p in positions.items()
        ],
        "exceptions": exception_list_open(),
        "kpis": kpis_for_day(day=service_date),
    }


def exception_list_open(limit: int = 100) -> list[dict]:
    exceptions = (
        DeliveryException.objects.filter(status__in=UNRESOLVED)
        .prefetch_related("shipments")
        .order_by("-raised_at")[:limit]
    )
    return [exception_summary(e) for e in exceptions]


def exception_list(*, status: str | None = None, limit: int = 200) -> QuerySet[DeliveryException]:
    queryset = DeliveryException.objects.prefetch_related("shipments").order_by("-raised_at")
    if status == "unresolved":
        queryset = queryset.filter(status__in=UNRESOLVED)
    elif status:
        queryset = queryset.filter(status=status)
    return queryset[:limit]


def shipment_table(*, filters: dict) -> QuerySet[Shipment]:
    """The dashboard's one table across all miles, with its filters and search."""
    queryset = Shipment.objects.select_related("origin_hub", "destination_hub").order_by(
        "-created_at", "-id"
    )
    if filters.get("mile"):
        queryset = queryset.filter(current_mile=filters["mile"])
    if filters.get("status"):
        queryset = queryset.filter(status=filters["status"])
    if filters.get("hub"):
        queryset = queryset.filter(
            Q(origin_hub__code=filters["hub"]) | Q(destination_hub__code=filters["hub"])
        )
    if filters.get("service_level"):
        queryset = queryset.filter(service_level=filters["service_level"])
    if filters.get("at_risk") in ("1", "true", True):
        queryset = queryset.filter(is_at_risk=True)
    if filters.get("driver"):
        shipment_ids = Leg.objects.filter(
            route_stops__route__driver_id=filters["driver"]
        ).values("shipment_id")
        queryset = queryset.filter(pk__in=shipment_ids)
    if filters.get("q"):
        term = filters["q"].strip()
        barcode_ids = Shipment.objects.filter(parcels__barcode=term).values("pk")
        queryset = queryset.filter(Q(reference__icontains=term) | Q(pk__in=barcode_ids))
    return queryset


def shipment_timeline(shipment_id: int) -> dict | None:
    """A shipment's whole leg chain (planned, ETA, actual) and every event."""
    shipment = (
        Shipment.objects.select_related(
            "shipper", "consignee", "origin", "destination", "origin_hub", "destination_hub"
        )
        .prefetch_related("parcels")
        .filter(pk=shipment_id)
        .first()
    )
    if shipment is None:
        return None
    legs = list(
        shipment.legs.select_related("from_hub", "to_hub", "from_location", "to_location").order_by(
            "sequence"
        )
    )
    forecasts = {f.leg_id: f for f in LegForecast.objects.filter(leg__in=legs)}
    stops = {
        leg_id: stop
        for stop in RouteStop.objects.filter(legs__in=legs).select_related("route__driver__user")
        for leg_id in stop.legs.filter(pk__in=[leg.pk for leg in legs]).values_list("pk", flat=True)
    }
    events = list(
        ShipmentEvent.objects.filter(shipment=shipment).select_related("actor", "leg").order_by("id")
    )
    return {
        "shipment": shipment,
        "legs": [
            {"leg": leg, "forecast": forecasts.get(leg.pk), "stop": stops.get(leg.pk)} for leg in legs
        ],
        "events": events,
        "exceptions": list(shipment.delivery_exceptions.order_by("-raised_at")),
    }
