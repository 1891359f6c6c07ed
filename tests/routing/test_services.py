"""Optimization job services, run in this process on the real PostgreSQL and Redis:
create, claim, run, save, cancel, recover. The real-worker tests are in
test_jobs_worker.py."""

from __future__ import annotations

import dataclasses
import os
import random
import socket
import subprocess
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from routing import services
from routing.models import OptimizationAttempt, OptimizationJob, Route, RouteStop
from routing.services import (
    LEASE_SECONDS,
    MAX_ATTEMPTS,
    OptimizationInputError,
    OptimizationJobBusy,
    optimization_job_cancel,
    optimization_job_claim,
    optimization_job_create,
    optimization_job_recover_stale,
    optimization_job_result_save,
    optimization_job_run,
)
from shipments.models import OutboxMessage
from shipments.outbox import optimization_group
from shipments.states import InvalidTransition, LegStatus, Mile
from tests import factories
from tests.routing.test_jobs_support import (
    GroupListener,
    first_mile_day,
    last_mile_day,
    mile_legs,
    near,
    return_make,
    service_day,
)

pytestmark = pytest.mark.django_db

S = OptimizationJob.Status


def job_for(day, **kwargs) -> OptimizationJob:
    kwargs.setdefault("time_limit_seconds", 1)
    return optimization_job_create(
        service_date=day.day,
        hub=day.hub,
        mile=Mile.LAST,
        vehicles=day.vehicles,
        **kwargs,
    )


def planned_leg_ids(job: OptimizationJob) -> list[int]:
    return list(
        RouteStop.legs.through.objects.filter(routestop__route__job=job).values_list(
            "leg_id", flat=True
        )
    )


def status_messages(job: OptimizationJob) -> list[str]:
    return [
        m.payload["status"]
        for m in OutboxMessage.objects.filter(
            type=services.STATUS_OUTBOX_TYPE, groups=[optimization_group(job.pk)]
        ).order_by("id")
    ]


# ---------------------------------------------------------------------------
# Run and save
# ---------------------------------------------------------------------------


def test_run_saves_draft_routes_that_serve_every_leg_once(hubs):
    day = last_mile_day(hubs, count=10, vehicles=2)
    job = job_for(day)

    job = optimization_job_run(job_id=job.pk)

    assert job.status == S.SUCCEEDED, job.error
    assert job.progress == 1.0
    assert job.finished_at is not None
    assert job.attempts == 1
    legs = day.legs(Mile.LAST)
    assert sorted(planned_leg_ids(job)) == sorted(leg.pk for leg in legs)
    routes = list(Route.objects.filter(job=job).prefetch_related("stops__legs"))
    assert [r.pk for r in routes] == sorted(job.statistics["route_ids"])
    assert job.statistics["unassigned"] == []
    assert job.statistics["checker_violations"] == 0
    windows = {
        leg.pk: (leg.shipment.delivery_window_start, leg.shipment.delivery_window_end)
        for leg in legs
    }
    for route in routes:
        assert route.status == Route.Status.DRAFT
        assert route.vehicle_id in day.vehicle_ids
        assert route.hub == day.hub
        assert route.service_date == day.day
        stops = list(route.stops.all())
        assert [s.sequence for s in stops] == list(range(len(stops)))
        assert stops[0].kind == stops[-1].kind == RouteStop.Kind.HUB
        assert route.planned_start == stops[0].planned_departure
        assert route.planned_end == stops[-1].planned_arrival
        assert len(route.geometry) == len(stops)
        previous = route.planned_start
        for stop in stops[1:-1]:
            assert stop.kind == RouteStop.Kind.DELIVERY
            assert previous <= stop.planned_arrival <= stop.planned_departure
            for leg in stop.legs.all():
                start, end = windows[leg.pk]
                # Service starts inside the customer's window.
                assert (
                    start
                    <= stop.planned_departure - timedelta(seconds=stop.service_seconds)
                    <= end
                )
            previous = stop.planned_departure
        assert route.distance_meters > 0
        assert route.cost > 0
    assert job.statistics["distance_meters"] == sum(r.distance_meters for r in routes)
    assert status_messages(job) == [S.QUEUED, S.RUNNING, S.SUCCEEDED]


def test_a_first_mile_job_brings_every_pickup_back_to_the_hub(hubs):
    day = first_mile_day(hubs, count=5)

    job = optimization_job_run(
        job_id=optimization_job_create(
            service_date=day.day,
            hub=day.hub,
            mile=Mile.FIRST,
            vehicles=day.vehicles,
            time_limit_seconds=1,
        ).pk
    )

    assert job.status == S.SUCCEEDED, job.error
    assert sorted(planned_leg_ids(job)) == sorted(
        leg.pk for leg in day.legs(Mile.FIRST)
    )
    kinds = set(RouteStop.objects.filter(route__job=job).values_list("kind", flat=True))
    assert kinds == {RouteStop.Kind.PICKUP, RouteStop.Kind.HUB}


def test_a_return_job_collects_before_it_sends_back_through_the_hub(hubs):
    day = service_day()
    monaco = hubs[1]
    shipments = [
        return_make(
            customer=near(factories.MONACO_HUB, random.Random(n), 0.01),
            shipper=(43.7350, 7.4200),
            day=day,
        )
        for n in range(3)
    ]
    vehicles = [factories.vehicle_make(monaco) for _ in range(2)]

    job = optimization_job_run(
        job_id=optimization_job_create(
            service_date=day,
            hub=monaco,
            mile=Mile.RETURN,
            vehicles=vehicles,
            time_limit_seconds=2,
        ).pk
    )

    assert job.status == S.SUCCEEDED, job.error
    assert job.statistics["unassigned"] == []
    stops = {
        leg_id: stop
        for stop in RouteStop.objects.filter(route__job=job).select_related("route")
        for leg_id in stop.legs.values_list("pk", flat=True)
    }
    for shipment in shipments:
        collect, send_back = mile_legs(shipment)[Mile.RETURN]
        # The parcel is back at the hub (and handled) before it leaves again.
        handled = stops[collect.pk].route.planned_end + timedelta(
            minutes=monaco.handling_minutes
        )
        assert stops[send_back.pk].route.planned_start >= handled


def test_a_finished_job_delivered_again_does_nothing(hubs):
    day = last_mile_day(hubs, count=4)
    job = optimization_job_run(job_id=job_for(day).pk)
    routes_before = list(Route.objects.filter(job=job).values_list("pk", flat=True))

    again = optimization_job_run(job_id=job.pk)

    assert again.status == S.SUCCEEDED
    assert again.attempts == 1
    assert (
        list(Route.objects.filter(job=job).values_list("pk", flat=True))
        == routes_before
    )
    assert status_messages(job) == [S.QUEUED, S.RUNNING, S.SUCCEEDED]


def test_a_parcel_no_vehicle_can_carry_is_left_out_with_its_reason(hubs):
    day = last_mile_day(hubs, count=3)
    heavy = last_mile_day(
        hubs, count=1, day=day.day, seed=5, weight_kg="950"
    ).shipments[0]
    heavy_leg = mile_legs(heavy)[Mile.LAST][0]

    job = optimization_job_run(job_id=job_for(day).pk)

    assert job.status == S.SUCCEEDED
    assert job.statistics["unassigned"] == [
        {
            "leg_id": heavy_leg.pk,
            "shipment_id": heavy.pk,
            "reason": "over_every_vehicle_capacity",
        }
    ]
    assert heavy_leg.pk not in planned_leg_ids(job)
    assert len(planned_leg_ids(job)) == 3


def test_a_new_plan_supersedes_older_drafts_of_the_same_legs_but_not_published_routes(
    hubs,
):
    day = last_mile_day(
        hubs, count=6, vehicles=4, capacity_parcels=2
    )  # 3 routes or more
    first = optimization_job_run(job_id=job_for(day).pk)
    first_routes = list(Route.objects.filter(job=first))
    assert len(first_routes) >= 3
    published = first_routes[0]
    published.status = Route.Status.PUBLISHED
    published.save(update_fields=["status"])
    published_legs = set(
        RouteStop.legs.through.objects.filter(routestop__route=published).values_list(
            "leg_id", flat=True
        )
    )
    # Publishing assigns the legs (dispatch's service does it with events).
    from shipments.models import Leg

    Leg.objects.filter(pk__in=published_legs).update(status=LegStatus.ASSIGNED)

    second = optimization_job_run(job_id=job_for(day).pk)

    assert second.status == S.SUCCEEDED
    assert sorted(second.statistics["superseded_route_ids"]) == sorted(
        r.pk for r in first_routes[1:]
    )
    assert list(Route.objects.filter(job=first)) == [published]
    assert set(planned_leg_ids(second)).isdisjoint(published_legs)


def test_the_plan_is_checked_before_it_is_saved(hubs, monkeypatch):
    day = last_mile_day(hubs, count=3)
    real_solve = services.optimization_job_solve

    def solve_and_corrupt(built, **kwargs):
        solution = real_solve(built, **kwargs)
        route = dataclasses.replace(solution.routes[0], distance_meters=1)
        return dataclasses.replace(solution, routes=(route, *solution.routes[1:]))

    monkeypatch.setattr(services.run, "optimization_job_solve", solve_and_corrupt)

    job = optimization_job_run(job_id=job_for(day).pk)

    assert job.status == S.FAILED
    assert "independent check" in job.error
    assert "distance_mismatch" in job.error
    assert not Route.objects.filter(job=job).exists()


def test_legs_taken_since_the_job_was_made_are_reported_not_planned(hubs):
    day = last_mile_day(hubs, count=3)
    legs = day.legs(Mile.LAST)
    job = job_for(day, legs=legs)
    legs[0].status = LegStatus.ASSIGNED
    legs[0].save(update_fields=["status"])

    job = optimization_job_run(job_id=job.pk)

    assert job.status == S.SUCCEEDED
    assert sorted(planned_leg_ids(job)) == sorted(leg.pk for leg in legs[1:])
    assert job.statistics["unassigned"] == [
        {
            "leg_id": legs[0].pk,
            "shipment_id": legs[0].shipment_id,
            "reason": "leg_no_longer_open",
        }
    ]


def test_a_hub_closed_since_the_job_was_made_fails_the_job_with_the_reason(hubs):
    day = last_mile_day(hubs, count=2)
    job = job_for(day)
    day.hub.opening_hours = {"sun": ["08:00", "12:00"]}
    day.hub.save(update_fields=["opening_hours"])

    job = optimization_job_run(job_id=job.pk)

    assert job.status == S.FAILED
    assert "closed" in job.error


def test_vehicles_retired_since_the_job_was_made_fail_the_job_with_the_reason(hubs):
    day = last_mile_day(hubs, count=2)
    job = job_for(day)
    for vehicle in day.vehicles:
        vehicle.is_active = False
        vehicle.save(update_fields=["is_active"])

    job = optimization_job_run(job_id=job.pk)

    assert job.status == S.FAILED
    assert "in service" in job.error


# ---------------------------------------------------------------------------
# Claims: one live attempt, take-over of a dead one, a cap on attempts
# ---------------------------------------------------------------------------


def test_a_live_attempt_makes_another_delivery_wait(hubs):
    day = last_mile_day(hubs, count=2)
    job = job_for(day)
    claim = optimization_job_claim(job_id=job.pk)
    assert claim.run_token is not None

    with pytest.raises(OptimizationJobBusy) as busy:
        optimization_job_run(job_id=job.pk)

    assert 1 <= busy.value.retry_after_seconds <= LEASE_SECONDS + 1
    job.refresh_from_db()
    assert job.status == S.RUNNING
    assert job.attempts == 1
    assert job.run_token == claim.run_token


def test_a_dead_attempt_is_taken_over_and_cannot_save_afterwards(hubs):
    day = last_mile_day(hubs, count=3)
    job = job_for(day)
    dead = optimization_job_claim(job_id=job.pk)
    OptimizationJob.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=LEASE_SECONDS + 1)
    )
    built = services.optimization_job_build(job)
    late_solution = services.optimization_job_solve(
        built, time_limit_seconds=0.5, seed=1
    )

    job = optimization_job_run(job_id=job.pk)
    assert job.status == S.SUCCEEDED
    assert job.attempts == 2
    routes = set(Route.objects.filter(job=job).values_list("pk", flat=True))

    after = optimization_job_result_save(
        job_id=job.pk,
        run_token=dead.run_token,
        built=built,
        solution=late_solution,
        wall_seconds=0.5,
    )

    assert after.status == S.SUCCEEDED
    assert after.run_token != dead.run_token
    assert set(Route.objects.filter(job=job).values_list("pk", flat=True)) == routes
    first, second = OptimizationAttempt.objects.filter(job=job).order_by("number")
    assert (first.run_token, first.outcome) == (dead.run_token, "lost")
    assert first.last_seen_at < first.ended_at <= second.started_at
    assert (second.run_token, second.outcome) == (job.run_token, "succeeded")
    assert second.started_at < second.ended_at == job.finished_at


def test_a_job_whose_attempts_all_died_is_given_up(hubs):
    day = last_mile_day(hubs, count=2)
    job = job_for(day)
    OptimizationJob.objects.filter(pk=job.pk).update(
        status=S.RUNNING,
        attempts=MAX_ATTEMPTS,
        heartbeat_at=timezone.now() - timedelta(seconds=LEASE_SECONDS + 1),
    )

    job = optimization_job_run(job_id=job.pk)

    assert job.status == S.FAILED
    assert job.attempts == MAX_ATTEMPTS
    assert f"Gave up after {MAX_ATTEMPTS} attempts" in job.error
    assert not Route.objects.filter(job=job).exists()


def test_recovery_resends_jobs_nobody_runs_and_only_those(hubs):
    day = last_mile_day(hubs, count=2)
    dead, alive, fresh, old_queued = (job_for(day) for _ in range(4))
    now = timezone.now()
    OptimizationJob.objects.filter(pk=dead.pk).update(
        status=S.RUNNING, heartbeat_at=now - timedelta(minutes=5)
    )
    OptimizationJob.objects.filter(pk=alive.pk).update(
        status=S.RUNNING, heartbeat_at=now
    )
    OptimizationJob.objects.filter(pk=old_queued.pk).update(
        queued_at=now - timedelta(hours=1)
    )

    resent = optimization_job_recover_stale(now=now)

    assert sorted(resent) == sorted([dead.pk, old_queued.pk])
    dead.refresh_from_db()
    assert dead.status == S.QUEUED  # nobody runs it: it waits for its new message
    assert dead.queued_at == now
    fresh.refresh_from_db()
    assert fresh.status == S.QUEUED
    alive.refresh_from_db()
    assert alive.status == S.RUNNING


def test_a_starting_worker_resends_every_queued_job_a_dead_worker_may_have_held(hubs):
    day = last_mile_day(hubs, count=2)
    queued, running = job_for(day), job_for(day)
    optimization_job_claim(job_id=running.pk)

    assert optimization_job_recover_stale() == []  # nothing lost or dead
    assert optimization_job_recover_stale(worker_started=True) == [queued.pk]


@pytest.mark.parametrize(
    ("elapsed", "expected"), [(0.0, 20.0), (3.5, 16.5), (19.8, 1.0), (45.0, 1.0)]
)
def test_the_search_gets_what_building_left_of_the_job_limit_and_never_none(
    elapsed, expected
):
    job = OptimizationJob(time_limit_seconds=20)

    assert services.run.search_seconds(job, elapsed=elapsed) == pytest.approx(expected)


def gone_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.run(
        ["sh", "-c", "echo $$"], check=True, capture_output=True, text=True
    )
    return int(process.stdout)


def test_a_job_whose_solver_process_is_gone_is_requeued_without_waiting_a_lease(
    hubs,
):
    day = last_mile_day(hubs, count=2)
    killed, alive = job_for(day), job_for(day)
    for job, pid in ((killed, gone_pid()), (alive, os.getpid())):
        claim = optimization_job_claim(job_id=job.pk)
        OptimizationAttempt.objects.filter(run_token=claim.run_token).update(
            worker=f"{socket.gethostname()}:{pid}"
        )

    resent = optimization_job_recover_stale()  # both heartbeats are fresh

    assert resent == [killed.pk]
    killed.refresh_from_db()
    assert killed.status == S.QUEUED
    attempt = OptimizationAttempt.objects.get(job=killed)
    assert attempt.outcome == "lost"
    assert attempt.ended_at is not None
    assert OptimizationJob.objects.get(pk=alive.pk).status == S.RUNNING
    assert status_messages(killed) == ["queued", "running", "queued"]

    job = optimization_job_run(job_id=killed.pk)  # the message sent again

    assert job.status == S.SUCCEEDED
    assert job.attempts == 2
    assert list(
        OptimizationAttempt.objects.filter(job=job).values_list("number", "outcome")
    ) == [(1, "lost"), (2, "succeeded")]


# ---------------------------------------------------------------------------
# Cancel
# ---------------------------------------------------------------------------


def test_cancelling_a_queued_job_ends_it_and_its_delivery_does_nothing(hubs):
    day = last_mile_day(hubs, count=2)
    job = job_for(day)

    job = optimization_job_cancel(job_id=job.pk)

    assert job.status == S.CANCELLED
    assert job.finished_at is not None
    assert optimization_job_run(job_id=job.pk).status == S.CANCELLED
    assert not Route.objects.filter(job=job).exists()
    assert status_messages(job) == [S.QUEUED, S.CANCELLED]


def test_cancelling_twice_is_harmless_and_a_finished_job_cannot_be_cancelled(hubs):
    day = last_mile_day(hubs, count=2)
    cancelled = optimization_job_cancel(job_id=job_for(day).pk)
    assert optimization_job_cancel(job_id=cancelled.pk).status == S.CANCELLED

    done = optimization_job_run(job_id=job_for(day).pk)
    with pytest.raises(InvalidTransition):
        optimization_job_cancel(job_id=done.pk)
    done.refresh_from_db()
    assert done.status == S.SUCCEEDED
    assert not done.cancel_requested


def _cancel_later(
    job_id: int, *, after_seconds: float, keep_best: bool
) -> threading.Thread:
    def cancel() -> None:
        time.sleep(after_seconds)
        try:
            optimization_job_cancel(job_id=job_id, keep_best=keep_best)
        finally:
            connection.close()

    thread = threading.Thread(target=cancel, daemon=True)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("keep_best", [True, False])
def test_cancelling_a_running_job_stops_the_search_and_keeps_the_best_plan_if_asked(
    hubs, keep_best
):
    day = last_mile_day(hubs, count=12, vehicles=3)
    job = job_for(day, time_limit_seconds=60)
    canceller = _cancel_later(job.pk, after_seconds=2.0, keep_best=keep_best)

    started = time.monotonic()
    job = optimization_job_run(job_id=job.pk)
    elapsed = time.monotonic() - started
    canceller.join(5)

    assert job.status == S.CANCELLED
    assert elapsed < 10, f"search ran {elapsed:.1f} s after a cancel at 2 s"
    if keep_best:
        assert job.statistics["stopped_early"] is True
        assert sorted(planned_leg_ids(job)) == sorted(
            leg.pk for leg in day.legs(Mile.LAST)
        )
        assert "kept" in job.error
    else:
        assert not Route.objects.filter(job=job).exists()
        assert "discarded" in job.error


# ---------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_progress_reaches_the_job_row_and_the_channel_group_at_most_four_times_a_second(
    hubs,
):
    day = last_mile_day(hubs, count=15, vehicles=3)
    job = job_for(day, time_limit_seconds=3)
    seen_running: list[tuple[float, float | None]] = []

    def watch_row(stop: threading.Event) -> None:
        try:
            while not stop.wait(0.1):
                row = OptimizationJob.objects.values(
                    "status", "progress", "best_cost"
                ).get(pk=job.pk)
                if row["status"] == S.RUNNING and row["progress"] > 0:
                    seen_running.append((row["progress"], row["best_cost"]))
        finally:
            connection.close()

    stop = threading.Event()
    watcher = threading.Thread(target=watch_row, args=(stop,), daemon=True)
    with GroupListener(optimization_group(job.pk)) as listener:
        watcher.start()
        job = optimization_job_run(job_id=job.pk)
        time.sleep(0.3)
    stop.set()
    watcher.join(5)

    assert job.status == S.SUCCEEDED
    progress = listener.of_type(services.PROGRESS_MESSAGE_TYPE)
    assert len(progress) >= 3
    assert all(m["job_id"] == job.pk and 0 <= m["progress"] < 1 for m in progress)
    assert [m["progress"] for m in progress] == sorted(m["progress"] for m in progress)
    # Counted on the sender's clock: delivery jitter is not the sender's rate.
    assert (
        listener.max_rate_per_second(services.PROGRESS_MESSAGE_TYPE, "elapsed_seconds")
        <= 4
    )
    assert seen_running
    assert all(cost is not None for _, cost in seen_running)


# ---------------------------------------------------------------------------
# Create: the rules the API relies on
# ---------------------------------------------------------------------------


def test_create_selects_by_shipment_and_stores_the_selection(hubs):
    day = last_mile_day(hubs, count=3)

    job = job_for(day, shipments=[day.shipments[0].pk, day.shipments[2]])

    expected = {mile_legs(day.shipments[i])[Mile.LAST][0].pk for i in (0, 2)}
    assert set(job.legs.values_list("pk", flat=True)) == expected
    assert job.status == S.QUEUED
    assert job.seed == job.pk


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"vehicles": []}, "vehicles"),
        ({"hub": 10**9}, "hub"),
        ({"mile": Mile.MIDDLE}, "mile"),
        ({"time_limit_seconds": 0}, "time_limit_seconds"),
        ({"time_limit_seconds": 86_400}, "time_limit_seconds"),
        ({"objective_weights": {"speed": 1}}, "objective_weights"),
        ({"objective_weights": {"distance": float("nan")}}, "objective_weights"),
        ({"legs": [10**9]}, "legs"),
    ],
)
def test_create_refuses_bad_input_and_writes_nothing(hubs, kwargs, field):
    day = last_mile_day(hubs, count=1)
    arguments = {
        "service_date": day.day,
        "hub": day.hub,
        "mile": Mile.LAST,
        "vehicles": day.vehicles,
        **kwargs,
    }

    with pytest.raises(OptimizationInputError) as error:
        optimization_job_create(**arguments)

    assert error.value.field == field
    assert not OptimizationJob.objects.exists()
