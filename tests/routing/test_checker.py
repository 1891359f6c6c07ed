"""The checker catches a hand-made violation of each kind (it has teeth)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from routing.solver.checker import check_solution
from routing.solver.problem import Break, HubLink, StopRef
from routing.solver.solution import assemble_solution, timed_route
from tests.routing.test_solver_support import delivery, grid_problem, pair, pickup, vehicle

LINE = [(0, 0), (10, 0), (20, 0), (30, 0), (40, 0), (50, 0)]


def hand_made(problem, plan: dict[str, list[tuple[str, str]]]):
    """A solution exactly as planned (times computed honestly), whatever its merit."""
    vehicles = {v.key: v for v in problem.vehicles}
    routes = [
        timed_route(problem, vehicles[vkey], [StopRef(k, kind) for k, kind in stops],
                    departure_seconds=vehicles[vkey].shift_start_seconds)
        for vkey, stops in plan.items()
    ]
    served = {k for stops in plan.values() for k, _ in stops}
    return assemble_solution(problem, routes, served, engine="hand", search_seconds=0.0)


def kinds(problem, solution) -> set[str]:
    return {v.kind for v in check_solution(problem, solution)}


def test_a_sound_plan_has_no_violations():
    problem = grid_problem(LINE, jobs=[delivery("a", 1), delivery("b", 2)])
    assert check_solution(problem, hand_made(problem, {"v0": [("a", "delivery"), ("b", "delivery")]})) == []


@pytest.mark.parametrize("dimension", [0, 1])
def test_capacity_in_each_dimension(dimension):
    demand = [(1, 1), (1, 1)]
    big = list(demand[0])
    big[dimension] = 9
    jobs = [delivery("a", 1, demand=tuple(big)), delivery("b", 2, demand=demand[1])]
    problem = grid_problem(LINE, jobs=jobs, vehicles=[vehicle("v0", capacity=(5, 5))], dims=("grams", "cm3"))
    assert "capacity" in kinds(problem, hand_made(problem, {"v0": [("a", "delivery"), ("b", "delivery")]}))


def test_capacity_after_a_pickup():
    jobs = [pickup("a", 1, demand=(4,)), pickup("b", 2, demand=(4,))]
    problem = grid_problem(LINE, jobs=jobs, vehicles=[vehicle("v0", capacity=(5,))])
    assert "capacity" in kinds(problem, hand_made(problem, {"v0": [("a", "pickup"), ("b", "pickup")]}))


def test_time_window_missed():
    problem = grid_problem(LINE, jobs=[delivery("a", 5, window=(0, 100))])
    assert "time_window" in kinds(problem, hand_made(problem, {"v0": [("a", "delivery")]}))


def test_delivery_before_pickup_and_split_pairs():
    problem = grid_problem(LINE, jobs=[pair("p", 1, 2)], vehicles=[vehicle("a"), vehicle("b")])
    assert "delivery_before_pickup" in kinds(problem, hand_made(problem, {"a": [("p", "delivery"), ("p", "pickup")]}))
    split = hand_made(problem, {"a": [("p", "pickup")], "b": [("p", "delivery")]})
    assert "pair_split" in kinds(problem, split)


def test_missing_half_of_a_pair():
    problem = grid_problem(LINE, jobs=[pair("p", 1, 2)])
    assert "pair_incomplete" in kinds(problem, hand_made(problem, {"v0": [("p", "pickup")]}))


def test_skill_missing():
    problem = grid_problem(LINE, jobs=[delivery("a", 1, required_skills=frozenset({"adr"}))])
    assert "skill_missing" in kinds(problem, hand_made(problem, {"v0": [("a", "delivery")]}))


def test_shift_end_and_max_duration():
    problem = grid_problem(LINE, jobs=[delivery("a", 5)], vehicles=[vehicle("v0", shift_end_seconds=5000, max_duration_seconds=4000)])
    found = kinds(problem, hand_made(problem, {"v0": [("a", "delivery")]}))
    assert {"shift_end", "max_duration"} <= found


def test_wrong_depots_and_misreported_figures():
    problem = grid_problem(LINE, jobs=[delivery("a", 2)], vehicles=[vehicle("v0", end_location_index=5)])
    solution = hand_made(problem, {"v0": [("a", "delivery")]})
    route = solution.routes[0]
    lied = replace(solution, routes=(replace(route, end_location_index=0, distance_meters=route.distance_meters - 1,
                                             duration_seconds=route.duration_seconds + 5, cost=route.cost + 1),))
    found = kinds(problem, lied)
    assert {"wrong_end_depot", "distance_mismatch", "duration_mismatch", "cost_mismatch"} <= found


def test_arrival_faster_than_travel():
    problem = grid_problem(LINE, jobs=[delivery("a", 3)])
    solution = hand_made(problem, {"v0": [("a", "delivery")]})
    route = solution.routes[0]
    stop = route.stops[0]
    early = replace(stop, arrival_seconds=stop.arrival_seconds - 100, start_seconds=stop.start_seconds - 100,
                    departure_seconds=stop.departure_seconds - 100)
    assert "arrival_too_early" in kinds(problem, replace(solution, routes=(replace(route, stops=(early,)),)))


def test_job_visited_twice_or_lost():
    problem = grid_problem(LINE, jobs=[delivery("a", 1), delivery("b", 2)], vehicles=[vehicle("x"), vehicle("y")])
    twice = hand_made(problem, {"x": [("a", "delivery")], "y": [("a", "delivery")]})
    found = kinds(problem, twice)
    assert "visited_twice" in found
    lost = replace(twice, unassigned=())
    assert "job_lost" in kinds(problem, lost)


def test_break_missing_or_outside_its_window():
    brk = Break(window_start_seconds=1000, window_end_seconds=1200, duration_seconds=600)
    problem = grid_problem(LINE, jobs=[delivery("a", 5)], vehicles=[vehicle("v0", break_=brk)])
    solution = hand_made(problem, {"v0": [("a", "delivery")]})
    assert "break_missing" in kinds(problem, solution)
    route = solution.routes[0]
    late = replace(solution, routes=(replace(route, break_start_seconds=9000),))
    assert "break_window" in kinds(problem, late)


def test_hub_sync_violated():
    jobs = [pickup("in", 5), delivery("out", 1)]
    problem = grid_problem(
        LINE, jobs=jobs, vehicles=[vehicle("first-mile"), vehicle("last-mile")],
        hub_links=(HubLink("in", "out", handling_seconds=600),),
    )
    solution = hand_made(problem, {"first-mile": [("in", "pickup")], "last-mile": [("out", "delivery")]})
    assert "hub_sync" in kinds(problem, solution)
