"""Large jobs: decomposed by the solver core, parts fanned out as a Celery group
(OptimizationPart rows), solved by whichever worker claims them first, merged
and checked. The thresholds are lowered so a test-sized day decomposes."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta

import pytest
from django.utils import timezone

from config.celery import app as celery_app
from routing import services
from routing.models import OptimizationJob, OptimizationPart, RouteStop
from routing.problem_builder import (
    from_json,
    leg_list_in_scope,
    problem_build,
    problem_compact,
    solution_expand,
    to_json,
)
from routing.services import (
    optimization_job_create,
    optimization_job_run,
    optimization_part_claim,
    optimization_part_solve,
)
from routing.solver.checker import check_solution
from routing.solver.portfolio import solve
from routing.solver.problem import Problem
from routing.solver.solution import Solution
from shipments.states import Mile
from tests.routing.test_jobs_support import last_mile_day

pytestmark = pytest.mark.django_db

S = OptimizationJob.Status


@pytest.fixture
def small_decomposition(monkeypatch):
    """Decompose above 10 jobs into parts of about 8; nothing left in the queue."""
    monkeypatch.setattr(services.decomposition, "DECOMPOSE_THRESHOLD_JOBS", 10)
    monkeypatch.setattr(services.decomposition, "DECOMPOSE_CLUSTER_JOBS", 8)
    celery_app.control.purge()
    yield
    celery_app.control.purge()  # part tasks nobody consumed (no worker here)


def built_day(hubs, count=12):
    day = last_mile_day(hubs, count=count, vehicles=4)
    legs = list(leg_list_in_scope(service_date=day.day, hub=day.hub, mile=Mile.LAST))
    built = problem_build(
        service_date=day.day,
        hub=day.hub,
        mile=Mile.LAST,
        vehicles=day.vehicles,
        legs=legs,
    )
    return day, built


def test_problems_and_solutions_round_trip_through_json(hubs):
    _day, built = built_day(hubs, count=4)
    solution = solve(built.problem, time_limit_seconds=0.3, seed=1)

    problem_back = from_json(Problem, to_json(built.problem))
    solution_back = from_json(Solution, to_json(solution))

    assert problem_back == built.problem
    assert problem_back.matrix.duration_seconds == built.problem.matrix.duration_seconds
    assert solution_back == solution
    assert check_solution(problem_back, solution_back) == []


def test_a_compacted_part_solves_to_a_plan_valid_for_the_whole_problem(hubs):
    _day, built = built_day(hubs, count=6)
    whole = built.problem
    part = replace(whole, jobs=whole.jobs[:3])

    compact, old_index = problem_compact(part)
    solution = solution_expand(
        solve(compact, time_limit_seconds=0.3, seed=1), old_index
    )

    assert len(compact.locations) == 4  # the hub and three doors
    assert len(compact.matrix.distance_meters) == 4
    assert check_solution(part, solution) == []


def test_a_large_job_is_decomposed_and_one_worker_alone_solves_every_part(
    hubs, small_decomposition
):
    day = last_mile_day(hubs, count=24, vehicles=4)
    job = optimization_job_create(
        service_date=day.day,
        hub=day.hub,
        mile=Mile.LAST,
        vehicles=day.vehicles,
        time_limit_seconds=4,
    )

    # No worker runs here: the job's own process takes every part from the group.
    job = optimization_job_run(job_id=job.pk)

    assert job.status == S.SUCCEEDED, job.error
    assert job.statistics["parts"] == 3
    assert len(set(job.statistics["part_solvers"])) == 1
    assert job.statistics["checker_violations"] == 0
    assert job.statistics["unassigned"] == []
    planned = RouteStop.legs.through.objects.filter(routestop__route__job=job)
    assert sorted(planned.values_list("leg_id", flat=True)) == sorted(
        leg.pk for leg in day.legs(Mile.LAST)
    )
    assert not OptimizationPart.objects.filter(job=job).exists()  # cleared once saved
    # The parts share the time limit; the border repair ends by it.
    assert job.statistics["wall_seconds"] <= job.time_limit_seconds + 5


def _stored_part(hubs) -> OptimizationPart:
    day, built = built_day(hubs, count=3)
    job = optimization_job_create(
        service_date=day.day, hub=day.hub, mile=Mile.LAST, vehicles=day.vehicles
    )
    claim = services.optimization_job_claim(job_id=job.pk)
    compact, old_index = problem_compact(built.problem)
    return OptimizationPart.objects.create(
        job=job,
        run_token=claim.run_token,
        index=0,
        problem=to_json(compact),
        location_indices=old_index,
        time_limit_seconds=0.3,
        seed=1,
    )


def test_of_two_claims_on_a_part_exactly_one_wins(hubs):
    part = _stored_part(hubs)

    outcomes = [optimization_part_claim(part_id=part.pk) for _ in range(2)]

    assert outcomes == [True, False]
    part.refresh_from_db()
    assert part.status == OptimizationPart.Status.RUNNING
    assert part.claimed_by


def test_a_part_whose_solver_died_is_taken_over_and_a_done_part_is_left_alone(hubs):
    part = _stored_part(hubs)
    OptimizationPart.objects.filter(pk=part.pk).update(
        status=OptimizationPart.Status.RUNNING,
        claimed_by="dead-host:1",
        claimed_at=timezone.now() - timedelta(seconds=services.LEASE_SECONDS + 5),
    )

    assert optimization_part_solve(part_id=part.pk) == "done"
    part.refresh_from_db()
    assert part.status == OptimizationPart.Status.DONE
    assert part.claimed_by != "dead-host:1"
    solution = from_json(Solution, part.solution)
    assert check_solution(from_json(Problem, part.problem), solution) == []
    assert optimization_part_solve(part_id=part.pk) == "taken"  # a re-delivery


def test_a_cancelled_job_stops_its_parts(hubs):
    part = _stored_part(hubs)
    OptimizationPart.objects.filter(pk=part.pk).update(time_limit_seconds=60)
    OptimizationJob.objects.filter(pk=part.job_id).update(cancel_requested=True)

    started = time.monotonic()
    assert optimization_part_solve(part_id=part.pk) == "done"

    assert time.monotonic() - started < 5
