"""Decomposition for large problems: split, solve the parts, repair the borders.

    jobs ──► clusters (angular sweep around the depot, or matrix k-centres)
         ──► fleet shared out by cluster demand, nearest vehicle homes first
         ──► map_fn(_solve_part, parts)      (builtin map, or a Celery group)
         ──► merged plan
         ──► border repair: pairs of neighbouring routes from different
             clusters are re-solved together and kept when cheaper

``map_fn`` is swappable so the Django side can fan the parts out to workers;
``_solve_part`` is a module-level function of plain data, hence picklable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import numpy as np

from routing.solver.portfolio import solve
from routing.solver.problem import Job, Problem, Vehicle
from routing.solver.solution import Solution, assemble_solution

DEFAULT_THRESHOLD_JOBS = 400
DEFAULT_CLUSTER_JOBS = 250
REPAIR_FRACTION = 0.25  # of the time limit kept for the border repair
REPAIR_PAIR_SECONDS = 1.0

MapFn = Callable[[Callable, Iterable], Iterable]


def _anchor(job: Job) -> int:
    visit = job.pickup or job.delivery
    assert visit is not None
    return visit.location_index


def cluster_jobs(problem: Problem, n_clusters: int) -> list[list[Job]]:
    """Equal-size clusters. With coordinates: sectors of an angular sweep around
    the fleet's mean start. Without: k-centres on the (symmetrised) matrix."""
    jobs = list(problem.jobs)
    if n_clusters <= 1 or len(jobs) <= n_clusters:
        return [jobs]
    size = math.ceil(len(jobs) / n_clusters)
    locations = problem.locations
    if all(loc.lat is not None and loc.lng is not None for loc in locations):
        starts = [locations[v.start_location_index] for v in problem.vehicles]
        cy = sum(s.lat for s in starts) / len(starts)  # type: ignore[misc]
        cx = sum(s.lng for s in starts) / len(starts)  # type: ignore[misc]
        angle = {
            job.key: math.atan2(locations[_anchor(job)].lat - cy, locations[_anchor(job)].lng - cx)  # type: ignore[operator]
            for job in jobs
        }
        ordered = sorted(jobs, key=lambda j: angle[j.key])
        # Start the sweep at the widest angular gap so no sector straddles it.
        gaps = [(angle[b.key] - angle[a.key]) % (2 * math.pi) for a, b in zip(ordered, ordered[1:] + ordered[:1], strict=False)]
        cut = (gaps.index(max(gaps)) + 1) % len(ordered)
        ordered = ordered[cut:] + ordered[:cut]
        return [ordered[i : i + size] for i in range(0, len(ordered), size)]
    dist = np.asarray(problem.matrix.distance_meters, dtype=np.float64)
    sym = dist + dist.T
    anchors = np.array([_anchor(j) for j in jobs])
    depot = problem.vehicles[0].start_location_index
    centres = [anchors[int(np.argmax(sym[depot, anchors]))]]
    while len(centres) < n_clusters:
        nearest = sym[np.ix_(anchors, centres)].min(axis=1)
        centres.append(anchors[int(np.argmax(nearest))])
    cost = sym[np.ix_(anchors, centres)]
    groups: list[list[Job]] = [[] for _ in centres]
    # Most decided jobs first (largest gap between best and second-best centre).
    order = np.argsort(-(np.sort(cost, axis=1)[:, 1] - cost.min(axis=1))) if len(centres) > 1 else range(len(jobs))
    for i in order:
        for c in np.argsort(cost[i]):
            if len(groups[c]) < size:
                groups[c].append(jobs[i])
                break
    return [g for g in groups if g]


def share_fleet(problem: Problem, clusters: Sequence[Sequence[Job]]) -> list[list[Vehicle]]:
    """Vehicles per cluster in proportion to its demand (first dimension, else
    job count), at least one each, nearest homes first."""
    weights = [sum(j.demand[0] if j.demand else 1 for j in c) or len(c) for c in clusters]
    fleet = list(problem.vehicles)
    quotas = [max(1, math.floor(len(fleet) * w / sum(weights))) for w in weights]
    while sum(quotas) > len(fleet):
        quotas[quotas.index(max(quotas))] -= 1
    spare = len(fleet) - sum(quotas)
    for i in sorted(range(len(clusters)), key=lambda k: -weights[k])[:spare]:
        quotas[i] += 1
    dist = problem.matrix.distance_meters
    shares: list[list[Vehicle]] = []
    for cluster, quota in zip(clusters, quotas, strict=True):
        anchors = [_anchor(j) for j in cluster]
        fleet.sort(key=lambda v: sum(dist[v.start_location_index][a] for a in anchors[:50]))
        shares.append(fleet[:quota])
        fleet = fleet[quota:]
    return shares


def _solve_part(args: tuple[Problem, float, int]) -> Solution:
    part, seconds, seed = args
    return solve(part, time_limit_seconds=seconds, seed=seed)


def _subproblem(problem: Problem, jobs: Sequence[Job], vehicles: Sequence[Vehicle]) -> Problem:
    keys = {j.key for j in jobs}
    links = tuple(link for link in problem.hub_links if link.pickup_job_key in keys and link.delivery_job_key in keys)
    return replace(problem, jobs=tuple(jobs), vehicles=tuple(vehicles), hub_links=links)


def _merge(problem: Problem, parts: Sequence[Solution], started: float) -> Solution:
    routes = [route for part in parts for route in part.routes]
    served = {stop.job_key for route in routes for stop in route.stops}
    return assemble_solution(problem, routes, served, engine="decomposed", search_seconds=time.monotonic() - started)


def _objective(problem: Problem, solution: Solution) -> float:
    penalties = {j.key: j.drop_penalty / 1000 for j in problem.jobs}  # penalties are in milli-units
    return solution.cost + sum(penalties[u.job_key] for u in solution.unassigned)


def solve_decomposed(
    problem: Problem,
    *,
    time_limit_seconds: float,
    seed: int = 0,
    map_fn: MapFn = map,
    threshold_jobs: int = DEFAULT_THRESHOLD_JOBS,
    cluster_jobs_target: int = DEFAULT_CLUSTER_JOBS,
    parallel_parts: int = 1,
) -> Solution:
    """Below threshold_jobs this is plain ``solve``. Hub links across clusters
    are dropped from the parts, so problems with hub links are solved whole.
    ``parallel_parts``: how many parts map_fn runs at once (time per part)."""
    started = time.monotonic()
    if len(problem.jobs) <= threshold_jobs or problem.hub_links:
        return solve(problem, time_limit_seconds=time_limit_seconds, seed=seed)
    n_clusters = math.ceil(len(problem.jobs) / cluster_jobs_target)
    clusters = cluster_jobs(problem, n_clusters)
    shares = share_fleet(problem, clusters)
    budget = time_limit_seconds * (1 - REPAIR_FRACTION)
    waves = math.ceil(len(clusters) / max(1, parallel_parts))
    per_part = budget / waves
    parts = [(_subproblem(problem, c, v), per_part, seed) for c, v in zip(clusters, shares, strict=True)]
    solutions = list(map_fn(_solve_part, parts))
    merged = _merge(problem, solutions, started)
    cluster_of = {job.key: i for i, c in enumerate(clusters) for job in c}
    return repair_borders(problem, merged, cluster_of, deadline=started + time_limit_seconds, seed=seed)


def repair_borders(
    problem: Problem, solution: Solution, cluster_of: dict[str, int], *, deadline: float, seed: int = 0
) -> Solution:
    """Re-solve pairs of close routes from different clusters (closest pairs
    first) and keep each re-solve that lowers the cost with nothing dropped."""
    dist = problem.matrix.distance_meters
    vehicles = {v.key: v for v in problem.vehicles}
    jobs = problem.job_by_key()
    routes = list(solution.routes)

    def centre(route) -> int:
        return route.stops[len(route.stops) // 2].location_index

    def cluster(route) -> int:
        return cluster_of.get(route.stops[0].job_key, -1)

    candidates = sorted(
        ((dist[centre(a)][centre(b)], i, j) for i, a in enumerate(routes) for j, b in enumerate(routes)
         if i < j and cluster(a) != cluster(b)),
    )
    touched: set[int] = set()
    for _, i, j in candidates:
        if time.monotonic() + REPAIR_PAIR_SECONDS > deadline:
            break
        if i in touched or j in touched:
            continue
        a, b = routes[i], routes[j]
        keys = {s.job_key for s in a.stops} | {s.job_key for s in b.stops}
        # Unused vehicles are offered too, so a pair may also split in three.
        part = _subproblem(problem, [jobs[k] for k in sorted(keys)], [vehicles[a.vehicle_key], vehicles[b.vehicle_key]])
        better = solve(part, time_limit_seconds=REPAIR_PAIR_SECONDS, seed=seed)
        if not better.unassigned and better.cost < a.cost + b.cost - 1e-9:
            new_routes = list(better.routes)
            routes[i] = new_routes[0] if new_routes else a
            routes[j] = new_routes[1] if len(new_routes) > 1 else None  # type: ignore[call-overload]
            touched.update((i, j))
    kept = [r for r in routes if r is not None]
    served = {stop.job_key for route in kept for stop in route.stops}
    repaired = assemble_solution(problem, kept, served, engine="decomposed", search_seconds=solution.search_seconds)
    return repaired if _objective(problem, repaired) <= _objective(problem, solution) else solution
