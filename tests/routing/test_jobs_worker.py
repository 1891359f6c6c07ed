"""Optimization jobs through a real Celery worker on Redis and PostgreSQL.

The worker is a subprocess (``celery -A config worker``) on this test's database
and Redis database; the test watches the job row, the outbox and the channel
group ``optimization.<id>`` from outside, as the dashboard would.

* a job goes queued → running (progress seen) → succeeded, routes saved;
* a worker SIGKILLed mid-job: its message stays unacknowledged (acks_late) until
  the visibility timeout, but the next worker to start sees the attempt's
  process gone, gives the job back to the queue and finishes it; a pool child
  SIGKILLed under prefork is requeued at once (reject_on_worker_lost);
* a job whose result is saved, delivered again, changes nothing;
* cancelling through the API stops the search on the worker and keeps its best plan;
* a decomposed job's parts go out as a Celery group and a worker solves some of
  them while the job's own process solves the rest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from config.celery import app as celery_app
from routing import services
from routing.models import OptimizationAttempt, OptimizationJob, Route, RouteStop
from routing.services import optimization_job_create
from routing.tasks import optimization_job_run_task
from shipments.models import OutboxMessage
from shipments.outbox import optimization_group
from shipments.states import Mile
from tests.routing.test_jobs_support import GroupListener, last_mile_day

pytestmark = [
    pytest.mark.worker,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

S = OptimizationJob.Status
BASE_DIR = Path(settings.BASE_DIR)
CELERY = str(Path(sys.executable).with_name("celery"))
# Short enough to wait for in a test, longer than any task here runs and than
# services.LEASE_SECONDS, so the re-delivered attempt finds the heartbeat dead.
TEST_VISIBILITY_TIMEOUT_SECONDS = services.LEASE_SECONDS + 2


class Worker:
    """One ``celery worker`` process on the test database; logs in a file."""

    def __init__(self, tmp_path: Path, *, pool: str = "solo"):
        self.name = f"h4-{uuid.uuid4().hex[:8]}@%h"
        self.log_path = tmp_path / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.pool = pool
        self.process: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        db = connection.settings_dict
        user = db["USER"] or "postgres"
        password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
        host = db["HOST"] or "127.0.0.1"
        port = db["PORT"] or "5432"
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": f"postgres://{user}{password}@{host}:{port}/{db['NAME']}",
            "REDIS_URL": settings.REDIS_URL,
            "CELERY_VISIBILITY_TIMEOUT_SECONDS": str(TEST_VISIBILITY_TIMEOUT_SECONDS),
            "DB_CONN_MAX_AGE": "0",
        }

    def start(self, timeout_seconds: float = 60) -> Worker:
        command = [
            CELERY,
            "-A",
            "config",
            "worker",
            f"--pool={self.pool}",
            "-l",
            "info",
        ]
        command += ["-n", self.name, "--without-gossip", "--without-mingle"]
        if self.pool == "prefork":
            command += ["--concurrency=1"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own worker, fixed arguments
                command,
                cwd=BASE_DIR,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(
            lambda: " ready." in self.log(),
            timeout_seconds,
            what="worker ready",
            worker=self,
        )
        return self

    def log(self) -> str:
        return (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )

    def children(self) -> list[int]:
        out = subprocess.run(  # noqa: S603
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return [int(pid) for pid in out.split()]

    def kill(self) -> None:
        """SIGKILL: no shutdown, no acknowledgement, nothing restored."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # The whole session: a prefork worker's children go too.
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def wait_for(
    predicate: Callable[[], object],
    timeout_seconds: float,
    *,
    what: str,
    worker: Worker | None = None,
    interval_seconds: float = 0.1,
):
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_seconds)
    log = worker.log()[-3000:] if worker else ""
    raise AssertionError(
        f"timed out after {timeout_seconds} s waiting for {what}\n{log}"
    )


@pytest.fixture
def workers(tmp_path):
    """Start workers with ``workers(...)``; all are stopped when the test ends.
    The queue starts empty (other tests may have sent messages to it)."""
    celery_app.control.purge()
    started: list[Worker] = []

    def start(**kwargs) -> Worker:
        worker = Worker(tmp_path, **kwargs).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def job_row(job_id: int) -> OptimizationJob:
    return OptimizationJob.objects.get(pk=job_id)


def running_with_progress(job_id: int) -> OptimizationJob | None:
    job = job_row(job_id)
    return job if job.status == S.RUNNING and job.progress > 0 else None


def finished(job_id: int) -> OptimizationJob | None:
    job = job_row(job_id)
    return job if job.is_finished else None


def status_trail(job_id: int) -> list[str]:
    return [
        m.payload["status"]
        for m in OutboxMessage.objects.filter(
            type=services.STATUS_OUTBOX_TYPE, groups=[optimization_group(job_id)]
        ).order_by("id")
    ]


def planned_leg_ids(job_id: int) -> list[int]:
    return list(
        RouteStop.legs.through.objects.filter(
            routestop__route__job_id=job_id
        ).values_list("leg_id", flat=True)
    )


def start_job(day, *, time_limit_seconds: int) -> OptimizationJob:
    # Commits (transactional test), so the task is sent to Redis on the way out.
    return optimization_job_create(
        service_date=day.day,
        hub=day.hub,
        mile=Mile.LAST,
        vehicles=day.vehicles,
        time_limit_seconds=time_limit_seconds,
    )


def test_a_job_runs_on_the_worker_from_queued_through_running_to_succeeded(
    hubs, workers
):
    day = last_mile_day(hubs, count=15, vehicles=3)
    job = start_job(day, time_limit_seconds=3)
    assert job_row(job.pk).status == S.QUEUED

    with GroupListener(optimization_group(job.pk)) as listener:
        worker = workers()
        seen = wait_for(
            lambda: running_with_progress(job.pk), 60, what="progress", worker=worker
        )
        done = wait_for(lambda: finished(job.pk), 60, what="the end", worker=worker)

    assert 0 < seen.progress < 1
    assert seen.best_cost is not None
    assert done.status == S.SUCCEEDED, done.error
    assert done.attempts == 1
    assert done.progress == 1.0
    assert status_trail(job.pk) == [S.QUEUED, S.RUNNING, S.SUCCEEDED]
    assert sorted(planned_leg_ids(job.pk)) == sorted(
        leg.pk for leg in day.legs(Mile.LAST)
    )
    assert sorted(Route.objects.filter(job=job).values_list("pk", flat=True)) == sorted(
        done.statistics["route_ids"]
    )
    progress = listener.of_type(services.PROGRESS_MESSAGE_TYPE)
    assert progress, "no progress message reached the channel group"
    assert (
        listener.max_rate_per_second(services.PROGRESS_MESSAGE_TYPE, "elapsed_seconds")
        <= 4
    )
    # The time limit bounds the search: wall time within the limit plus 5 s.
    assert done.statistics["wall_seconds"] <= done.time_limit_seconds + 5


def test_a_job_delivered_again_after_its_result_is_saved_changes_nothing(hubs, workers):
    day = last_mile_day(hubs, count=5, vehicles=2)
    job = start_job(day, time_limit_seconds=1)
    worker = workers()
    done = wait_for(lambda: finished(job.pk), 60, what="the job", worker=worker)
    routes = sorted(Route.objects.filter(job=job).values_list("pk", flat=True))
    trail = status_trail(job.pk)

    for _ in range(2):  # a redelivery, and a duplicate send
        optimization_job_run_task.delay(job.pk)
    # The worker takes one message at a time, in order: once a job sent after
    # the duplicates is done, the duplicates have been handled.
    # It plans only its own parcels: a plan of the whole day would supersede the
    # first job's drafts (one draft plan per leg).
    other = last_mile_day(hubs, count=2, day=day.day, seed=3)
    sentinel = optimization_job_create(
        service_date=other.day,
        hub=other.hub,
        mile=Mile.LAST,
        vehicles=other.vehicles,
        shipments=other.shipments,
        time_limit_seconds=1,
    )
    wait_for(lambda: finished(sentinel.pk), 60, what="the sentinel job", worker=worker)

    again = job_row(job.pk)
    assert done.status == again.status == S.SUCCEEDED
    assert again.attempts == 1
    assert again.finished_at == done.finished_at
    assert sorted(Route.objects.filter(job=job).values_list("pk", flat=True)) == routes
    assert status_trail(job.pk) == trail


def test_a_worker_killed_mid_job_has_its_job_requeued_when_a_worker_starts(
    hubs, workers
):
    day = last_mile_day(hubs, count=15, vehicles=3)
    job = start_job(day, time_limit_seconds=4)
    first = workers()
    running = wait_for(
        lambda: running_with_progress(job.pk), 60, what="progress", worker=first
    )

    first.kill()
    killed_at = time.monotonic()
    assert (
        job_row(job.pk).status == S.RUNNING
    )  # nothing finished it: the process is gone
    assert not Route.objects.filter(job=job).exists()

    # Redis would hand the unacknowledged message out again only after the
    # visibility timeout; the starting worker sees the attempt's process gone,
    # gives the job back to the queue and sends it again at once.
    second = workers()
    requeued = OptimizationAttempt.objects.get(job=job, number=1)
    assert requeued.outcome == "lost"
    assert requeued.ended_at is not None
    done = wait_for(lambda: finished(job.pk), 90, what="the re-run", worker=second)
    recovery_seconds = time.monotonic() - killed_at

    assert done.status == S.SUCCEEDED, done.error
    assert done.attempts == 2
    assert done.statistics["attempt"] == 2
    assert done.run_token != running.run_token
    assert status_trail(job.pk) == [
        S.QUEUED,
        S.RUNNING,
        S.QUEUED,
        S.RUNNING,
        S.SUCCEEDED,
    ]
    assert sorted(planned_leg_ids(job.pk)) == sorted(
        leg.pk for leg in day.legs(Mile.LAST)
    )
    assert Route.objects.filter(job=job).count() == len(done.statistics["route_ids"])
    print(f"SIGKILL to finished: {recovery_seconds:.1f} s")  # noqa: T201 - a measured figure


def test_a_pool_child_killed_mid_job_is_requeued_at_once_and_finished(hubs, workers):
    day = last_mile_day(hubs, count=15, vehicles=3)
    job = start_job(day, time_limit_seconds=4)
    worker = workers(pool="prefork")
    wait_for(lambda: running_with_progress(job.pk), 60, what="progress", worker=worker)
    (child,) = worker.children()

    os.kill(child, signal.SIGKILL)
    killed_at = time.monotonic()
    done = wait_for(lambda: finished(job.pk), 90, what="the re-run", worker=worker)

    assert done.status == S.SUCCEEDED, done.error
    assert done.attempts == 2
    assert (
        "WorkerLostError" in worker.log() or "Worker exited prematurely" in worker.log()
    )
    assert Route.objects.filter(job=job).count() == len(done.statistics["route_ids"])
    # The requeue is immediate; the wait is the dead attempt's lease running out.
    assert time.monotonic() - killed_at < services.LEASE_SECONDS + 4 + 20


def test_cancelling_through_the_api_stops_the_search_on_the_worker(
    hubs, workers, dispatcher_client
):
    day = last_mile_day(hubs, count=15, vehicles=3)
    job = start_job(day, time_limit_seconds=120)
    worker = workers()
    wait_for(lambda: running_with_progress(job.pk), 60, what="progress", worker=worker)

    response = dispatcher_client.post(
        f"/api/v1/optimizations/{job.pk}/cancel/", {}, format="json"
    )
    asked_at = time.monotonic()
    done = wait_for(lambda: finished(job.pk), 30, what="the cancel", worker=worker)
    stop_seconds = time.monotonic() - asked_at

    assert response.status_code == 202
    assert done.status == S.CANCELLED
    assert stop_seconds < 5, f"the search went on {stop_seconds:.1f} s after the cancel"
    # Kept on cancel (the default): the best plan found so far, as draft routes.
    assert done.statistics["stopped_early"] is True
    assert sorted(planned_leg_ids(job.pk)) == sorted(
        leg.pk for leg in day.legs(Mile.LAST)
    )
    assert status_trail(job.pk) == [S.QUEUED, S.RUNNING, S.CANCELLED]
    print(f"cancel to stopped: {stop_seconds:.2f} s")  # noqa: T201 - a measured figure


def test_parts_of_a_decomposed_job_are_solved_by_the_worker_in_parallel(
    hubs, workers, monkeypatch
):
    monkeypatch.setattr(services.decomposition, "DECOMPOSE_THRESHOLD_JOBS", 10)
    monkeypatch.setattr(services.decomposition, "DECOMPOSE_CLUSTER_JOBS", 8)
    day = last_mile_day(hubs, count=24, vehicles=4)
    # The job runs here (with the lowered thresholds), not as a task: the worker
    # is up before the job exists (its start-up sweep re-sends queued jobs), and
    # the job's own message is not sent.
    worker = workers()
    monkeypatch.setattr(
        services.jobs.optimization_job_run_task, "apply_async_on_commit", lambda **_: None
    )
    job = start_job(day, time_limit_seconds=6)

    started = time.monotonic()
    done = services.optimization_job_run(job_id=job.pk)
    wall_seconds = time.monotonic() - started

    assert done.status == S.SUCCEEDED, done.error
    assert done.statistics["parts"] == 3
    solvers = set(done.statistics["part_solvers"])
    here = services.solver_name()
    assert here in solvers
    assert solvers - {here}, (
        f"the worker solved no part: {solvers}\n{worker.log()[-2000:]}"
    )
    assert sorted(planned_leg_ids(job.pk)) == sorted(
        leg.pk for leg in day.legs(Mile.LAST)
    )
    assert wall_seconds <= done.time_limit_seconds + 5


def test_a_job_that_kills_every_worker_running_it_is_given_up_after_the_cap(
    hubs, workers
):
    """The poison case: each attempt's process dies (here: SIGKILL of the pool
    child each time the job runs). After MAX_ATTEMPTS the next delivery fails
    the job instead of running it again."""
    day = last_mile_day(hubs, count=8, vehicles=2)
    job = start_job(day, time_limit_seconds=60)
    worker = workers(pool="prefork")

    for attempt in range(1, services.MAX_ATTEMPTS + 1):
        wait_for(
            lambda attempt=attempt: (
                job_row(job.pk).attempts == attempt
                and job_row(job.pk).status == S.RUNNING
            ),
            services.LEASE_SECONDS + 60,
            what=f"attempt {attempt}",
            worker=worker,
        )
        time.sleep(0.5)  # let the attempt get into its search
        (child,) = worker.children()
        os.kill(child, signal.SIGKILL)

    done = wait_for(
        lambda: finished(job.pk),
        services.LEASE_SECONDS + 60,
        what="the give-up",
        worker=worker,
    )

    assert done.status == S.FAILED
    assert done.attempts == services.MAX_ATTEMPTS
    assert f"Gave up after {services.MAX_ATTEMPTS} attempts" in done.error
    assert not Route.objects.filter(job=job).exists()
    assert status_trail(job.pk) == [S.QUEUED] + [S.RUNNING] * services.MAX_ATTEMPTS + [
        S.FAILED
    ]
