"""Each constraint on its own: the solver honours it and the checker agrees."""

from __future__ import annotations

import pytest

from routing.solver.checker import check_solution
from routing.solver.portfolio import solve
from routing.solver.problem import Break, Job, TimeWindow, Visit
from routing.solver.solution import (
    REASON_CAPACITY,
    REASON_FLEET,
    REASON_NO_SKILL,
    REASON_WINDOW,
)
from tests.routing.test_solver_support import delivery, grid_problem, pair, pickup, stop_keys, vehicle

LINE = [(0, 0), (10, 0), (20, 0), (30, 0), (40, 0), (50, 0)]
ENGINES = ["ortools", "auto"]


def feasible(problem, **kwargs):
    solution = solve(problem, time_limit_seconds=kwargs.pop("seconds", 0.5), **kwargs)
    assert check_solution(problem, solution) == []
    return solution


@pytest.mark.parametrize("engine", ENGINES)
def test_capacity_is_respected_in_every_dimension(engine):
    # Weight allows 2 stops per vehicle, volume only 1 of the bulky ones.
    jobs = [
        delivery("light-a", 1, demand=(10, 1)),
        delivery("light-b", 2, demand=(10, 1)),
        delivery("bulky-a", 3, demand=(5, 8)),
        delivery("bulky-b", 4, demand=(5, 8)),
    ]
    fleet = [vehicle(f"v{k}", capacity=(20, 10)) for k in range(3)]
    problem = grid_problem(LINE, jobs=jobs, vehicles=fleet, dims=("grams", "cm3"))

    solution = feasible(problem, engine=engine)

    assert not solution.unassigned
    for route in solution.routes:
        assert sum(1 for s in route.stops if s.job_key.startswith("bulky")) <= 1
        assert route.load_at_start[0] <= 20 and route.load_at_start[1] <= 10


def test_mixed_deliveries_and_pickups_count_the_load_at_every_stop():
    # Leaving with 8 and collecting 5 before delivering would overflow 10.
    jobs = [delivery("out", 3, demand=(8,)), pickup("in", 1, demand=(5,))]
    problem = grid_problem(LINE, jobs=jobs, vehicles=[vehicle("v", capacity=(10,))])

    solution = feasible(problem, engine="ortools")

    assert stop_keys(solution) == [[("out", "delivery"), ("in", "pickup")]]


@pytest.mark.parametrize("engine", ENGINES)
def test_time_windows_order_the_route(engine):
    # Geographic order is 1,2,3 but the windows force 3 first.
    jobs = [
        delivery("far-first", 3, window=(3000, 3600)),
        delivery("near-late", 1, window=(7000, 9000)),
        delivery("mid-late", 2, window=(8000, 9000)),
    ]
    problem = grid_problem(LINE, jobs=jobs)

    solution = feasible(problem, engine=engine)

    assert stop_keys(solution)[0][0] == ("far-first", "delivery")
    for stop in solution.routes[0].stops:
        job = problem.job_by_key()[stop.job_key]
        window = job.delivery.time_windows[0]
        assert window.start_seconds <= stop.start_seconds <= window.end_seconds


def test_several_windows_per_visit_use_one_of_them():
    job = Job("two-windows", delivery=Visit(2, 60, (TimeWindow(100, 200), TimeWindow(5000, 6000))), demand=(1,))
    problem = grid_problem(LINE, jobs=[job], vehicles=[vehicle("v", shift_start_seconds=1000)])

    solution = feasible(problem)

    assert 5000 <= solution.routes[0].stops[0].start_seconds <= 6000


@pytest.mark.parametrize("engine", ENGINES)
def test_pickup_precedes_delivery_on_the_same_vehicle(engine):
    jobs = [pair("p1", 4, 1), pair("p2", 2, 5), pair("p3", 5, 3)]
    problem = grid_problem(LINE, jobs=jobs, vehicles=[vehicle("a"), vehicle("b")])

    solution = feasible(problem, engine=engine)

    for route in solution.routes:
        order = [(s.job_key, s.kind) for s in route.stops]
        for key in {k for k, _ in order}:
            assert order.index((key, "pickup")) < order.index((key, "delivery"))
    assert not solution.unassigned


@pytest.mark.parametrize("engine", ENGINES)
def test_skills_send_jobs_to_capable_vehicles(engine):
    jobs = [delivery("cold", 1, required_skills=frozenset({"fridge"})), delivery("plain", 5)]
    fleet = [vehicle("van"), vehicle("reefer", skills=frozenset({"fridge"}))]
    problem = grid_problem(LINE, jobs=jobs, vehicles=fleet)

    solution = feasible(problem, engine=engine)

    by_vehicle = {r.vehicle_key: [s.job_key for s in r.stops] for r in solution.routes}
    assert "cold" in by_vehicle["reefer"]


@pytest.mark.parametrize("engine", ENGINES)
def test_shift_end_and_max_duration_split_the_work(engine):
    # Each out-and-back to 50 takes 10,000 s; one vehicle may drive 11,000 s.
    jobs = [delivery("a", 5, service_seconds=600), delivery("b", 4, service_seconds=600)]
    fleet = [vehicle(f"v{k}", max_duration_seconds=11_000, shift_end_seconds=12_000) for k in range(2)]
    problem = grid_problem(LINE, jobs=jobs, vehicles=fleet)

    solution = feasible(problem, engine=engine)

    assert len(solution.routes) == 2
    assert all(r.duration_seconds <= 11_000 for r in solution.routes)


@pytest.mark.parametrize("engine", ENGINES)
def test_different_start_and_end_depots(engine):
    # Starts at 0, ends at 5: the stops are visited on the way.
    problem = grid_problem(
        LINE,
        jobs=[delivery("x", 3), delivery("y", 1)],
        vehicles=[vehicle("v", start_location_index=0, end_location_index=5)],
    )

    solution = feasible(problem, engine=engine)

    assert stop_keys(solution) == [[("y", "delivery"), ("x", "delivery")]]
    assert solution.distance_meters == 5000


@pytest.mark.parametrize("engine", ENGINES)
def test_open_ended_route_stops_at_its_last_visit(engine):
    problem = grid_problem(LINE, jobs=[delivery("x", 3)], vehicles=[vehicle("v", end_location_index=None)])

    solution = feasible(problem, engine=engine)

    assert solution.distance_meters == 3000
    assert solution.routes[0].end_seconds == solution.routes[0].stops[-1].departure_seconds


def test_break_is_taken_inside_its_window_and_outside_service():
    jobs = [delivery(f"j{i}", i, service_seconds=900) for i in range(1, 6)]
    brk = Break(window_start_seconds=2000, window_end_seconds=3000, duration_seconds=1800)
    problem = grid_problem(LINE, jobs=jobs, vehicles=[vehicle("v", break_=brk)])

    solution = feasible(problem, engine="ortools")

    route = solution.routes[0]
    assert 2000 <= route.break_start_seconds <= 3000


def test_unassigned_jobs_carry_the_reason():
    jobs = [
        delivery("needs-crane", 1, required_skills=frozenset({"crane"})),
        delivery("too-heavy", 2, demand=(500,)),
        delivery("too-late", 3, window=(0, 10)),  # 3000 s away
        delivery("ok-1", 4, demand=(60,)),
        delivery("ok-2", 5, demand=(60,)),  # one van, capacity 100: one of these stays
    ]
    problem = grid_problem(LINE, jobs=jobs, vehicles=[vehicle("van", capacity=(100,))])

    solution = feasible(problem, engine="ortools")

    reasons = {u.job_key: u.reason for u in solution.unassigned}
    assert reasons["needs-crane"] == REASON_NO_SKILL
    assert reasons["too-heavy"] == REASON_CAPACITY
    assert reasons["too-late"] == REASON_WINDOW
    assert sorted(reasons.values()).count(REASON_FLEET) == 1


def test_low_priority_job_is_dropped_first():
    jobs = [
        delivery("vip", 5, demand=(60,), priority=5, unassigned_penalty=1000),
        delivery("normal", 1, demand=(60,), unassigned_penalty=1000),
    ]
    problem = grid_problem(LINE, jobs=jobs, vehicles=[vehicle("van", capacity=(100,))])

    solution = feasible(problem, engine="ortools")

    assert [u.job_key for u in solution.unassigned] == ["normal"]
