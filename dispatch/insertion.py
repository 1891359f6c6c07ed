"""Same-day insertion: an urgent pickup slotted into the routes already under way.

the shipment's open first-mile leg (origin ──▶ hub)
  ──▶ the hub's routes of today that are published or under way
  ──▶ a problem that starts *now*, from where each driver is (latest fix,
      else the last stop served, else the hub): stops served are gone, a stop
      the driver is at stays first, every other stop stays on its own route
      (a route-only skill) with its window and load; the new pickup may go
      on any route, its parcels ride to the hub
  ──▶ the optimizer re-plans the rest within the time budget
  ──▶ its answer is taken only if the independent checker passes it, every
      existing stop is still served and the new one is in;
      otherwise the cheapest feasible insertion (each position of each
      route, each candidate checked by the same checker) is the answer
  ──▶ saved in one transaction: new stop, new order and times of the pending
      stops, the leg assigned, route log + outbox, ``route_activity``.
"""

from __future__ import annotations

import time as monotonic
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from routing.models import Route, RouteStop
from routing.problem_builder import (
    PROFILE_BY_VEHICLE_TYPE,
    SERVICE_SECONDS,
    day_start_of,
)
from routing.solver.checker import check_solution
from routing.solver.matrix import haversine_matrix
from routing.solver.portfolio import solve
from routing.solver.problem import (
    Job,
    Location,
    Problem,
    StopRef,
    TimeWindow,
    Vehicle,
    Visit,
    WarmStart,
)
from routing.solver.solution import PICKUP, Solution, assemble_solution, timed_route
from shipments.errors import Conflict, DomainError
from shipments.models import Leg
from shipments.outbox import driver_group
from shipments.services import leg_transition
from shipments.states import LegStatus, Mile

from .models import DriverPosition
from .route_log import route_event_record
from .signals import route_activity_send_on_commit

NEW_JOB = "new"
# A fix older than this says little about where the van is now.
POSITION_FRESH_FOR = timedelta(minutes=30)
OPEN_STOP = (RouteStop.Status.PENDING, RouteStop.Status.ARRIVED)
CAPACITY_DIMENSIONS = ("grams", "cm3", "parcels")


@dataclass
class BuiltInsertion:
    problem: Problem
    warm_start: WarmStart
    day_start: datetime
    now_seconds: int
    routes: dict[str, Route]  # vehicle key -> route
    stops: dict[str, RouteStop]  # job key -> pending stop
    current: dict[
        str, tuple[StopRef, ...]
    ]  # vehicle key -> today's order of open stops
    fixed: dict[str, int]  # vehicle key -> stops that must stay first
    relaxed_windows: list[int] = field(default_factory=list)  # stop ids already late


@dataclass
class InsertionResult:
    shipment_id: int
    method: str  # "optimizer" | "cheapest_insertion"
    route_id: int
    stop_id: int
    search_seconds: float
    cost_before: float
    cost_after: float
    relaxed_windows: list[int]
    optimizer_note: str = ""
    problem: Problem | None = None
    solution: Solution | None = None


def _seconds(built_start: datetime, at: datetime) -> int:
    return int((at - built_start).total_seconds())


def _demand(shipments) -> tuple[int, int, int]:
    grams = cm3 = parcels = 0
    for shipment in shipments:
        grams += int(shipment.total_weight_kg * 1000)
        cm3 += int(shipment.total_volume_m3 * Decimal(1_000_000))
        parcels += shipment.parcel_count
    return grams, cm3, parcels


def _window(
    stop_start, stop_end, *, day_start, now_seconds, horizon
) -> tuple[TimeWindow, ...]:
    if stop_start is None and stop_end is None:
        return ()
    start = _seconds(day_start, stop_start) if stop_start else now_seconds
    end = _seconds(day_start, stop_end) if stop_end else horizon
    return (TimeWindow(max(start, now_seconds), max(end, now_seconds)),)


def insertion_build(*, leg: Leg, routes: list[Route], now: datetime) -> BuiltInsertion:
    day_start = day_start_of(timezone.localdate(now))
    now_s = _seconds(day_start, now)
    locations: list[Location] = []

    def place(key: str, lat: float, lng: float) -> int:
        locations.append(Location(key=key, lat=lat, lng=lng))
        return len(locations) - 1

    hub = routes[0].hub
    hub_index = place("hub", hub.location.latitude, hub.location.longitude)
    jobs: list[Job] = []
    vehicles: list[Vehicle] = []
    route_by_key: dict[str, Route] = {}
    stop_by_key: dict[str, RouteStop] = {}
    current: dict[str, tuple[StopRef, ...]] = {}
    fixed: dict[str, int] = {}
    relaxed: list[int] = []
    positions = {
        p.driver_id: p
        for p in DriverPosition.objects.filter(
            driver_id__in=[r.driver_id for r in routes]
        )
    }
    for route in routes:
        vkey = f"r{route.pk}"
        skill = f"route:{route.pk}"
        route_by_key[vkey] = route
        stops = list(
            route.stops.select_related("location")
            .prefetch_related("legs__shipment")
            .order_by("sequence")
        )
        served = [s for s in stops if s.status not in OPEN_STOP]
        open_jobs = [
            s for s in stops if s.status in OPEN_STOP and s.kind != RouteStop.Kind.HUB
        ]
        # Where the van is: its latest fix, else the last stop served, else the hub.
        position = positions.get(route.driver_id)
        if position is not None and now - position.recorded_at <= POSITION_FRESH_FOR:
            start_index = place(vkey, position.latitude, position.longitude)
        elif served and served[-1].kind != RouteStop.Kind.HUB:
            last = served[-1].location
            start_index = place(vkey, last.latitude, last.longitude)
        else:
            start_index = hub_index
        # What is already on board and stays there: pickups done (they ride to the hub).
        onboard = _demand(
            leg.shipment
            for s in served
            if s.kind == RouteStop.Kind.PICKUP
            and s.status == RouteStop.Status.COMPLETED
            for leg in s.legs.all()
        )
        vehicle_row = route.vehicle
        capacity = (
            int(vehicle_row.capacity_kg * 1000) - onboard[0],
            int(vehicle_row.capacity_m3 * Decimal(1_000_000)) - onboard[1],
            vehicle_row.capacity_parcels - onboard[2],
        )
        shift_end = _seconds(
            day_start,
            timezone.make_aware(
                datetime.combine(route.service_date, route.driver.shift_end)
            ),
        )
        horizon = max(
            [shift_end, now_s + 3600]
            + [_seconds(day_start, s.window_end) for s in open_jobs if s.window_end]
            + ([_seconds(day_start, route.planned_end)] if route.planned_end else [])
        )
        refs = []
        for stop in open_jobs:
            key = f"s{stop.pk}"
            stop_by_key[key] = stop
            index = place(key, stop.location.latitude, stop.location.longitude)
            windows = _window(
                stop.window_start,
                stop.window_end,
                day_start=day_start,
                now_seconds=now_s,
                horizon=horizon,
            )
            if (
                windows
                and stop.window_end
                and _seconds(day_start, stop.window_end) < now_s
            ):
                windows = ()  # already late: no plan can keep it; do not let it block the rest
                relaxed.append(stop.pk)
            visit = Visit(
                location_index=index,
                service_seconds=stop.service_seconds,
                time_windows=windows,
            )
            demand = _demand(
                leg.shipment
                for leg in stop.legs.all()
                if leg.status != LegStatus.CANCELLED
            )
            kind = PICKUP if stop.kind == RouteStop.Kind.PICKUP else "delivery"
            jobs.append(
                Job(
                    key=key,
                    pickup=visit if kind == PICKUP else None,
                    delivery=None if kind == PICKUP else visit,
                    demand=demand,
                    required_skills=frozenset({skill}),
                    priority=10,  # never dropped before the newcomer
                )
            )
            refs.append(StopRef(key, kind))
        current[vkey] = tuple(refs)
        fixed[vkey] = (
            1 if open_jobs and open_jobs[0].status == RouteStop.Status.ARRIVED else 0
        )
        vehicles.append(
            Vehicle(
                key=vkey,
                start_location_index=start_index,
                end_location_index=hub_index,
                capacity=tuple(max(0, c) for c in capacity),
                skills=frozenset({skill}),
                shift_start_seconds=now_s,
                shift_end_seconds=horizon,
                cost_per_km=float(vehicle_row.cost_per_km),
                cost_per_hour=float(vehicle_row.cost_per_hour),
                profile=PROFILE_BY_VEHICLE_TYPE.get(vehicle_row.type, "van"),
            )
        )
    shipment = leg.shipment
    origin = leg.from_location
    new_index = place(NEW_JOB, origin.latitude, origin.longitude)
    horizon = max(v.shift_end_seconds for v in vehicles)
    jobs.append(
        Job(
            key=NEW_JOB,
            pickup=Visit(
                location_index=new_index,
                service_seconds=SERVICE_SECONDS[PICKUP],
                time_windows=_window(
                    shipment.pickup_window_start,
                    shipment.pickup_window_end,
                    day_start=day_start,
                    now_seconds=now_s,
                    horizon=horizon,
                ),
            ),
            demand=_demand([shipment]),
        )
    )
    problem = Problem(
        locations=tuple(locations),
        jobs=tuple(jobs),
        vehicles=tuple(vehicles),
        matrix=haversine_matrix(locations),
        capacity_dimensions=CAPACITY_DIMENSIONS,
    )
    return BuiltInsertion(
        problem=problem,
        warm_start=WarmStart(routes=dict(current), fixed_stop_counts=dict(fixed)),
        day_start=day_start,
        now_seconds=now_s,
        routes=route_by_key,
        stops=stop_by_key,
        current=current,
        fixed=fixed,
        relaxed_windows=relaxed,
    )


def _plan_of(built: BuiltInsertion, orders: dict[str, tuple[StopRef, ...]]) -> Solution:
    routes = []
    served: set[str] = set()
    for vehicle in built.problem.vehicles:
        refs = orders.get(vehicle.key, ())
        if not refs:
            continue
        routes.append(
            timed_route(
                built.problem,
                vehicle,
                refs,
                departure_seconds=built.now_seconds,
                minimise_waiting=False,
            )
        )
        served |= {ref.job_key for ref in refs}
    return assemble_solution(
        built.problem, routes, served, engine="insertion", search_seconds=0.0
    )


def _acceptable(built: BuiltInsertion, solution: Solution) -> str:
    """Why a plan cannot be taken ('' when it can)."""
    violations = check_solution(built.problem, solution)
    if violations:
        first = violations[0]
        return f"checker: {first.kind} {first.subject} {first.detail}"
    served = {stop.job_key for route in solution.routes for stop in route.stops}
    lost = [key for key in built.stops if key not in served]
    if lost:
        return f"would drop {len(lost)} planned stops"
    if NEW_JOB not in served:
        return "the new pickup was not served"
    for vkey, count in built.fixed.items():
        route = next((r for r in solution.routes if r.vehicle_key == vkey), None)
        kept = (
            tuple(StopRef(s.job_key, s.kind) for s in route.stops[:count])
            if route
            else ()
        )
        if kept != built.current[vkey][:count]:
            return "moved a stop the driver is at"
    return ""


def cheapest_insertion(built: BuiltInsertion) -> tuple[Solution | None, float]:
    """Every position on every route, each candidate checked; the cheapest
    feasible one (None when none is)."""
    base = _plan_of(built, built.current)
    best: tuple[float, Solution] | None = None
    for vehicle in built.problem.vehicles:
        refs = built.current[vehicle.key]
        for position in range(built.fixed[vehicle.key], len(refs) + 1):
            orders = dict(built.current)
            orders[vehicle.key] = (
                *refs[:position],
                StopRef(NEW_JOB, PICKUP),
                *refs[position:],
            )
            candidate = _plan_of(built, orders)
            if _acceptable(built, candidate):
                continue
            delta = candidate.cost - base.cost
            if best is None or delta < best[0]:
                best = (delta, candidate)
    return (best[1] if best else None), base.cost


def _open_first_mile_leg(shipment_id: int) -> Leg:
    leg = (
        Leg.objects.select_related("shipment", "from_location", "to_hub__location")
        .filter(
            shipment_id=shipment_id,
            status=LegStatus.PLANNED,
            mile__in=(Mile.FIRST, Mile.RETURN),
        )
        .exclude(to_hub__isnull=True)
        .order_by("sequence")
        .first()
    )
    if leg is None:
        raise DomainError(
            "The shipment has no pickup waiting to be planned.", field="shipment_id"
        )
    return leg


def routes_under_way(*, hub_id: int, day) -> list[Route]:
    return list(
        Route.objects.filter(
            hub_id=hub_id,
            service_date=day,
            status__in=(Route.Status.PUBLISHED, Route.Status.IN_PROGRESS),
            vehicle__isnull=False,
            driver__isnull=False,
            mile__in=(Mile.FIRST, Mile.LAST),
        )
        .select_related("hub__location", "vehicle", "driver")
        .order_by("id")
    )


def shipment_insert_same_day(
    *,
    shipment_id: int,
    time_budget_seconds: float = 5.0,
    method: str = "auto",
    now: datetime | None = None,
    actor=None,
) -> InsertionResult:
    """Insert the shipment's pickup into today's routes under way at its hub."""
    now = now or timezone.now()
    leg = _open_first_mile_leg(shipment_id)
    routes = routes_under_way(hub_id=leg.to_hub_id, day=timezone.localdate(now))
    if not routes:
        raise Conflict("No route of that hub is under way today.", field="shipment_id")
    started = monotonic.monotonic()
    built = insertion_build(leg=leg, routes=routes, now=now)
    chosen, note, used = None, "", "cheapest_insertion"
    if method == "auto":
        remaining = time_budget_seconds - (monotonic.monotonic() - started)
        try:
            solution = solve(
                built.problem,
                time_limit_seconds=max(0.2, remaining * 0.7),
                engine="ortools",
                warm_start=built.warm_start,
            )
            note = _acceptable(built, solution)
            if not note:
                chosen, used = solution, "optimizer"
        except Exception as exc:  # the fallback exists for exactly this
            note = f"{type(exc).__name__}: {exc}"[:200]
    base_cost = _plan_of(built, built.current).cost
    if chosen is None:
        chosen, base_cost = cheapest_insertion(built)
        if chosen is None:
            raise Conflict(
                "No route under way can take this pickup within its window, the "
                "routes' windows, capacity and shifts.",
                field="shipment_id",
                optimizer=note,
            )
    search_seconds = monotonic.monotonic() - started
    route_id, stop_id = _insertion_save(
        built=built, solution=chosen, leg_id=leg.pk, actor=actor, method=used
    )
    return InsertionResult(
        shipment_id=shipment_id,
        method=used,
        route_id=route_id,
        stop_id=stop_id,
        search_seconds=search_seconds,
        cost_before=base_cost,
        cost_after=chosen.cost,
        relaxed_windows=built.relaxed_windows,
        optimizer_note=note,
        problem=built.problem,
        solution=chosen,
    )


@transaction.atomic
def _insertion_save(
    *, built: BuiltInsertion, solution: Solution, leg_id: int, actor, method: str
):
    route_ids = sorted(r.pk for r in built.routes.values())
    locked = {
        r.pk: r
        for r in Route.objects.select_for_update()
        .filter(pk__in=route_ids)
        .order_by("pk")
    }
    # Nothing may have moved since the plan was built: a stop served meanwhile
    # would be planned again.
    statuses = dict(
        RouteStop.objects.filter(
            pk__in=[s.pk for s in built.stops.values()]
        ).values_list("pk", "status")
    )
    if any(statuses.get(stop.pk) != stop.status for stop in built.stops.values()):
        raise Conflict("The routes changed while planning; try again.")
    leg = Leg.objects.select_related("from_location", "to_hub").get(pk=leg_id)
    if leg.status != LegStatus.PLANNED:
        raise Conflict(
            "The shipment's pickup was planned meanwhile.", field="shipment_id"
        )
    new_stop = None
    for solved in solution.routes:
        route = locked[built.routes[solved.vehicle_key].pk]
        keys = [s.job_key for s in solved.stops]
        if (
            NEW_JOB not in keys
            and tuple(StopRef(s.job_key, s.kind) for s in solved.stops)
            == built.current[solved.vehicle_key]
        ):
            continue  # untouched
        stops = list(route.stops.order_by("sequence"))
        open_keys = {
            f"s{s.pk}"
            for s in stops
            if s.status in OPEN_STOP and s.kind != RouteStop.Kind.HUB
        }
        head = [
            s
            for s in stops
            if f"s{s.pk}" not in open_keys and not _is_end_hub(s, stops)
        ]
        tail = [s for s in stops if _is_end_hub(s, stops)]
        # Make room: move every stop out of the way, then number them again.
        for offset, stop in enumerate(stops, start=1):
            RouteStop.objects.filter(pk=stop.pk).update(sequence=20_000 + offset)
        sequence = max((s.sequence for s in head), default=-1)
        for s in head:
            RouteStop.objects.filter(pk=s.pk).update(sequence=s.sequence)
        for solved_stop in solved.stops:
            sequence += 1
            arrival = built.day_start + timedelta(seconds=solved_stop.arrival_seconds)
            departure = built.day_start + timedelta(
                seconds=solved_stop.departure_seconds
            )
            if solved_stop.job_key == NEW_JOB:
                new_stop = RouteStop.objects.create(
                    route=route,
                    sequence=sequence,
                    kind=RouteStop.Kind.PICKUP,
                    location=leg.from_location,
                    window_start=leg.shipment.pickup_window_start,
                    window_end=leg.shipment.pickup_window_end,
                    service_seconds=SERVICE_SECONDS[PICKUP],
                    planned_arrival=arrival,
                    planned_departure=departure,
                    eta=arrival,
                    notes="Urgent same-day pickup.",
                )
                new_stop.legs.set([leg])
                new_route = route
            else:
                RouteStop.objects.filter(pk=built.stops[solved_stop.job_key].pk).update(
                    sequence=sequence,
                    planned_arrival=arrival,
                    planned_departure=departure,
                    eta=arrival,
                )
        for s in tail:
            sequence += 1
            end = built.day_start + timedelta(seconds=solved.end_seconds)
            RouteStop.objects.filter(pk=s.pk).update(
                sequence=sequence, planned_arrival=end, eta=end
            )
        route.planned_end = built.day_start + timedelta(seconds=solved.end_seconds)
        route.version += 1
        route.save(update_fields=["planned_end", "version", "updated_at"])
        route_event_record(
            route=route,
            type="route.replanned" if NEW_JOB not in keys else "route.stop_inserted",
            source="system",
            actor=actor,
            payload={
                "method": method,
                "shipment_id": leg.shipment_id,
                **({"stop_id": new_stop.pk} if NEW_JOB in keys else {}),
            },
        )
        route_activity_send_on_commit(route.pk)
    if new_stop is None:
        raise Conflict("The plan did not place the pickup.")
    leg_transition(
        leg_id=leg.pk,
        to=LegStatus.ASSIGNED,
        source="system",
        actor=actor,
        reason="same-day insertion",
        payload={"route_id": new_route.pk, "stop_id": new_stop.pk, "method": method},
        extra_groups=[driver_group(new_route.driver_id)],
    )
    return new_route.pk, new_stop.pk


def _is_end_hub(stop: RouteStop, stops: list[RouteStop]) -> bool:
    """The hub stop that closes the route (after every other stop)."""
    return stop.kind == RouteStop.Kind.HUB and stop is stops[-1] and len(stops) > 1
