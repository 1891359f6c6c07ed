"""From the database to a solver ``Problem``, and the maps to come back.

    open legs of one mile, hub and day ──▶ jobs: pickup-only (goods ride to the hub)
                                              or delivery-only (loaded at the hub)
    the job's vehicles                 ──▶ solver vehicles from the hub back to it,
                                              shift = the hub's opening hours that day
    the hub and every stop location    ──▶ a matrix (OSRM if configured, else haversine)

What each plan's scope holds (middle mile is line-haul trips, not a routing job):

* first mile: pickups at producers whose first leg ends at the hub;
* last mile: deliveries from the hub in the customers' windows, plus returns
  collected from customers on the same tours (pickups ending at the hub);
* return: return pickups ending at the hub, and returns going back from the hub to
  their shippers (linked, when both legs are in the plan, by a hub hand-over).

Times are seconds since local midnight of the service date. The solver never sees
a model: keys are opaque strings (``leg-<id>``, ``vehicle-<id>``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from datetime import date, datetime, time, timedelta
from decimal import ROUND_CEILING, Decimal
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import numpy as np
from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from dispatch.models import Vehicle
from routing.solver.matrix import MatrixError, haversine_matrix, osrm_matrix
from routing.solver.problem import (
    HubLink,
    Job,
    Location,
    Matrix,
    Problem,
    TimeWindow,
    Visit,
)
from routing.solver.problem import Vehicle as SolverVehicle
from routing.solver.solution import Solution
from shipments.models import Hub, Leg
from shipments.models import Location as LocationRow
from shipments.states import LegStatus, Mile

PICKUP = "pickup"
DELIVERY = "delivery"
PLANNABLE_MILES = (Mile.FIRST, Mile.LAST, Mile.RETURN)

# The matrix profile of each vehicle type (speeds in routing.solver.matrix).
PROFILE_BY_VEHICLE_TYPE = {
    Vehicle.Type.CARGO_BIKE: "bike",
    Vehicle.Type.CAR: "car",
    Vehicle.Type.VAN: "van",
    Vehicle.Type.TRUCK: "truck",
}
CAPACITY_DIMENSIONS = ("grams", "cm3", "parcels")
# Time at the door: ringing, hand-over, signature; each further parcel adds a little.
SERVICE_SECONDS = {PICKUP: 180, DELIVERY: 120}
SERVICE_SECONDS_PER_EXTRA_PARCEL = 30
# Used when a hub publishes no opening hours at all.
DEFAULT_OPENING_HOURS = ("06:00", "22:00")
WEEKDAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_OBJECTIVE_WEIGHTS = {"distance": 1.0, "duration": 1.0, "vehicles": 1.0}

# Why a leg never reached the solver (the solver's own reasons are in
# routing.solver.solution: no_vehicle_with_skill, over_every_vehicle_capacity, ...).
REASON_WINDOW_OUTSIDE_DAY = "window_outside_service_day"
REASON_NO_LONGER_OPEN = "leg_no_longer_open"


def job_key(leg_id: int) -> str:
    return f"leg-{leg_id}"


def vehicle_key(vehicle_id: int) -> str:
    return f"vehicle-{vehicle_id}"


def key_id(key: str) -> int:
    return int(key.rsplit("-", 1)[1])


@dataclass
class BuiltProblem:
    """A problem and what its keys stand for."""

    problem: Problem
    hub: Hub
    day_start: datetime  # local midnight of the service date: time 0 of the problem
    legs: dict[str, Leg]  # job key -> leg (with its shipment)
    kinds: dict[str, str]  # job key -> PICKUP or DELIVERY
    vehicles: dict[str, Vehicle]  # vehicle key -> vehicle
    locations: list[LocationRow]  # problem location index -> row; 0 is the hub
    matrix_source: str
    # Legs left out before solving: [{"leg_id", "shipment_id", "reason"}].
    excluded: list[dict] = field(default_factory=list)

    def at(self, seconds: int) -> datetime:
        return self.day_start + timedelta(seconds=seconds)


# ---------------------------------------------------------------------------
# Scope: which legs a plan of (day, hub, mile) may hold
# ---------------------------------------------------------------------------


def _scope_parts(*, hub: Hub, mile: str) -> tuple[Q | None, Q | None]:
    """(pickups, deliveries) of a plan, as leg filters without the day."""
    if mile == Mile.FIRST:
        return Q(mile=Mile.FIRST, to_hub=hub), None
    if mile == Mile.LAST:
        return Q(mile=Mile.RETURN, to_hub=hub), Q(mile=Mile.LAST, from_hub=hub)
    if mile == Mile.RETURN:
        return Q(mile=Mile.RETURN, to_hub=hub), Q(mile=Mile.RETURN, from_hub=hub)
    raise ValueError(f"mile {mile!r} is not planned by optimization jobs")


def _on_day(kind: str, service_date: date) -> Q:
    """A pickup belongs to the day of its pickup window, a delivery to the day of
    its delivery window; without a window, to the day the leg is planned."""
    if kind == PICKUP:
        return Q(shipment__pickup_window_start__date=service_date) | Q(
            shipment__pickup_window_start__isnull=True,
            planned_departure__date=service_date,
        )
    return Q(shipment__delivery_window_start__date=service_date) | Q(
        shipment__delivery_window_start__isnull=True, planned_arrival__date=service_date
    )


def leg_list_in_scope(*, service_date: date, hub: Hub, mile: str) -> QuerySet[Leg]:
    """Open legs a plan of this day, hub and mile would hold, oldest shipment first."""
    pickups, deliveries = _scope_parts(hub=hub, mile=mile)
    condition = Q(pk__in=[])
    if pickups is not None:
        condition |= pickups & _on_day(PICKUP, service_date)
    if deliveries is not None:
        condition |= deliveries & _on_day(DELIVERY, service_date)
    return _open_legs().filter(condition)


def leg_list_selectable(*, hub: Hub, mile: str) -> QuerySet[Leg]:
    """Open legs of this hub and mile on any day: what a job may select by hand."""
    pickups, deliveries = _scope_parts(hub=hub, mile=mile)
    condition = Q(pk__in=[])
    for part in (pickups, deliveries):
        if part is not None:
            condition |= part
    return _open_legs().filter(condition)


def _open_legs() -> QuerySet[Leg]:
    # A leg on a published route is ASSIGNED; only PLANNED legs are free to plan.
    return (
        Leg.objects.filter(status=LegStatus.PLANNED)
        .select_related(
            "shipment", "from_location", "to_location", "from_hub", "to_hub"
        )
        .order_by("shipment_id", "sequence")
    )


def leg_kind(leg: Leg, *, hub: Hub) -> str:
    """Pickup when the goods ride to the hub, delivery when they leave it."""
    return PICKUP if leg.to_hub_id == hub.pk else DELIVERY


# ---------------------------------------------------------------------------
# Hours
# ---------------------------------------------------------------------------


def _clock(value: str) -> time:
    hours, minutes = str(value).split(":")[:2]
    return time(int(hours), int(minutes))


def hub_opening_seconds(hub: Hub, service_date: date) -> tuple[int, int] | None:
    """The hub's opening hours that day as seconds since midnight; None when closed.

    A hub without any published hours is taken as open 06:00-22:00.
    """
    hours = hub.opening_hours or {}
    if not hours:
        opening = DEFAULT_OPENING_HOURS
    else:
        opening = hours.get(WEEKDAY_KEYS[service_date.weekday()])
        if not opening or len(opening) < 2:
            return None
    start, end = _clock(opening[0]), _clock(opening[1])
    start_seconds = start.hour * 3600 + start.minute * 60
    end_seconds = end.hour * 3600 + end.minute * 60
    if end_seconds <= start_seconds:  # "22:00"-"02:00": open past midnight
        end_seconds += 86_400
    return start_seconds, end_seconds


def day_start_of(service_date: date) -> datetime:
    return timezone.make_aware(datetime.combine(service_date, time(0, 0)))


# ---------------------------------------------------------------------------
# Matrix
# ---------------------------------------------------------------------------

MatrixProvider = Callable[[Sequence[Location]], Matrix]


def matrix_default(locations: Sequence[Location]) -> tuple[Matrix, str]:
    """OSRM when ``OSRM_BASE_URL`` is set and answers, haversine otherwise."""
    base_url = settings.OSRM_BASE_URL
    if base_url:
        try:
            matrix = osrm_matrix(
                locations, base_url=base_url, profiles={"car": "driving"}
            )
        except MatrixError as exc:
            return haversine_matrix(locations), f"haversine (OSRM unavailable: {exc})"[
                :300
            ]
        # One road network for every vehicle type: OSRM serves one car profile here.
        car = matrix.duration_seconds["car"]
        durations = dict.fromkeys(set(PROFILE_BY_VEHICLE_TYPE.values()), car)
        return Matrix(
            distance_meters=matrix.distance_meters, duration_seconds=durations
        ), "osrm"
    return haversine_matrix(locations), "haversine"


# ---------------------------------------------------------------------------
# The build
# ---------------------------------------------------------------------------


def _grams(weight_kg: Decimal) -> int:
    return int((weight_kg * 1000).to_integral_value(rounding=ROUND_CEILING))


def _cubic_centimetres(volume_m3: Decimal) -> int:
    return int((volume_m3 * 1_000_000).to_integral_value(rounding=ROUND_CEILING))


def _window(start: datetime | None, end: datetime | None, day_start: datetime):
    """The visit's window in problem seconds: () without one, None when it lies
    wholly before the day (no vehicle can make it)."""
    if start is None and end is None:
        return ()
    start_seconds = 0 if start is None else int((start - day_start).total_seconds())
    end_seconds = 2 * 86_400 if end is None else int((end - day_start).total_seconds())
    if end_seconds < 0:
        return None
    return (TimeWindow(max(0, start_seconds), max(0, end_seconds)),)


def problem_build(
    *,
    service_date: date,
    hub: Hub,
    mile: str,
    vehicles: Iterable[Vehicle],
    legs: Iterable[Leg],
    objective_weights: dict | None = None,
    matrix_provider: Callable[
        [Sequence[Location]], tuple[Matrix, str]
    ] = matrix_default,
) -> BuiltProblem:
    """The problem of serving ``legs`` (already selected and open) with ``vehicles``.

    Raises ValueError when the hub is closed that day.
    """
    opening = hub_opening_seconds(hub, service_date)
    if opening is None:
        raise ValueError(f"hub {hub.code} is closed on {service_date:%A %Y-%m-%d}")
    shift_start, shift_end = opening
    day_start = day_start_of(service_date)
    weights = {**DEFAULT_OBJECTIVE_WEIGHTS, **(objective_weights or {})}

    location_rows: list[LocationRow] = [hub.location]
    index_of: dict[int, int] = {hub.location_id: 0}

    def location_index(row: LocationRow) -> int:
        if row.pk not in index_of:
            index_of[row.pk] = len(location_rows)
            location_rows.append(row)
        return index_of[row.pk]

    jobs: list[Job] = []
    leg_by_key: dict[str, Leg] = {}
    kinds: dict[str, str] = {}
    excluded: list[dict] = []
    for leg in sorted(legs, key=lambda item: item.pk):
        shipment = leg.shipment
        kind = leg_kind(leg, hub=hub)
        if kind == PICKUP:
            place = leg.from_location
            window = _window(
                shipment.pickup_window_start, shipment.pickup_window_end, day_start
            )
        else:
            place = leg.to_location
            window = _window(
                shipment.delivery_window_start, shipment.delivery_window_end, day_start
            )
        if window is None:
            excluded.append(
                {
                    "leg_id": leg.pk,
                    "shipment_id": shipment.pk,
                    "reason": REASON_WINDOW_OUTSIDE_DAY,
                }
            )
            continue
        parcels = max(1, shipment.parcel_count)
        visit = Visit(
            location_index=location_index(place),
            service_seconds=SERVICE_SECONDS[kind]
            + SERVICE_SECONDS_PER_EXTRA_PARCEL * (parcels - 1),
            time_windows=window,
        )
        key = job_key(leg.pk)
        jobs.append(
            Job(
                key=key,
                pickup=visit if kind == PICKUP else None,
                delivery=visit if kind == DELIVERY else None,
                demand=(
                    _grams(shipment.total_weight_kg),
                    _cubic_centimetres(shipment.total_volume_m3),
                    shipment.parcel_count,
                ),
            )
        )
        leg_by_key[key] = leg
        kinds[key] = kind

    # A return collected and sent back the same day: the outbound tour may leave
    # the hub only once the collecting tour is back and the parcel handled.
    hub_links = tuple(
        HubLink(
            pickup_job_key=job_key(leg.depends_on_id),
            delivery_job_key=key,
            handling_seconds=hub.handling_minutes * 60,
        )
        for key, leg in leg_by_key.items()
        if kinds[key] == DELIVERY
        and leg.depends_on_id is not None
        and kinds.get(job_key(leg.depends_on_id)) == PICKUP
    )

    vehicle_by_key: dict[str, Vehicle] = {}
    solver_vehicles: list[SolverVehicle] = []
    for vehicle in sorted(vehicles, key=lambda item: item.pk):
        key = vehicle_key(vehicle.pk)
        vehicle_by_key[key] = vehicle
        solver_vehicles.append(
            SolverVehicle(
                key=key,
                start_location_index=0,
                end_location_index=0,
                capacity=(
                    _grams(vehicle.capacity_kg),
                    _cubic_centimetres(vehicle.capacity_m3),
                    vehicle.capacity_parcels,
                ),
                skills=frozenset(str(skill) for skill in vehicle.skills or []),
                shift_start_seconds=shift_start,
                shift_end_seconds=shift_end,
                fixed_cost=float(vehicle.fixed_cost) * weights["vehicles"],
                cost_per_km=float(vehicle.cost_per_km) * weights["distance"],
                cost_per_hour=float(vehicle.cost_per_hour) * weights["duration"],
                profile=PROFILE_BY_VEHICLE_TYPE.get(vehicle.type, "van"),
            )
        )

    solver_locations = tuple(
        Location(key=f"loc-{row.pk}", lat=row.latitude, lng=row.longitude)
        for row in location_rows
    )
    matrix, matrix_source = matrix_provider(solver_locations)
    problem = Problem(
        locations=solver_locations,
        jobs=tuple(jobs),
        vehicles=tuple(solver_vehicles),
        matrix=matrix,
        capacity_dimensions=CAPACITY_DIMENSIONS,
        hub_links=hub_links,
    )
    return BuiltProblem(
        problem=problem,
        hub=hub,
        day_start=day_start,
        legs=leg_by_key,
        kinds=kinds,
        vehicles=vehicle_by_key,
        locations=location_rows,
        matrix_source=matrix_source,
        excluded=excluded,
    )


def route_cost_money(
    vehicle: Vehicle, *, distance_meters: int, duration_seconds: int
) -> float:
    """What a route costs at the vehicle's prices (the objective weights aside)."""
    cost = (
        float(vehicle.fixed_cost)
        + distance_meters / 1000 * float(vehicle.cost_per_km)
        + duration_seconds / 3600 * float(vehicle.cost_per_hour)
    )
    return math.floor(cost * 100 + 0.5) / 100


# ---------------------------------------------------------------------------
# Parts of a decomposed problem: compacted and stored as JSON for other workers
# ---------------------------------------------------------------------------


def problem_compact(problem: Problem) -> tuple[Problem, list[int]]:
    """The same problem over only the locations it uses, and the old index of
    each new one. A part of a decomposition keeps the whole matrix otherwise."""
    used: set[int] = set()
    for vehicle in problem.vehicles:
        used.add(vehicle.start_location_index)
        if vehicle.end_location_index is not None:
            used.add(vehicle.end_location_index)
    for job in problem.jobs:
        used.update(visit.location_index for visit in job.visits)
    old = sorted(used)
    new = {index: position for position, index in enumerate(old)}
    picked = np.ix_(old, old)
    distance = np.asarray(problem.matrix.distance_meters, dtype=np.int64)[picked]
    profiles = {vehicle.profile for vehicle in problem.vehicles}
    durations = {
        profile: tuple(
            map(
                tuple,
                np.asarray(problem.matrix.durations_for(profile), dtype=np.int64)[
                    picked
                ].tolist(),
            )
        )
        for profile in profiles
    }

    def moved(visit: Visit | None) -> Visit | None:
        return (
            None
            if visit is None
            else replace(visit, location_index=new[visit.location_index])
        )

    compact = replace(
        problem,
        locations=tuple(problem.locations[index] for index in old),
        jobs=tuple(
            replace(job, pickup=moved(job.pickup), delivery=moved(job.delivery))
            for job in problem.jobs
        ),
        vehicles=tuple(
            replace(
                vehicle,
                start_location_index=new[vehicle.start_location_index],
                end_location_index=None
                if vehicle.end_location_index is None
                else new[vehicle.end_location_index],
            )
            for vehicle in problem.vehicles
        ),
        matrix=Matrix(
            distance_meters=tuple(map(tuple, distance.tolist())),
            duration_seconds=durations,
        ),
    )
    return compact, old


def solution_expand(solution: Solution, old_index: Sequence[int]) -> Solution:
    """A compacted part's solution in the original problem's location indices."""
    routes = tuple(
        replace(
            route,
            start_location_index=old_index[route.start_location_index],
            end_location_index=None
            if route.end_location_index is None
            else old_index[route.end_location_index],
            stops=tuple(
                replace(stop, location_index=old_index[stop.location_index])
                for stop in route.stops
            ),
        )
        for route in solution.routes
    )
    return replace(solution, routes=routes)


def to_json(value: Any) -> Any:
    """Solver dataclasses as plain JSON values (tuples → lists, sets sorted)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, frozenset | set):
        return sorted(to_json(item) for item in value)
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    return value


def from_json(kind: Any, data: Any) -> Any:
    """The inverse of ``to_json`` for a declared type (a solver dataclass, or
    the types its fields use). Driven by the annotations, so fields the solver
    adds later round-trip without changes here."""
    origin, args = get_origin(kind), get_args(kind)
    if origin in (Union, UnionType):
        if data is None:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return from_json(inner, data)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            if args[0] in (int, float, str):
                return tuple(data)
            return tuple(from_json(args[0], item) for item in data)
        return tuple(from_json(arg, item) for arg, item in zip(args, data, strict=True))
    if origin in (frozenset, set):
        return frozenset(from_json(args[0], item) for item in data)
    if origin is dict:
        return {key: from_json(args[1], item) for key, item in data.items()}
    if isinstance(kind, type) and is_dataclass(kind):
        hints = get_type_hints(kind)
        return kind(
            **{
                f.name: from_json(hints[f.name], data[f.name])
                for f in fields(kind)
                if f.name in data
            }
        )
    if kind is float and isinstance(data, int):
        return float(data)
    return data
