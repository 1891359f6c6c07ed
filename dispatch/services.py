"""Fleet and dispatch services: drivers, assigning and publishing routes,
moving stops, the driver's duty status.

Every write locks its rows in one order (driver, vehicle, route, then the
shipment and leg inside ``leg_transition``) and records what it did in the
route log and, for legs, the shipment event log, in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time
from decimal import Decimal

from django.contrib.auth.models import Group, User
from django.db import transaction
from django.db.models import Max, Prefetch
from django.utils import timezone
from rest_framework.authtoken.models import Token

from routing.models import Route, RouteStop
from shipments.errors import Conflict, DomainError
from shipments.models import Hub, Leg, Shipment
from shipments.outbox import DASHBOARD_GROUP, driver_group, outbox_enqueue
from shipments.roles import DRIVER_GROUP
from shipments.services import leg_transition
from shipments.states import InvalidTransition, LegStatus, Mile

from .models import (
    DispatchConflict,
    Driver,
    DutyStatusChange,
    StopReassignment,
    Vehicle,
)
from .route_log import route_event_record


@transaction.atomic
def driver_create(
    *,
    username: str,
    password: str | None = None,  # none: the account can only use its API token
    home_hub: Hub,
    shift_start: time,
    shift_end: time,
    first_name: str = "",
    last_name: str = "",
    email: str = "",
    phone: str = "",
    default_vehicle: Vehicle | None = None,
) -> Driver:
    """A driver with a user account in the driver group and an API token."""
    if User.objects.filter(username=username).exists():
        raise Conflict("This username is taken.", field="username")
    if shift_end <= shift_start:
        raise DomainError("The shift must end after it starts.", field="shift_end")
    user = User(
        username=username, first_name=first_name, last_name=last_name, email=email
    )
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.save()
    user.groups.add(Group.objects.get_or_create(name=DRIVER_GROUP)[0])
    Token.objects.create(user=user)
    return Driver.objects.create(
        user=user,
        phone=phone,
        home_hub=home_hub,
        default_vehicle=default_vehicle,
        shift_start=shift_start,
        shift_end=shift_end,
    )


# ---------------------------------------------------------------------------
# Assigning and publishing routes
# ---------------------------------------------------------------------------

OPEN_ROUTE_STATUSES = (
    Route.Status.DRAFT,
    Route.Status.PUBLISHED,
    Route.Status.IN_PROGRESS,
)
# Line-haul needs a vehicle that can take pallets on a motorway.
MIDDLE_MILE_VEHICLE_TYPES = (Vehicle.Type.VAN, Vehicle.Type.TRUCK)


@dataclass(frozen=True)
class Load:
    weight_kg: Decimal = Decimal(0)
    volume_m3: Decimal = Decimal(0)
    parcels: int = 0

    def __add__(self, other: Load) -> Load:
        return Load(
            self.weight_kg + other.weight_kg,
            self.volume_m3 + other.volume_m3,
            self.parcels + other.parcels,
        )

    def __sub__(self, other: Load) -> Load:
        return Load(
            self.weight_kg - other.weight_kg,
            self.volume_m3 - other.volume_m3,
            self.parcels - other.parcels,
        )

    def peak(self, other: Load) -> Load:
        return Load(
            max(self.weight_kg, other.weight_kg),
            max(self.volume_m3, other.volume_m3),
            max(self.parcels, other.parcels),
        )


def _shipment_load(shipment: Shipment) -> Load:
    return Load(
        shipment.total_weight_kg, shipment.total_volume_m3, shipment.parcel_count
    )


def route_peak_load(route: Route) -> Load:
    """The most the vehicle carries at any point: deliveries leave loaded, pickups
    add, deliveries remove, hub stops load what leaves and unload what arrives."""
    stops = list(
        route.stops.exclude(status=RouteStop.Status.SKIPPED)
        .prefetch_related(
            Prefetch("legs", queryset=Leg.objects.select_related("shipment"))
        )
        .order_by("sequence")
    )
    load = Load()
    for stop in stops:
        if stop.kind == RouteStop.Kind.DELIVERY:
            for leg in stop.legs.all():
                if leg.status != LegStatus.CANCELLED:
                    load = load + _shipment_load(leg.shipment)
    peak = load
    for stop in stops:
        for leg in stop.legs.all():
            if leg.status == LegStatus.CANCELLED:
                continue
            amount = _shipment_load(leg.shipment)
            if stop.kind == RouteStop.Kind.PICKUP:
                load = load + amount
            elif stop.kind == RouteStop.Kind.DELIVERY:
                load = load - amount
            elif leg.from_hub_id == stop.hub_id:
                load = load + amount
            elif leg.to_hub_id == stop.hub_id:
                load = load - amount
        peak = peak.peak(load)
    return peak


def route_required_skills(route: Route) -> set[str]:
    skills: set[str] = set()
    for shipment in Shipment.objects.filter(legs__route_stops__route=route).distinct():
        # ``required_skills`` is asked of shipments (see the dispatch report); until
        # then no shipment requires any.
        skills |= set(getattr(shipment, "required_skills", None) or [])
    return skills


def route_span(route: Route) -> tuple[datetime | None, datetime | None]:
    """When the route starts and ends: its plan, else its stops' planned times."""
    start, end = route.planned_start, route.planned_end
    if start is None or end is None:
        times = [
            t
            for pair in route.stops.values_list("planned_arrival", "planned_departure")
            for t in pair
            if t is not None
        ]
        if times:
            start = start or min(times)
            end = end or max(times)
    return start, end


def _overlaps(a: tuple, b: tuple) -> bool:
    if None in a or None in b:
        return True  # an untimed route books the whole day
    return a[0] < b[1] and b[0] < a[1]


def _shift_window(driver: Driver, day) -> tuple[datetime, datetime]:
    return (
        timezone.make_aware(datetime.combine(day, driver.shift_start)),
        timezone.make_aware(datetime.combine(day, driver.shift_end)),
    )


def route_assignment_problems(
    *, route: Route, driver: Driver, vehicle: Vehicle
) -> dict[str, str]:
    """Why this driver and vehicle cannot take the route, per field (empty: they can)."""
    problems: dict[str, str] = {}
    if not vehicle.is_active:
        problems["vehicle_id"] = "The vehicle is not active."
    if not driver.is_active:
        problems["driver_id"] = "The driver is not active."
    peak = route_peak_load(route)
    over = []
    if peak.weight_kg > vehicle.capacity_kg:
        over.append(f"{peak.weight_kg} kg > {vehicle.capacity_kg} kg")
    if peak.volume_m3 > vehicle.capacity_m3:
        over.append(f"{peak.volume_m3} m³ > {vehicle.capacity_m3} m³")
    if peak.parcels > vehicle.capacity_parcels:
        over.append(f"{peak.parcels} parcels > {vehicle.capacity_parcels}")
    if over:
        problems["vehicle_id"] = (
            "The route's load exceeds the vehicle: " + "; ".join(over) + "."
        )
    missing = route_required_skills(route) - set(vehicle.skills or [])
    if missing:
        problems.setdefault(
            "vehicle_id", f"The vehicle lacks: {', '.join(sorted(missing))}."
        )
    if route.mile == Mile.MIDDLE and vehicle.type not in MIDDLE_MILE_VEHICLE_TYPES:
        problems.setdefault("vehicle_id", "Line-haul needs a van or a truck.")
    span = route_span(route)
    shift = _shift_window(driver, route.service_date)
    if (
        span[0] is not None
        and span[1] is not None
        and not (shift[0] <= span[0] and span[1] <= shift[1])
    ):
        problems["driver_id"] = (
            f"The driver's shift ({driver.shift_start:%H:%M}–{driver.shift_end:%H:%M}) "
            f"does not cover the route ({timezone.localtime(span[0]):%H:%M}–"
            f"{timezone.localtime(span[1]):%H:%M})."
        )
    # Booked = on another route of the day that has a driver: a draft nobody
    # drives yet is a proposal and holds nothing.
    others = (
        Route.objects.filter(
            service_date=route.service_date, status__in=OPEN_ROUTE_STATUSES
        )
        .exclude(pk=route.pk)
        .exclude(driver__isnull=True)
    )
    for other in others.filter(driver=driver):
        if _overlaps(span, route_span(other)):
            problems.setdefault(
                "driver_id", f"The driver is already booked on route {other.pk}."
            )
            break
    for other in others.filter(vehicle=vehicle):
        if _overlaps(span, route_span(other)):
            problems.setdefault(
                "vehicle_id", f"The vehicle is already booked on route {other.pk}."
            )
            break
    return problems


def _route_lock(route_id: int) -> Route:
    return Route.objects.select_for_update().get(pk=route_id)


def _route_changed(route: Route, *fields: str) -> None:
    route.version += 1
    route.save(update_fields=[*fields, "version", "updated_at"])


@transaction.atomic
def route_assign(
    *, route_id: int, driver_id: int, vehicle_id: int, actor=None
) -> Route:
    """Give a draft or published route to a driver and a vehicle, after checking
    capacity, skills, the driver's shift and that neither is booked already."""
    # Driver, vehicle, then route: two assignments of one driver queue here, so
    # the second sees the first's booking.
    driver = Driver.objects.select_for_update().get(pk=driver_id)
    vehicle = Vehicle.objects.select_for_update().get(pk=vehicle_id)
    route = _route_lock(route_id)
    if route.status not in (Route.Status.DRAFT, Route.Status.PUBLISHED):
        raise Conflict(f"The route is {route.status}; it can no longer be reassigned.")
    problems = route_assignment_problems(route=route, driver=driver, vehicle=vehicle)
    if problems:
        field, message = next(iter(problems.items()))
        raise Conflict(message, field=field, problems=problems)
    previous_driver_id = route.driver_id
    route.driver, route.vehicle = driver, vehicle
    _route_changed(route, "driver", "vehicle")
    route_event_record(
        route=route,
        type="route.assigned",
        source="dashboard",
        actor=actor,
        payload={
            "driver_id": driver.pk,
            "vehicle_id": vehicle.pk,
            "previous_driver_id": previous_driver_id,
        },
        also_driver_ids=(previous_driver_id,) if previous_driver_id else (),
    )
    return route


def _legs_of_route(route: Route) -> list[Leg]:
    """The legs this route's live stops carry. (Excluding skipped stops across
    the relation would drop a leg skipped on any route, e.g. an earlier one.)"""
    live_stops = RouteStop.objects.filter(route=route).exclude(
        status=RouteStop.Status.SKIPPED
    )
    return list(Leg.objects.filter(route_stops__in=live_stops).distinct().order_by("id"))


@transaction.atomic
def route_unassign(*, route_id: int, actor=None) -> Route:
    """Take a route back from its driver; a published route returns to draft and
    its legs to the planning pool."""
    route = _route_lock(route_id)
    if route.status not in (Route.Status.DRAFT, Route.Status.PUBLISHED):
        raise Conflict(f"The route is {route.status}; it cannot be unassigned.")
    previous_driver_id = route.driver_id
    if route.status == Route.Status.PUBLISHED:
        for leg in _legs_of_route(route):
            if leg.status == LegStatus.ASSIGNED:
                leg_transition(
                    leg_id=leg.pk,
                    to=LegStatus.PLANNED,
                    source="dashboard",
                    actor=actor,
                    reason="route unassigned",
                    payload={"route_id": route.pk},
                )
        route.status = Route.Status.DRAFT
        route.published_at = None
    route.driver, route.vehicle = None, None
    _route_changed(route, "driver", "vehicle", "status", "published_at")
    route_event_record(
        route=route,
        type="route.unassigned",
        source="dashboard",
        actor=actor,
        payload={"previous_driver_id": previous_driver_id},
        also_driver_ids=(previous_driver_id,) if previous_driver_id else (),
    )
    return route


@transaction.atomic
def route_publish(*, route_id: int, actor=None) -> Route:
    """Hand an assigned draft to its driver: its legs become ``assigned``."""
    route = _route_lock(route_id)
    if route.status != Route.Status.DRAFT:
        raise Conflict(f"The route is {route.status}; only a draft can be published.")
    if route.driver_id is None or route.vehicle_id is None:
        raise Conflict(
            "Assign a driver and a vehicle before publishing.", field="driver_id"
        )
    legs = _legs_of_route(route)
    if not legs:
        raise Conflict("The route has no stops with work.")
    taken = (
        Leg.objects.filter(
            pk__in=[leg.pk for leg in legs],
            route_stops__route__status__in=(
                Route.Status.PUBLISHED,
                Route.Status.IN_PROGRESS,
            ),
        )
        .exclude(route_stops__route=route)
        .exclude(
            route_stops__status__in=(RouteStop.Status.SKIPPED, RouteStop.Status.FAILED)
        )
        .values_list("pk", flat=True)
        .distinct()
    )
    not_plannable = [leg.pk for leg in legs if leg.status != LegStatus.PLANNED]
    if taken or not_plannable:
        raise Conflict(
            "Some legs of this route are no longer waiting to be planned.",
            leg_ids=sorted(set(taken) | set(not_plannable)),
        )
    for leg in legs:
        leg_transition(
            leg_id=leg.pk,
            to=LegStatus.ASSIGNED,
            source="dashboard",
            actor=actor,
            payload={"route_id": route.pk, "driver_id": route.driver_id},
            extra_groups=[driver_group(route.driver_id)],
        )
    route.status = Route.Status.PUBLISHED
    route.published_at = timezone.now()
    _route_changed(route, "status", "published_at")
    route_event_record(
        route=route,
        type="route.published",
        source="dashboard",
        actor=actor,
        payload={"leg_ids": [leg.pk for leg in legs]},
    )
    return route


@dataclass
class DayPublishResult:
    published: list[int] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)  # {"route_id", "reason"}
    unassigned: list[int] = field(default_factory=list)


def routes_publish_day(
    *, service_date, hub_id: int | None = None, actor=None
) -> DayPublishResult:
    """Publish every assigned draft of the day; each route on its own (one bad
    route does not hold back the others)."""
    drafts = Route.objects.filter(service_date=service_date, status=Route.Status.DRAFT)
    if hub_id is not None:
        drafts = drafts.filter(hub_id=hub_id)
    result = DayPublishResult()
    for route in drafts.order_by("id"):
        if route.driver_id is None or route.vehicle_id is None:
            result.unassigned.append(route.pk)
            continue
        try:
            route_publish(route_id=route.pk, actor=actor)
        except (Conflict, InvalidTransition) as exc:
            result.failed.append({"route_id": route.pk, "reason": str(exc)})
        else:
            result.published.append(route.pk)
    return result


@transaction.atomic
def stop_reassign(
    *, stop_id: int, route_id: int, position: int | None = None, actor=None
) -> RouteStop:
    """Move a stop not yet served to another route of the same day.

    The old stop stays on its route as ``skipped`` (history, and the fact a
    driver may still report it delivered); a new stop carries the legs.
    """
    source_route_id = RouteStop.objects.values_list("route_id", flat=True).get(
        pk=stop_id
    )
    # Lock both routes in id order so two opposite moves cannot deadlock.
    locked = {
        r.pk: r
        for r in Route.objects.select_for_update()
        .filter(pk__in={source_route_id, route_id})
        .order_by("pk")
    }
    source, target = locked[source_route_id], locked.get(route_id)
    if target is None:
        raise DomainError("No such route.", field="route_id")
    stop = RouteStop.objects.select_for_update().get(pk=stop_id)
    if source.pk == target.pk:
        raise DomainError("The stop is already on this route.", field="route_id")
    if stop.status != RouteStop.Status.PENDING:
        raise Conflict(f"The stop is {stop.status}; only a pending stop can move.")
    if stop.kind == RouteStop.Kind.HUB:
        raise DomainError("Hub stops belong to their route.", field="stop")
    if target.status not in OPEN_ROUTE_STATUSES:
        raise Conflict(f"The target route is {target.status}.", field="route_id")
    if target.service_date != source.service_date:
        raise DomainError("The target route is on another day.", field="route_id")
    legs = list(stop.legs.exclude(status=LegStatus.CANCELLED).order_by("id"))
    last = target.stops.aggregate(n=Max("sequence"))["n"] or 0
    sequence = last + 1
    if position is not None and 1 <= position <= last:
        # Open a gap: shift the later stops up, highest first (unique sequence).
        for later in target.stops.filter(sequence__gte=position).order_by("-sequence"):
            later.sequence += 1
            later.save(update_fields=["sequence"])
        sequence = position
    moved = RouteStop.objects.create(
        route=target,
        sequence=sequence,
        kind=stop.kind,
        location=stop.location,
        hub=stop.hub,
        window_start=stop.window_start,
        window_end=stop.window_end,
        service_seconds=stop.service_seconds,
        requires=stop.requires,
        notes=stop.notes,
    )
    moved.legs.set(legs)
    stop.status = RouteStop.Status.SKIPPED
    stop.save(update_fields=["status"])
    StopReassignment.objects.create(from_stop=stop, to_stop=moved, actor=actor)
    live = (Route.Status.PUBLISHED, Route.Status.IN_PROGRESS)
    for leg in legs:
        if (
            source.status not in live
            and target.status in live
            and leg.status == LegStatus.PLANNED
        ):
            leg_transition(
                leg_id=leg.pk,
                to=LegStatus.ASSIGNED,
                source="dashboard",
                actor=actor,
                payload={"route_id": target.pk, "stop_id": moved.pk},
            )
        elif (
            source.status in live
            and target.status not in live
            and leg.status == LegStatus.ASSIGNED
        ):
            leg_transition(
                leg_id=leg.pk,
                to=LegStatus.PLANNED,
                source="dashboard",
                actor=actor,
                reason="moved to a draft route",
                payload={"route_id": target.pk, "stop_id": moved.pk},
            )
    for route in (source, target):
        _route_changed(route)
    details = {
        "from_stop_id": stop.pk,
        "to_stop_id": moved.pk,
        "from_route_id": source.pk,
        "to_route_id": target.pk,
    }
    route_event_record(
        route=source,
        type="route.stop_moved_out",
        source="dashboard",
        actor=actor,
        payload=details,
    )
    route_event_record(
        route=target,
        type="route.stop_moved_in",
        source="dashboard",
        actor=actor,
        payload=details,
    )
    return moved


# ---------------------------------------------------------------------------
# The driver's own duty status
# ---------------------------------------------------------------------------


@transaction.atomic
def driver_duty_set(
    *, driver_id: int, status: str, occurred_at: datetime | None = None, actor=None
) -> Driver:
    driver = Driver.objects.select_for_update().get(pk=driver_id)
    if status not in Driver.DutyStatus.values:
        raise DomainError("Unknown duty status.", field="status")
    if driver.duty_status == status:
        return driver
    DutyStatusChange.objects.create(
        driver=driver,
        from_status=driver.duty_status,
        to_status=status,
        occurred_at=occurred_at,
    )
    previous = driver.duty_status
    driver.duty_status = status
    driver.save(update_fields=["duty_status"])
    outbox_enqueue(
        type="driver.duty",
        groups=[DASHBOARD_GROUP, driver_group(driver.pk)],
        payload={
            "driver_id": driver.pk,
            "from": previous,
            "to": status,
            "occurred_at": occurred_at.isoformat() if occurred_at else None,
        },
    )
    return driver


@transaction.atomic
def dispatch_conflict_resolve(*, conflict_id: int, actor=None) -> DispatchConflict:
    conflict = DispatchConflict.objects.select_for_update().get(pk=conflict_id)
    if conflict.resolved_at is not None:
        return conflict  # resolving twice changes nothing
    conflict.resolved_at = timezone.now()
    conflict.save(update_fields=["resolved_at"])
    if conflict.route_id is not None:
        route = Route.objects.get(pk=conflict.route_id)
        route_event_record(
            route=route,
            type="conflict.resolved",
            source="dashboard",
            actor=actor,
            payload={"conflict_id": conflict.pk, "kind": conflict.kind},
        )
    return conflict
