"""Decomposition: clusters cover every job once, parts can be mapped by any map."""

from __future__ import annotations

import random

from routing.solver.checker import check_solution
from routing.solver.decompose import cluster_jobs, share_fleet, solve_decomposed
from routing.solver.matrix import haversine_matrix
from routing.solver.problem import Location, Problem
from tests.routing.test_solver_support import delivery, vehicle


def city(n: int = 120, vehicles: int = 12, seed: int = 5) -> Problem:
    rng = random.Random(seed)
    locations = [Location("depot", 52.52, 13.40)] + [
        Location(f"c{i}", 52.52 + rng.uniform(-0.08, 0.08), 13.40 + rng.uniform(-0.12, 0.12)) for i in range(n)
    ]
    jobs = tuple(delivery(f"j{i}", i, demand=(rng.randint(1, 3),), service_seconds=120) for i in range(1, n + 1))
    fleet = tuple(vehicle(f"v{k}", capacity=(30,), shift_end_seconds=8 * 3600) for k in range(vehicles))
    return Problem(tuple(locations), jobs, fleet, haversine_matrix(locations), ("parcels",))


def test_clusters_partition_the_jobs_and_the_fleet():
    problem = city()
    clusters = cluster_jobs(problem, 4)
    assert sorted(j.key for c in clusters for j in c) == sorted(j.key for j in problem.jobs)
    assert max(len(c) for c in clusters) - min(len(c) for c in clusters) <= 1
    shares = share_fleet(problem, clusters)
    assert sorted(v.key for s in shares for v in s) == sorted(v.key for v in problem.vehicles)
    assert all(shares)


def test_matrix_clustering_without_coordinates():
    problem = city()
    bare = Problem(tuple(Location(loc.key) for loc in problem.locations), problem.jobs, problem.vehicles,
                   problem.matrix, problem.capacity_dimensions)
    clusters = cluster_jobs(bare, 3)
    assert sorted(j.key for c in clusters for j in c) == sorted(j.key for j in bare.jobs)


def test_decomposed_solve_is_feasible_and_map_is_swappable():
    problem = city()
    mapped = []

    def recording_map(fn, items):
        items = list(items)
        mapped.append(len(items))
        return [fn(item) for item in items]

    solution = solve_decomposed(problem, time_limit_seconds=4, threshold_jobs=50, cluster_jobs_target=40,
                                map_fn=recording_map)

    assert mapped == [3]
    assert check_solution(problem, solution) == []
    assert not solution.unassigned
