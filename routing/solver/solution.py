"""The solver's output, and how engines turn a visiting order into one.

Engines only decide which vehicle visits which stops in which order (and, for
OR-Tools, when breaks happen); the times, loads, distances and costs reported
here are computed from the problem by ``timed_route`` so every engine reports
them the same way. ``routing.solver.checker`` re-derives all of it
independently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from routing.solver.problem import Job, Problem, StopRef, TimeWindow, Vehicle, Visit

PICKUP = "pickup"
DELIVERY = "delivery"

# Reasons a job is left out, most specific first (see diagnose_unassigned).
REASON_NO_SKILL = "no_vehicle_with_skill"
REASON_CAPACITY = "over_every_vehicle_capacity"
REASON_WINDOW = "window_unreachable"
REASON_FLEET = "insufficient_fleet_or_not_profitable"


@dataclass(frozen=True)
class Stop:
    job_key: str
    kind: str  # PICKUP or DELIVERY
    location_index: int
    arrival_seconds: int
    start_seconds: int  # service start, inside one of the visit's windows
    departure_seconds: int
    waiting_seconds: int
    load_after: tuple[int, ...]


@dataclass(frozen=True)
class Route:
    vehicle_key: str
    start_location_index: int
    end_location_index: int | None  # None: open-ended, the route ends at its last stop
    stops: tuple[Stop, ...]
    start_seconds: int  # departure from the start location
    end_seconds: int  # arrival at the end location (last departure if open-ended)
    load_at_start: tuple[int, ...]
    distance_meters: int
    duration_seconds: int
    cost: float
    break_start_seconds: int | None = None


@dataclass(frozen=True)
class UnassignedJob:
    job_key: str
    reason: str


@dataclass(frozen=True)
class Solution:
    routes: tuple[Route, ...]  # used vehicles only
    unassigned: tuple[UnassignedJob, ...]
    distance_meters: int
    duration_seconds: int
    cost: float  # fixed + distance + time costs, without drop penalties
    engine: str
    search_seconds: float

    @property
    def vehicle_count(self) -> int:
        return len(self.routes)


def visit_of(job: Job, kind: str) -> Visit:
    visit = job.pickup if kind == PICKUP else job.delivery
    if visit is None:
        raise ValueError(f"job {job.key} has no {kind}")
    return visit


def visit_windows(visit: Visit, vehicle: Vehicle) -> tuple[TimeWindow, ...]:
    """The windows of a visit, or the whole shift when it has none."""
    return visit.time_windows or (
        TimeWindow(vehicle.shift_start_seconds, vehicle.shift_end_seconds),
    )


def route_cost(vehicle: Vehicle, distance_meters: int, duration_seconds: int) -> float:
    return (
        vehicle.fixed_cost
        + distance_meters / 1000 * vehicle.cost_per_km
        + duration_seconds / 3600 * vehicle.cost_per_hour
    )


def _start_in_windows(arrival_seconds: int, windows: Sequence[TimeWindow]) -> tuple[int, int]:
    """Earliest service start at or after arrival, and the end of the window used.
    Past every window: start at arrival (the checker will flag it)."""
    for window in sorted(windows, key=lambda w: w.start_seconds):
        if arrival_seconds <= window.end_seconds:
            return max(arrival_seconds, window.start_seconds), window.end_seconds
    return arrival_seconds, arrival_seconds


def timed_route(
    problem: Problem,
    vehicle: Vehicle,
    refs: Sequence[StopRef],
    *,
    departure_seconds: int,
    service_starts: Sequence[int] | None = None,
    break_start_seconds: int | None = None,
    end_seconds: int | None = None,
    minimise_waiting: bool = True,
) -> Route:
    """Times, loads and costs of one route.

    Without ``service_starts`` every service starts as early as it can (the best
    choice for feasibility); then, unless the vehicle has a break, the departure
    is pushed as late as possible without delaying the return, so the route's
    duration holds no avoidable waiting at its start. With ``service_starts``
    (an engine's own schedule, needed when breaks are placed) they are kept.
    """
    jobs = problem.job_by_key()
    distance = problem.matrix.distance_meters
    travel = problem.matrix.durations_for(vehicle.profile)
    brk = vehicle.break_
    break_seconds = brk.duration_seconds if brk is not None and break_start_seconds is not None else 0

    def forward(depart: int) -> tuple[list[tuple[int, int, int, int]], int, list[int]]:
        rows = []  # (arrival, start, departure, window_end)
        position = vehicle.start_location_index
        clock = depart
        for i, ref in enumerate(refs):
            visit = visit_of(jobs[ref.job_key], ref.kind)
            arrival = clock + travel[position][visit.location_index]
            if service_starts is not None:
                start = service_starts[i]
                if (
                    break_seconds
                    and clock <= break_start_seconds  # type: ignore[operator]
                    and break_start_seconds + break_seconds <= start  # type: ignore[operator]
                    and break_start_seconds < arrival  # type: ignore[operator]
                ):
                    arrival += break_seconds  # the break is taken on the road
                window_end = start
            else:
                start, window_end = _start_in_windows(arrival, visit_windows(visit, vehicle))
            departure = start + visit.service_seconds
            rows.append((arrival, start, departure, window_end))
            clock = departure
            position = visit.location_index
        if vehicle.end_location_index is None:
            end = clock
        else:
            leg = travel[position][vehicle.end_location_index]
            end = clock + leg
            if break_seconds and clock <= break_start_seconds < clock + leg:  # type: ignore[operator]
                end += break_seconds  # the break is taken on the way back
        if end_seconds is not None:
            end = end_seconds
        waits = [row[1] - row[0] for row in rows]
        return rows, end, waits

    rows, end, waits = forward(departure_seconds)
    if minimise_waiting and service_starts is None and brk is None and rows:
        # Pushing the departure by delta shifts stop k by max(0, delta - waited so
        # far); it must stay inside its window, and delta <= total waiting keeps
        # the return time unchanged.
        waited = 0
        delta = sum(waits)
        for (_arrival, start, _dep, window_end), wait in zip(rows, waits, strict=True):
            waited += wait
            delta = min(delta, waited + window_end - start)
        if delta > 0:
            rows, end, waits = forward(departure_seconds + delta)
            departure_seconds += delta

    dims = len(problem.capacity_dimensions)
    load = [0] * dims
    for ref in refs:
        job = jobs[ref.job_key]
        if job.pickup is None:
            load = [a + b for a, b in zip(load, job.demand, strict=True)]
    load_at_start = tuple(load)
    stops = []
    for ref, (arrival, start, departure, _end), wait in zip(refs, rows, waits, strict=True):
        job = jobs[ref.job_key]
        sign = 1 if ref.kind == PICKUP else -1
        load = [a + sign * b for a, b in zip(load, job.demand, strict=True)]
        stops.append(
            Stop(
                job_key=ref.job_key,
                kind=ref.kind,
                location_index=visit_of(job, ref.kind).location_index,
                arrival_seconds=arrival,
                start_seconds=start,
                departure_seconds=departure,
                waiting_seconds=wait,
                load_after=tuple(load),
            )
        )
    positions = [vehicle.start_location_index] + [s.location_index for s in stops]
    if vehicle.end_location_index is not None:
        positions.append(vehicle.end_location_index)
    distance_meters = sum(distance[a][b] for a, b in zip(positions, positions[1:], strict=False))
    duration_seconds = end - departure_seconds
    return Route(
        vehicle_key=vehicle.key,
        start_location_index=vehicle.start_location_index,
        end_location_index=vehicle.end_location_index,
        stops=tuple(stops),
        start_seconds=departure_seconds,
        end_seconds=end,
        load_at_start=load_at_start,
        distance_meters=distance_meters,
        duration_seconds=duration_seconds,
        cost=route_cost(vehicle, distance_meters, duration_seconds),
        break_start_seconds=break_start_seconds,
    )


def assemble_solution(
    problem: Problem,
    routes: Sequence[Route],
    served_job_keys: set[str],
    *,
    engine: str,
    search_seconds: float,
) -> Solution:
    used = tuple(route for route in routes if route.stops)
    missing = [job.key for job in problem.jobs if job.key not in served_job_keys]
    return Solution(
        routes=used,
        unassigned=diagnose_unassigned(problem, missing),
        distance_meters=sum(r.distance_meters for r in used),
        duration_seconds=sum(r.duration_seconds for r in used),
        cost=sum(r.cost for r in used),
        engine=engine,
        search_seconds=search_seconds,
    )


def vehicle_can_carry(vehicle: Vehicle, job: Job) -> bool:
    return all(d <= c for d, c in zip(job.demand, vehicle.capacity, strict=True))


def _reachable(problem: Problem, vehicle: Vehicle, job: Job) -> bool:
    """Can this vehicle, alone, serve this job within windows, shift and span?"""
    travel = problem.matrix.durations_for(vehicle.profile)
    clock = vehicle.shift_start_seconds
    position = vehicle.start_location_index
    first_start = None
    for visit in job.visits:
        arrival = clock + travel[position][visit.location_index]
        start, _ = _start_in_windows(arrival, visit_windows(visit, vehicle))
        if not any(w.start_seconds <= start <= w.end_seconds for w in visit_windows(visit, vehicle)):
            return False
        if first_start is None:
            first_start = start - travel[vehicle.start_location_index][visit.location_index]
        clock = start + visit.service_seconds
        position = visit.location_index
    end = clock
    if vehicle.end_location_index is not None:
        end += travel[position][vehicle.end_location_index]
    if end > vehicle.shift_end_seconds:
        return False
    return vehicle.max_duration_seconds is None or end - first_start <= vehicle.max_duration_seconds  # type: ignore[operator]


def diagnose_unassigned(problem: Problem, job_keys: Sequence[str]) -> tuple[UnassignedJob, ...]:
    """Why each job was left out: the first of skill, capacity, window that rules
    out every vehicle; otherwise the fleet was too small or serving the job cost
    more than its penalty."""
    jobs = problem.job_by_key()
    out = []
    for key in job_keys:
        job = jobs[key]
        skilled = [v for v in problem.vehicles if job.required_skills <= v.skills]
        big_enough = [v for v in skilled if vehicle_can_carry(v, job)]
        if not skilled:
            reason = REASON_NO_SKILL
        elif not big_enough:
            reason = REASON_CAPACITY
        elif not any(_reachable(problem, v, job) for v in big_enough):
            reason = REASON_WINDOW
        else:
            reason = REASON_FLEET
        out.append(UnassignedJob(job_key=key, reason=reason))
    return tuple(out)


def job_serviceable_by(problem: Problem, vehicle: Vehicle, job: Job) -> bool:
    return job.required_skills <= vehicle.skills and vehicle_can_carry(vehicle, job)
