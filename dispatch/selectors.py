"""Read-side query shapes for dispatch: who may see which route, and in what shape.

Every object lookup of the driver API starts from a selector scoped to the
requesting driver, so a foreign id is simply not found (404, never 403).
"""

from __future__ import annotations

import hashlib
from datetime import date

from django.db.models import Case, Prefetch, QuerySet, Value, When
from django.utils import timezone

from routing.models import Route, RouteStop
from shipments.models import Leg, Parcel, Shipment
from shipments.roles import user_is_dispatcher, user_is_driver

from .models import Driver, ProofOfDelivery

# What a driver's phone may see: routes handed to them (never drafts).
DRIVER_VISIBLE_ROUTE_STATUSES = (
    Route.Status.PUBLISHED,
    Route.Status.IN_PROGRESS,
    Route.Status.COMPLETED,
)
ACTIVE_ROUTE_STATUSES = (Route.Status.PUBLISHED, Route.Status.IN_PROGRESS)


def driver_of(user) -> Driver | None:
    """The driver profile of a user in the driver role, else None."""
    if not user_is_driver(user):
        return None
    return user.driver


def stops_with_work() -> QuerySet[RouteStop]:
    """Stops with everything the route payload shows, in a fixed number of queries."""
    legs = Leg.objects.select_related(
        "shipment", "from_hub", "to_hub"
    ).prefetch_related(
        Prefetch("shipment__parcels", queryset=Parcel.objects.order_by("id"))
    )
    return (
        RouteStop.objects.select_related("location", "hub")
        .prefetch_related(
            Prefetch("legs", queryset=legs.order_by("shipment_id", "sequence"))
        )
        .order_by("sequence")
    )


def route_list_for_dispatch() -> QuerySet[Route]:
    return Route.objects.select_related(
        "hub", "vehicle", "driver__user", "trip__origin_hub", "trip__destination_hub"
    ).order_by("service_date", "id")


def route_detail_queryset() -> QuerySet[Route]:
    return route_list_for_dispatch().prefetch_related(
        Prefetch("stops", queryset=stops_with_work())
    )


def route_list_visible_to(user) -> QuerySet[Route]:
    """Dispatchers see every route; a driver only their own published ones."""
    if user_is_dispatcher(user):
        return route_list_for_dispatch()
    driver = driver_of(user)
    if driver is None:
        return Route.objects.none()
    return route_list_for_dispatch().filter(
        driver=driver, status__in=DRIVER_VISIBLE_ROUTE_STATUSES
    )


def stop_list_visible_to(user) -> QuerySet[RouteStop]:
    if user_is_dispatcher(user):
        return RouteStop.objects.select_related("route")
    driver = driver_of(user)
    if driver is None:
        return RouteStop.objects.none()
    return RouteStop.objects.select_related("route").filter(
        route__driver=driver, route__status__in=DRIVER_VISIBLE_ROUTE_STATUSES
    )


def pod_list_visible_to(user) -> QuerySet[ProofOfDelivery]:
    """A POD follows its stop: the driver of that route, or any dispatcher."""
    if user_is_dispatcher(user):
        return ProofOfDelivery.objects.select_related("stop__route")
    driver = driver_of(user)
    if driver is None:
        return ProofOfDelivery.objects.none()
    return ProofOfDelivery.objects.select_related("stop__route").filter(
        stop__route__driver=driver,
        stop__route__status__in=DRIVER_VISIBLE_ROUTE_STATUSES,
    )


def driver_route_current(
    *, driver_id: int, service_date: date | None = None
) -> Route | None:
    """Today's route for the driver: the one under way, else the first published one."""
    day = service_date or timezone.localdate()
    under_way_first = Case(
        When(status=Route.Status.IN_PROGRESS, then=Value(0)), default=Value(1)
    )
    return (
        Route.objects.filter(
            driver_id=driver_id, service_date=day, status__in=ACTIVE_ROUTE_STATUSES
        )
        .order_by(under_way_first, "planned_start", "id")
        .first()
    )


def route_legs(route: Route) -> QuerySet[Leg]:
    """Every leg on any stop of the route (a trip has its legs on both hub stops)."""
    return Leg.objects.filter(route_stops__route=route).distinct()


def route_etag(route: Route) -> str:
    """A validator that changes whenever anything in the route payload can: the
    route row, its stops' mutable fields and its legs' states (two light queries)."""
    stops = list(
        RouteStop.objects.filter(route=route)
        .order_by("sequence")
        .values_list(
            "id",
            "sequence",
            "status",
            "eta",
            "planned_arrival",
            "window_start",
            "window_end",
            "actual_arrival",
            "actual_departure",
            "requires",
            "notes",
        )
    )
    legs = list(
        Leg.objects.filter(route_stops__route=route)
        .order_by("id")
        .values_list("id", "status", "shipment_id")
    )
    # Customer instructions (door code, safe place) are part of the payload too:
    # a phone polling with If-None-Match must see new ones.
    from .serializers import customer_instructions

    instructions = sorted(customer_instructions({leg[2] for leg in legs}).items())
    state = (
        route.pk,
        route.version,
        route.status,
        route.updated_at,
        route.driver_id,
        route.vehicle_id,
        stops,
        legs,
        instructions,
    )
    return '"' + hashlib.sha256(repr(state).encode()).hexdigest()[:32] + '"'


def driver_shipment_list(*, driver: Driver) -> QuerySet[Shipment]:
    """Shipments with a leg on one of the driver's visible routes."""
    return (
        Shipment.objects.filter(
            legs__route_stops__route__driver=driver,
            legs__route_stops__route__status__in=DRIVER_VISIBLE_ROUTE_STATUSES,
        )
        .distinct()
        .prefetch_related(Prefetch("parcels", queryset=Parcel.objects.order_by("id")))
    )
