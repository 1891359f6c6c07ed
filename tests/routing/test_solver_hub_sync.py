"""Hub synchronisation: a last-mile route leaves only after its parcels arrive."""

from __future__ import annotations

from routing.solver.checker import check_solution
from routing.solver.portfolio import solve
from routing.solver.problem import HubLink
from tests.routing.test_solver_support import delivery, grid_problem, pickup, vehicle

LINE = [(0, 0), (10, 0), (20, 0), (30, 0), (40, 0), (50, 0)]
FIRST = frozenset({"first-mile"})
LAST = frozenset({"last-mile"})


def two_tier(links):
    # The first-mile van collects "in" at 50 (back at the hub at 10,000 s); the
    # parcel goes out again as "out". "early" must be delivered before 3,000 s.
    jobs = [
        pickup("in", 5, required_skills=FIRST),
        delivery("out", 1, required_skills=LAST),
        delivery("early", 2, window=(0, 3000), required_skills=LAST),
    ]
    fleet = [
        vehicle("collector", skills=FIRST),
        vehicle("courier-1", skills=LAST, fixed_cost=100.0),
        vehicle("courier-2", skills=LAST, fixed_cost=100.0),
    ]
    return grid_problem(LINE, jobs=jobs, vehicles=fleet, hub_links=tuple(links))


def test_without_sync_one_courier_does_both_deliveries():
    problem = two_tier([])

    solution = solve(problem, time_limit_seconds=0.5)

    assert check_solution(problem, solution) == []
    couriers = [r for r in solution.routes if r.vehicle_key.startswith("courier")]
    assert len(couriers) == 1


def test_sync_makes_the_courier_wait_for_the_parcel_and_changes_the_plan():
    problem = two_tier([HubLink("in", "out", handling_seconds=600)])

    solution = solve(problem, time_limit_seconds=0.5)

    assert check_solution(problem, solution) == []
    assert not solution.unassigned
    routes = {r.vehicle_key: r for r in solution.routes}
    out_route = next(r for r in solution.routes if any(s.job_key == "out" for s in r.stops))
    assert out_route.start_seconds >= routes["collector"].end_seconds + 600
    # "early" cannot wait that long, so a second courier is now needed.
    assert len([k for k in routes if k.startswith("courier")]) == 2


def test_unserved_feeder_keeps_the_linked_delivery_out():
    problem = two_tier([HubLink("in", "out", handling_seconds=600)])
    problem = grid_problem(
        LINE,
        jobs=list(problem.jobs),
        vehicles=[v for v in problem.vehicles if v.key != "collector"],
        hub_links=problem.hub_links,
    )

    solution = solve(problem, time_limit_seconds=0.5)

    assert check_solution(problem, solution) == []
    assert {u.job_key for u in solution.unassigned} == {"in", "out"}
