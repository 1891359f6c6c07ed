"""PyVRP model of a Problem, for the classes PyVRP expresses exactly.

PyVRP (iterated local search, single thread) covers capacitated VRP with one
time window per visit, delivery-only and pickup-only jobs, paired pickups and
deliveries (its "shipments"), several depots, different start and end depots,
shift windows, maximum duration, fixed and per-km/per-hour costs, optional jobs
with prizes. It has no skills, no breaks, no multiple windows, no cross-vehicle
precedence and no pinned stops: ``pyvrp_supports`` says when it applies.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyvrp

from routing.solver.problem import DEFAULT_UNASSIGNED_PENALTY, Problem, StopRef, Vehicle
from routing.solver.progress import ProgressCallback, SearchWatch, StopCheck
from routing.solver.solution import (
    DELIVERY,
    PICKUP,
    Solution,
    assemble_solution,
    timed_route,
)

INT_MAX = 2**62  # "unbounded" for PyVRP's int64 fields, with headroom for sums


def pyvrp_supports(problem: Problem) -> bool:
    """Paired jobs are PyVRP shipments. Measured on Li & Lim lr101 at 10 s:
    PyVRP 19 vehicles / 1651.4 against OR-Tools' 20 / 1662.1 (BKS 19 / 1650.8).
    On some small cases with costly hours PyVRP finds no feasible plan; the
    portfolio then falls back to OR-Tools."""
    if problem.hub_links:
        return False
    for vehicle in problem.vehicles:
        if vehicle.break_ is not None:
            return False
    for job in problem.jobs:
        if any(len(visit.time_windows) > 1 for visit in job.visits):
            return False
        for vehicle in problem.vehicles:
            if not job.required_skills <= vehicle.skills:
                return False
    return True


def _cost_multiplier(vehicles: Sequence[Vehicle]) -> int:
    """1 or 10: scales PyVRP's integer objective (milli-currency) so per-meter
    and per-second costs round well. Larger multipliers were tried: they push
    the time-warp penalties PyVRP needs past its bounds and it stops finding
    feasible plans, so small rounding of cost coefficients is the lesser evil
    (reported costs are recomputed exactly anyway)."""
    coefficients = [v.cost_per_km for v in vehicles] + [v.cost_per_hour / 3.6 for v in vehicles]
    if all(abs(c - round(c)) < 1e-9 for c in coefficients):
        return 1
    return 10


@dataclass(frozen=True)
class _Built:
    data: pyvrp.ProblemData
    client_refs: list[StopRef]  # PyVRP client index -> our visit
    shipment_jobs: list[str]  # PyVRP shipment index -> job key
    type_vehicles: list[list[Vehicle]]  # PyVRP vehicle type -> our vehicles of that type


def build_data(problem: Problem) -> _Built:
    n = len(problem.locations)
    needs_open_end = any(v.end_location_index is None for v in problem.vehicles)
    n_locations = n + (1 if needs_open_end else 0)
    open_end = n  # dummy location: reaching it is free, so the route ends at its last stop
    locations = [pyvrp.Location(0, 0, name=loc.key[:40]) for loc in problem.locations]
    if needs_open_end:
        locations.append(pyvrp.Location(0, 0, name="open end"))

    depot_locations: list[int] = []
    for vehicle in problem.vehicles:
        for loc in (vehicle.start_location_index, vehicle.end_location_index):
            loc = open_end if loc is None else loc
            if loc not in depot_locations:
                depot_locations.append(loc)
    depots = [pyvrp.Depot(loc) for loc in depot_locations]

    multiplier = _cost_multiplier(problem.vehicles)
    dims = len(problem.capacity_dimensions)
    clients: list[pyvrp.Client] = []
    client_refs: list[StopRef] = []
    shipments: list[pyvrp.Shipment] = []
    shipment_jobs: list[str] = []
    for job in problem.jobs:
        required = job.unassigned_penalty >= DEFAULT_UNASSIGNED_PENALTY and job.priority >= 0
        prize = 0 if required else min(INT_MAX // 1000, job.drop_penalty * 1000 * multiplier)
        if job.is_paired:
            p, d = job.pickup, job.delivery
            assert p is not None
            assert d is not None
            pw = p.time_windows[0] if p.time_windows else None
            dw = d.time_windows[0] if d.time_windows else None
            shipments.append(
                pyvrp.Shipment(
                    p.location_index,
                    d.location_index,
                    pickup_tw_early=pw.start_seconds if pw else 0,
                    pickup_tw_late=pw.end_seconds if pw else INT_MAX,
                    pickup_service_duration=p.service_seconds,
                    delivery_tw_early=dw.start_seconds if dw else 0,
                    delivery_tw_late=dw.end_seconds if dw else INT_MAX,
                    delivery_service_duration=d.service_seconds,
                    amount=list(job.demand),
                    prize=prize,
                    required=required,
                )
            )
            shipment_jobs.append(job.key)
            continue
        visit = job.pickup or job.delivery
        assert visit is not None
        window = visit.time_windows[0] if visit.time_windows else None
        zero = [0] * dims
        clients.append(
            pyvrp.Client(
                visit.location_index,
                delivery=list(job.demand) if job.pickup is None else zero,
                pickup=list(job.demand) if job.pickup is not None else zero,
                service_duration=visit.service_seconds,
                tw_early=window.start_seconds if window else 0,
                tw_late=window.end_seconds if window else INT_MAX,
                prize=prize,
                required=required,
            )
        )
        client_refs.append(StopRef(job.key, PICKUP if job.pickup is not None else DELIVERY))

    profiles = sorted({v.profile for v in problem.vehicles})
    distance = np.zeros((n_locations, n_locations), dtype=np.int64)
    distance[:n, :n] = np.asarray(problem.matrix.distance_meters, dtype=np.int64)
    durations = []
    for profile in profiles:
        duration = np.zeros((n_locations, n_locations), dtype=np.int64)
        duration[:n, :n] = np.asarray(problem.matrix.durations_for(profile), dtype=np.int64)
        durations.append(duration)

    groups: dict[tuple, list[Vehicle]] = {}
    for vehicle in problem.vehicles:
        signature = (
            vehicle.start_location_index,
            vehicle.end_location_index,
            vehicle.capacity,
            vehicle.shift_start_seconds,
            vehicle.shift_end_seconds,
            vehicle.max_duration_seconds,
            vehicle.fixed_cost,
            vehicle.cost_per_km,
            vehicle.cost_per_hour,
            vehicle.profile,
        )
        groups.setdefault(signature, []).append(vehicle)
    vehicle_types = []
    type_vehicles = []
    for members in groups.values():
        v = members[0]
        end = open_end if v.end_location_index is None else v.end_location_index
        vehicle_types.append(
            pyvrp.VehicleType(
                num_available=len(members),
                capacity=list(v.capacity),
                start_depot=depot_locations.index(v.start_location_index),
                end_depot=depot_locations.index(end),
                fixed_cost=round(v.fixed_cost * 1000 * multiplier),
                tw_early=v.shift_start_seconds,
                tw_late=v.shift_end_seconds,
                shift_duration=INT_MAX if v.max_duration_seconds is None else v.max_duration_seconds,
                unit_distance_cost=round(v.cost_per_km * multiplier),
                unit_duration_cost=round(v.cost_per_hour / 3.6 * multiplier),
                profile=profiles.index(v.profile),
            )
        )
        type_vehicles.append(members)
    data = pyvrp.ProblemData(
        locations,
        clients,
        depots,
        vehicle_types,
        [distance] * len(profiles),
        durations,
        shipments=shipments,
    )
    return _Built(data, client_refs, shipment_jobs, type_vehicles)


class _Stop:
    """PyVRP stopping criterion: time limit, cancel hook and progress in one."""

    def __init__(self, watch: SearchWatch, deadline: float, give_up_at: float):
        self.watch = watch
        self.deadline = deadline
        self.give_up_at = give_up_at
        self.found = False

    def __call__(self, best_cost: float) -> bool:
        if best_cost < INT_MAX:  # PyVRP reports int64 max before any feasible plan
            self.found = True
            self.watch.solution(best_cost)
        now = time.monotonic()
        if not self.found and now >= self.give_up_at:
            return True
        return now >= self.deadline or self.watch.stop_requested()


def solve_with_pyvrp(
    problem: Problem,
    *,
    time_limit_seconds: float,
    seed: int = 0,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    max_iterations: int | None = None,
    give_up_fraction: float = 1.0,
) -> Solution | None:
    """None when PyVRP found no feasible solution (the caller falls back);
    without one after give_up_fraction of the time, it stops early."""
    started = time.monotonic()
    built = build_data(problem)
    watch = SearchWatch(
        engine="pyvrp", time_limit_seconds=time_limit_seconds, on_progress=on_progress, should_stop=should_stop
    )
    stop = _Stop(watch, started + time_limit_seconds, started + give_up_fraction * time_limit_seconds)
    criterion = stop if max_iterations is None else pyvrp.stop.MultipleCriteria([stop, pyvrp.stop.MaxIterations(max_iterations)])
    result = pyvrp.solve(built.data, criterion, seed=seed, collect_stats=False, display=False)
    watch.report()
    best = result.best
    if not best.is_feasible():
        return None
    routes = []
    served: set[str] = set()
    pools = [list(members) for members in built.type_vehicles]
    for route in best.routes():
        vehicle = pools[route.vehicle_type()].pop(0)
        refs: list[StopRef] = []
        for activity in route.schedule():
            kind = activity.type
            if kind == pyvrp.ActivityType.CLIENT:
                refs.append(built.client_refs[activity.idx])
            elif kind == pyvrp.ActivityType.PICKUP:
                refs.append(StopRef(built.shipment_jobs[activity.idx], PICKUP))
            elif kind == pyvrp.ActivityType.DELIVERY:
                refs.append(StopRef(built.shipment_jobs[activity.idx], DELIVERY))
        if not refs:
            continue
        served.update(ref.job_key for ref in refs)
        departure = max(vehicle.shift_start_seconds, int(route.start_time()))
        routes.append(timed_route(problem, vehicle, refs, departure_seconds=departure))
    return assemble_solution(problem, routes, served, engine="pyvrp", search_seconds=time.monotonic() - started)
