"""OR-Tools routing model of a Problem.

Node layout: one node per distinct start/end location of the fleet, one "open
end" node (zero cost to reach) when some vehicle ends wherever its last stop is,
then one node per visit (a paired job has two). Every arc matrix is registered as
a C++ transit matrix so no Python runs per arc evaluation.

Capacity, per dimension, uses the cheapest exact model:
* only delivery-only jobs: cumul = amount delivered so far, capped at capacity
  (the load is capacity-bounded iff the route total is);
* no delivery-only jobs: cumul = load (pickups add, paired deliveries remove);
* both: cumul = load with a free start (the initial load), and a second
  dimension counting delivered amounts whose end must equal that start.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from ortools.constraint_solver import pywrapcp, routing_enums_pb2

from routing.solver.problem import Job, Problem, StopRef, Vehicle, WarmStart
from routing.solver.progress import ProgressCallback, SearchWatch, StopCheck
from routing.solver.solution import (
    DELIVERY,
    PICKUP,
    Solution,
    assemble_solution,
    job_serviceable_by,
    timed_route,
)

FIRST_SOLUTION = "PARALLEL_CHEAPEST_INSERTION"
METAHEURISTIC = "GUIDED_LOCAL_SEARCH"


@dataclass(frozen=True)
class _Model:
    manager: pywrapcp.RoutingIndexManager
    routing: pywrapcp.RoutingModel
    time: pywrapcp.RoutingDimension
    node_refs: dict[int, StopRef]  # visit node -> which visit
    ref_nodes: dict[tuple[str, str], int]
    breaks: dict[int, object]  # vehicle position -> interval var


def _milli(value: float) -> int:
    return int(round(value * 1000))


def build_model(
    problem: Problem,
    warm_start: WarmStart | None = None,
    *,
    releases: dict[str, int | None] | None = None,
    closed_vehicle_keys: frozenset[str] = frozenset(),
) -> _Model:
    """``releases``: job key -> earliest start of the route delivering it (None:
    never). ``closed_vehicle_keys``: pinned routes that may not grow."""
    vehicles = problem.vehicles
    depot_locations: list[int | None] = []
    for vehicle in vehicles:
        for loc in (vehicle.start_location_index, vehicle.end_location_index):
            if loc not in depot_locations:
                depot_locations.append(loc)
    node_location: list[int | None] = list(depot_locations)
    node_service: list[int] = [0] * len(node_location)
    node_refs: dict[int, StopRef] = {}
    node_job: dict[int, Job] = {}
    modelled: list[Job] = []
    for job in problem.jobs:
        if not any(job_serviceable_by(problem, v, job) for v in vehicles):
            continue  # diagnosed later; keeping it would only slow the search
        modelled.append(job)
        for kind, visit in ((PICKUP, job.pickup), (DELIVERY, job.delivery)):
            if visit is None:
                continue
            node_refs[len(node_location)] = StopRef(job.key, kind)
            node_job[len(node_location)] = job
            node_location.append(visit.location_index)
            node_service.append(visit.service_seconds)
    ref_nodes = {(ref.job_key, ref.kind): node for node, ref in node_refs.items()}
    n_nodes = len(node_location)
    starts = [depot_locations.index(v.start_location_index) for v in vehicles]
    ends = [depot_locations.index(v.end_location_index) for v in vehicles]
    manager = pywrapcp.RoutingIndexManager(n_nodes, len(vehicles), starts, ends)
    routing = pywrapcp.RoutingModel(manager)
    solver = routing.solver()

    # Node-level matrices, via numpy fancy indexing (fast for 2000 nodes).
    loc = np.array([-1 if x is None else x for x in node_location])
    open_end = loc < 0
    safe = np.where(open_end, 0, loc)
    dist = np.asarray(problem.matrix.distance_meters, dtype=np.int64)[np.ix_(safe, safe)]
    dist[:, open_end] = 0
    dist[open_end, :] = 0
    service = np.asarray(node_service, dtype=np.int64)

    # Arc costs: one transit matrix per (cost per km) class.
    cost_evaluators: dict[float, int] = {}
    for v, vehicle in enumerate(vehicles):
        if vehicle.cost_per_km not in cost_evaluators:
            cost = np.rint(dist * vehicle.cost_per_km).astype(np.int64)
            cost_evaluators[vehicle.cost_per_km] = routing.RegisterTransitMatrix(cost.tolist())
        routing.SetArcCostEvaluatorOfVehicle(cost_evaluators[vehicle.cost_per_km], v)
        routing.SetFixedCostOfVehicle(_milli(vehicle.fixed_cost), v)

    # Time: transit i -> j = service at i + travel i -> j, one matrix per profile.
    time_evaluators: dict[str, int] = {}
    for vehicle in vehicles:
        if vehicle.profile in time_evaluators:
            continue
        travel = np.asarray(problem.matrix.durations_for(vehicle.profile), dtype=np.int64)[np.ix_(safe, safe)]
        travel[:, open_end] = 0
        travel[open_end, :] = 0
        transit = travel + service[:, None]
        time_evaluators[vehicle.profile] = routing.RegisterTransitMatrix(transit.tolist())
    horizon = max(v.shift_end_seconds for v in vehicles)
    for job in modelled:
        for visit in job.visits:
            for window in visit.time_windows:
                horizon = max(horizon, window.end_seconds)
    routing.AddDimensionWithVehicleTransits(
        [time_evaluators[v.profile] for v in vehicles], horizon, horizon, False, "time"
    )
    time_dim = routing.GetDimensionOrDie("time")
    for node, job in node_job.items():
        index = manager.NodeToIndex(node)
        visit = job.pickup if node_refs[node].kind == PICKUP else job.delivery
        assert visit is not None
        windows = sorted(visit.time_windows, key=lambda w: w.start_seconds)
        if windows:
            cumul = time_dim.CumulVar(index)
            cumul.SetRange(windows[0].start_seconds, max(w.end_seconds for w in windows))
            for before, after in zip(windows, windows[1:], strict=False):
                if after.start_seconds > before.end_seconds + 1:
                    cumul.RemoveInterval(before.end_seconds + 1, after.start_seconds - 1)
    for v, vehicle in enumerate(vehicles):
        for index in (routing.Start(v), routing.End(v)):
            time_dim.CumulVar(index).SetRange(vehicle.shift_start_seconds, vehicle.shift_end_seconds)
        if vehicle.max_duration_seconds is not None:
            time_dim.SetSpanUpperBoundForVehicle(vehicle.max_duration_seconds, v)
        if vehicle.cost_per_hour:
            time_dim.SetSpanCostCoefficientForVehicle(_milli(vehicle.cost_per_hour / 3600), v)
        # Leave as early as allowed and come back as early as possible; the
        # departure is then delayed by the waiting it would only spend idle
        # (timed_route). Maximising the start here instead pushed routes
        # without windows to the end of the shift, and made hub arrivals late.
        routing.AddVariableMinimizedByFinalizer(time_dim.CumulVar(routing.Start(v)))
        routing.AddVariableMinimizedByFinalizer(time_dim.CumulVar(routing.End(v)))

    _add_capacities(problem, routing, manager, node_job, node_refs, n_nodes)

    # Pairs, skills, drop penalties.
    pinned = _pinned_nodes(problem, warm_start, ref_nodes)
    for job in modelled:
        nodes = [ref_nodes[(job.key, k)] for k in (PICKUP, DELIVERY) if (job.key, k) in ref_nodes]
        indices = [manager.NodeToIndex(n) for n in nodes]
        if job.is_paired:
            p, d = indices
            routing.AddPickupAndDelivery(p, d)
            solver.Add(routing.VehicleVar(p) == routing.VehicleVar(d))
            solver.Add(time_dim.CumulVar(p) <= time_dim.CumulVar(d))
        allowed = [v for v, vehicle in enumerate(vehicles) if job_serviceable_by(problem, vehicle, job)]
        for node, index in zip(nodes, indices, strict=True):
            # SetAllowedVehiclesForIndex's Python binding rejects every list in
            # OR-Tools 9.15, so restrict the vehicle variable's domain instead.
            if node in pinned:
                routing.VehicleVar(index).SetValue(pinned[node])
                continue
            if len(allowed) < len(vehicles):
                routing.VehicleVar(index).SetValues([-1, *allowed])
            # A pair pays its penalty once, split over its two visits.
            routing.AddDisjunction([index], max(1, _milli(job.drop_penalty) // len(indices)))

    breaks: dict[int, object] = {}
    if any(v.break_ is not None for v in vehicles):
        visit_transits = [0] * routing.Size()
        for node, service_seconds in enumerate(node_service):
            if node in node_refs:
                visit_transits[manager.NodeToIndex(node)] = service_seconds
        for v, vehicle in enumerate(vehicles):
            brk = vehicle.break_
            if brk is None:
                continue
            interval = solver.FixedDurationIntervalVar(
                brk.window_start_seconds, brk.window_end_seconds, brk.duration_seconds, False, f"break {vehicle.key}"
            )
            time_dim.SetBreakIntervalsOfVehicle([interval], v, visit_transits)
            breaks[v] = interval

    _add_releases(problem, routing, manager, time_dim, ref_nodes, releases or {})
    _pin_prefixes(problem, routing, manager, warm_start, ref_nodes, closed_vehicle_keys)
    return _Model(manager, routing, time_dim, node_refs, ref_nodes, breaks)


def _add_capacities(problem, routing, manager, node_job, node_refs, n_nodes) -> None:
    vehicles = problem.vehicles
    for d, name in enumerate(problem.capacity_dimensions):
        capacities = [v.capacity[d] for v in vehicles]
        has_delivery_only = any(job.pickup is None and job.demand[d] for job in node_job.values())
        has_pickups = any(job.pickup is not None and job.demand[d] for job in node_job.values())
        # Unary transit vectors are indexed by node, not by routing index.
        load = [0] * n_nodes
        delivered = [0] * n_nodes
        for node, job in node_job.items():
            amount = job.demand[d]
            if job.pickup is None:
                load[node] = -amount
                delivered[node] = amount
            elif node_refs[node].kind == PICKUP:
                load[node] = amount
            else:
                load[node] = -amount
        if has_delivery_only and not has_pickups:
            evaluator = routing.RegisterUnaryTransitVector(delivered)
            routing.AddDimensionWithVehicleCapacity(evaluator, 0, capacities, True, f"cap:{name}")
        elif not has_delivery_only:
            evaluator = routing.RegisterUnaryTransitVector(load)
            routing.AddDimensionWithVehicleCapacity(evaluator, 0, capacities, True, f"cap:{name}")
        else:
            load_eval = routing.RegisterUnaryTransitVector(load)
            routing.AddDimensionWithVehicleCapacity(load_eval, 0, capacities, False, f"cap:{name}")
            done_eval = routing.RegisterUnaryTransitVector(delivered)
            routing.AddDimensionWithVehicleCapacity(done_eval, 0, capacities, True, f"done:{name}")
            load_dim = routing.GetDimensionOrDie(f"cap:{name}")
            done_dim = routing.GetDimensionOrDie(f"done:{name}")
            for v in range(len(vehicles)):
                # The initial load is exactly what the route will deliver.
                routing.solver().Add(
                    load_dim.CumulVar(routing.Start(v)) == done_dim.CumulVar(routing.End(v))
                )


def _add_releases(problem, routing, manager, time_dim, ref_nodes, releases: dict[str, int | None]) -> None:
    """Earliest route start per delivery-only job (hub synchronisation). A
    zero-transit dimension carries one value along each route; every released
    node raises its floor, and the route's start time must be above it. The
    routing filters see these bounds, unlike an element constraint across
    vehicles (which left the first-solution heuristics without a plan on a
    90-job two-tier day)."""
    if not releases:
        return
    solver = routing.solver()
    horizon = time_dim.CumulVar(routing.End(0)).Max()
    zero = routing.RegisterUnaryTransitVector([0] * manager.GetNumberOfNodes())
    routing.AddDimension(zero, 0, horizon, False, "release")
    release_dim = routing.GetDimensionOrDie("release")
    for key, seconds in releases.items():
        node = ref_nodes.get((key, DELIVERY))
        if node is None:
            continue
        index = manager.NodeToIndex(node)
        if seconds is None or seconds > horizon:
            routing.ActiveVar(index).SetValue(0)  # its parcel never reaches the hub
        else:
            release_dim.CumulVar(index).SetMin(seconds)
    for v in range(len(problem.vehicles)):
        solver.Add(time_dim.CumulVar(routing.Start(v)) >= release_dim.CumulVar(routing.Start(v)))


def _pinned_nodes(problem: Problem, warm_start: WarmStart | None, ref_nodes) -> dict[int, int]:
    if warm_start is None:
        return {}
    positions = {v.key: i for i, v in enumerate(problem.vehicles)}
    pinned = {}
    for vkey, count in warm_start.fixed_stop_counts.items():
        for ref in warm_start.routes.get(vkey, ())[:count]:
            pinned[ref_nodes[(ref.job_key, ref.kind)]] = positions[vkey]
    return pinned


def _pin_prefixes(problem, routing, manager, warm_start, ref_nodes, closed_vehicle_keys=frozenset()) -> None:
    """Done stops keep their vehicle and order: fix the chain start -> s1 -> ... sk
    (-> end, for a closed route)."""
    if warm_start is None:
        return
    positions = {v.key: i for i, v in enumerate(problem.vehicles)}
    for vkey, count in warm_start.fixed_stop_counts.items():
        refs = warm_start.routes.get(vkey, ())[:count]
        previous = routing.Start(positions[vkey])
        for ref in refs:
            index = manager.NodeToIndex(ref_nodes[(ref.job_key, ref.kind)])
            routing.NextVar(previous).SetValues([index])
            previous = index
        if vkey in closed_vehicle_keys:
            routing.NextVar(previous).SetValues([routing.End(positions[vkey])])


def _search_parameters(
    time_limit_seconds: float,
    solution_limit: int | None,
    first_solution: str,
    metaheuristic: str,
) -> pywrapcp.DefaultRoutingSearchParameters:
    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = getattr(routing_enums_pb2.FirstSolutionStrategy, first_solution)
    params.local_search_metaheuristic = getattr(routing_enums_pb2.LocalSearchMetaheuristic, metaheuristic)
    params.time_limit.FromMilliseconds(max(1, int(time_limit_seconds * 1000)))
    if solution_limit is not None:
        params.solution_limit = solution_limit
    return params


def solve_with_ortools(
    problem: Problem,
    *,
    time_limit_seconds: float,
    solution_limit: int | None = None,
    warm_start: WarmStart | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    first_solution: str = FIRST_SOLUTION,
    metaheuristic: str = METAHEURISTIC,
) -> Solution:
    """Deterministic for a given problem and parameters when the time limit is not
    what ends the search (OR-Tools' routing search takes no seed)."""
    if problem.hub_links:
        return _solve_hub_synchronised(
            problem, time_limit_seconds=time_limit_seconds, solution_limit=solution_limit,
            on_progress=on_progress, should_stop=should_stop,
            first_solution=first_solution, metaheuristic=metaheuristic,
        )
    return _solve(problem, time_limit_seconds=time_limit_seconds, solution_limit=solution_limit,
                  warm_start=warm_start, on_progress=on_progress, should_stop=should_stop,
                  first_solution=first_solution, metaheuristic=metaheuristic)


# Share of the time for the unsynchronised first pass of a hub-linked problem.
HUB_FIRST_PASS_FRACTION = 0.4


def _solve_hub_synchronised(problem: Problem, *, time_limit_seconds: float, **search) -> Solution:
    """Fix-point of release times, in two passes:
    1. solve without the links: this decides the feeding (first-mile) routes;
    2. pin those routes whole (their arrival at the hub is then known), turn
       every link into a release time "leave after arrival + handling" for the
       route delivering the parcel, and solve the rest again.
    The result honours every link; it may miss plans where a feeder route should
    change to let a delivery leave earlier (the exact coupling is a
    cross-vehicle constraint the local search cannot filter)."""
    started = time.monotonic()
    unlinked = replace(problem, hub_links=())
    first = _solve(unlinked, time_limit_seconds=time_limit_seconds * HUB_FIRST_PASS_FRACTION, **search)
    feeder_keys = {link.pickup_job_key for link in problem.hub_links}
    route_of = {stop.job_key: route for route in first.routes for stop in route.stops}
    feeders = {route.vehicle_key: route for key in feeder_keys if (route := route_of.get(key)) is not None}
    releases: dict[str, int | None] = {}
    for link in problem.hub_links:
        feeder = route_of.get(link.pickup_job_key)
        arrival = None if feeder is None else feeder.end_seconds + link.handling_seconds
        previous = releases.get(link.delivery_job_key, 0)
        releases[link.delivery_job_key] = None if arrival is None or previous is None else max(previous, arrival)
    pinned = WarmStart(
        routes={k: tuple(StopRef(s.job_key, s.kind) for s in r.stops) for k, r in feeders.items()},
        fixed_stop_counts={k: len(r.stops) for k, r in feeders.items()},
    )
    remaining = max(0.1, time_limit_seconds - (time.monotonic() - started))
    second = _solve(unlinked, time_limit_seconds=remaining, warm_start=pinned, releases=releases,
                    closed_vehicle_keys=frozenset(feeders), **search)
    # Report against the real problem so the diagnosis sees the links.
    return assemble_solution(problem, second.routes, {s.job_key for r in second.routes for s in r.stops},
                             engine="ortools", search_seconds=time.monotonic() - started)


def _solve(
    problem: Problem,
    *,
    time_limit_seconds: float,
    solution_limit: int | None = None,
    warm_start: WarmStart | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    first_solution: str = FIRST_SOLUTION,
    metaheuristic: str = METAHEURISTIC,
    releases: dict[str, int | None] | None = None,
    closed_vehicle_keys: frozenset[str] = frozenset(),
) -> Solution:
    started = time.monotonic()
    model = build_model(problem, warm_start, releases=releases, closed_vehicle_keys=closed_vehicle_keys)
    routing, manager = model.routing, model.manager
    watch = SearchWatch(
        engine="ortools", time_limit_seconds=time_limit_seconds, on_progress=on_progress, should_stop=should_stop
    )
    # CostVar() only exists once the model is closed, so look it up per call.
    routing.AddAtSolutionCallback(lambda: watch.solution(routing.CostVar().Value()))
    routing.AddSearchMonitor(routing.solver().CustomLimit(watch.stop_requested))
    params = _search_parameters(
        max(0.01, time_limit_seconds - (time.monotonic() - started)), solution_limit, first_solution, metaheuristic
    )
    assignment = None
    if warm_start is not None and warm_start.routes:
        routing.CloseModelWithParameters(params)
        routes = []
        for vehicle in problem.vehicles:
            refs = warm_start.routes.get(vehicle.key, ())
            routes.append(
                [manager.NodeToIndex(model.ref_nodes[(r.job_key, r.kind)]) for r in refs if (r.job_key, r.kind) in model.ref_nodes]
            )
        initial = routing.ReadAssignmentFromRoutes(routes, True)
        if initial is not None:
            assignment = routing.SolveFromAssignmentWithParameters(initial, params)
    if assignment is None:
        assignment = routing.SolveWithParameters(params)
    watch.report()
    if assignment is None:
        return assemble_solution(problem, [], set(), engine="ortools", search_seconds=time.monotonic() - started)
    return read_solution(problem, model, assignment, engine="ortools", started=started)


def read_solution(problem: Problem, model: _Model, assignment, *, engine: str, started: float) -> Solution:
    routing, manager, time_dim = model.routing, model.manager, model.time
    break_starts: dict[int, int] = {}
    intervals = assignment.IntervalVarContainer()
    by_name = {brk.Name(): v for v, brk in model.breaks.items()}
    for i in range(intervals.Size()):
        element = intervals.Element(i)
        v = by_name.get(element.Var().Name())
        if v is not None and element.PerformedValue():
            break_starts[v] = element.StartValue()
    routes = []
    served: set[str] = set()
    for v, vehicle in enumerate(problem.vehicles):
        index = assignment.Value(routing.NextVar(routing.Start(v)))
        refs: list[StopRef] = []
        starts: list[int] = []
        while not routing.IsEnd(index):
            refs.append(model.node_refs[manager.IndexToNode(index)])
            starts.append(assignment.Min(time_dim.CumulVar(index)))
            index = assignment.Value(routing.NextVar(index))
        if not refs:
            continue
        served.update(ref.job_key for ref in refs)
        departure = assignment.Min(time_dim.CumulVar(routing.Start(v)))
        routes.append(_timed(problem, vehicle, refs, departure, starts, break_starts.get(v),
                             assignment.Min(time_dim.CumulVar(routing.End(v)))))
    return assemble_solution(problem, routes, served, engine=engine, search_seconds=time.monotonic() - started)


def _timed(problem: Problem, vehicle: Vehicle, refs: Sequence[StopRef], departure: int,
           starts: Sequence[int], break_start: int | None, end: int):
    if vehicle.break_ is None:
        return timed_route(problem, vehicle, refs, departure_seconds=departure)
    # With a break the solver's own times are kept: they place the break.
    return timed_route(
        problem,
        vehicle,
        refs,
        departure_seconds=departure,
        service_starts=starts,
        break_start_seconds=break_start,
        end_seconds=end,
    )
