"""On tiny instances the solver finds the optimum that brute force finds."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from routing.solver.checker import check_solution
from routing.solver.portfolio import solve
from tests.routing.test_solver_support import delivery, grid_problem, vehicle


def tour_length(distance, order) -> int:
    path = [0, *order, 0]
    return sum(distance[a][b] for a, b in zip(path, path[1:], strict=False))


def best_split(distance, demand, capacity, customers):
    """Optimal two-vehicle CVRP by enumerating every assignment and order."""
    best = math.inf
    for mask in range(2 ** len(customers)):
        first = [c for i, c in enumerate(customers) if mask >> i & 1]
        second = [c for c in customers if c not in first]
        if sum(demand[c] for c in first) > capacity or sum(demand[c] for c in second) > capacity:
            continue
        cost = 0
        for group in (first, second):
            if group:
                cost += min(tour_length(distance, p) for p in itertools.permutations(group))
        best = min(best, cost)
    return best


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("engine", ["ortools", "pyvrp"])
def test_tsp_of_seven_stops_is_optimal(seed, engine):
    rng = random.Random(seed)
    points = [(rng.randint(0, 50), rng.randint(0, 50)) for _ in range(8)]
    problem = grid_problem(points)
    distance = problem.matrix.distance_meters

    solution = solve(problem, time_limit_seconds=1.0, engine=engine)

    optimum = min(tour_length(distance, p) for p in itertools.permutations(range(1, 8)))
    assert check_solution(problem, solution) == []
    assert solution.distance_meters == optimum


@pytest.mark.parametrize("seed", [4, 5])
@pytest.mark.parametrize("engine", ["ortools", "pyvrp"])
def test_two_vehicle_cvrp_of_seven_stops_is_optimal(seed, engine):
    rng = random.Random(seed)
    points = [(rng.randint(0, 50), rng.randint(0, 50)) for _ in range(8)]
    demand = [0] + [rng.randint(1, 4) for _ in range(7)]
    capacity = 10
    jobs = [delivery(f"j{i}", i, demand=(demand[i],)) for i in range(1, 8)]
    problem = grid_problem(points, jobs=jobs, vehicles=[vehicle("a", capacity=(capacity,)), vehicle("b", capacity=(capacity,))])

    solution = solve(problem, time_limit_seconds=1.0, engine=engine)

    assert check_solution(problem, solution) == []
    assert solution.distance_meters == best_split(problem.matrix.distance_meters, demand, capacity, list(range(1, 8)))
