"""Search controls: warm start with pinned stops, cancel, progress, determinism."""

from __future__ import annotations

import random
import time

from routing.solver.checker import check_solution
from routing.solver.portfolio import solve
from routing.solver.problem import StopRef, WarmStart
from tests.routing.test_solver_support import delivery, grid_problem, stop_keys, vehicle


def random_problem(n: int = 40, seed: int = 7, vehicles: int = 4):
    rng = random.Random(seed)
    points = [(50, 50)] + [(rng.randint(0, 100), rng.randint(0, 100)) for _ in range(n)]
    jobs = [delivery(f"j{i}", i, demand=(rng.randint(1, 5),), service_seconds=300) for i in range(1, n + 1)]
    fleet = [vehicle(f"v{k}", capacity=(40,)) for k in range(vehicles)]
    return grid_problem(points, jobs=jobs, vehicles=fleet)


def test_warm_start_keeps_done_stops_in_place():
    problem = random_problem()
    # A deliberately poor prefix: far-apart stops that the optimiser would reorder.
    done = [StopRef("j1", "delivery"), StopRef("j17", "delivery"), StopRef("j33", "delivery")]
    warm = WarmStart(routes={"v2": tuple(done)}, fixed_stop_counts={"v2": 3})

    solution = solve(problem, time_limit_seconds=1.0, warm_start=warm)

    assert check_solution(problem, solution) == []
    route = next(r for r in solution.routes if r.vehicle_key == "v2")
    assert [(s.job_key, s.kind) for s in route.stops[:3]] == [(r.job_key, r.kind) for r in done]
    assert not solution.unassigned


def test_warm_start_from_full_routes_is_used():
    problem = random_problem(n=12)
    keys = [job.key for job in problem.jobs]
    routes = {"v0": tuple(StopRef(k, "delivery") for k in keys[:6]), "v1": tuple(StopRef(k, "delivery") for k in keys[6:])}

    solution = solve(problem, time_limit_seconds=0.5, warm_start=WarmStart(routes=routes), solution_limit=1)

    # One solution allowed: the warm start itself comes back.
    assert stop_keys(solution) == [[(k, "delivery") for k in keys[:6]], [(k, "delivery") for k in keys[6:]]]


def test_cancel_hook_stops_early_with_the_best_solution():
    problem = random_problem(n=60, vehicles=8)
    for engine in ("ortools", "pyvrp"):
        started = time.monotonic()
        solution = solve(problem, time_limit_seconds=20, engine=engine,
                         should_stop=lambda: time.monotonic() - started > 0.5)
        assert time.monotonic() - started < 3
        assert check_solution(problem, solution) == []
        assert not solution.unassigned


def test_progress_is_reported_a_few_times_per_second():
    problem = random_problem()
    for engine in ("ortools", "pyvrp"):
        calls = []
        solve(problem, time_limit_seconds=1.0, engine=engine, on_progress=calls.append)
        assert 1 <= len(calls) <= 8
        assert all(0 <= p.elapsed_fraction <= 1 for p in calls)
        assert calls[-1].best_cost <= calls[0].best_cost


def test_same_seed_same_answer_with_a_solution_limit():
    problem = random_problem()
    for engine in ("ortools", "pyvrp"):
        first = solve(problem, time_limit_seconds=30, engine=engine, seed=3, solution_limit=200)
        second = solve(problem, time_limit_seconds=30, engine=engine, seed=3, solution_limit=200)
        assert stop_keys(first) == stop_keys(second)
