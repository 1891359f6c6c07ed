"""The life of an optimization job: states, attempts, claim, finish, cancel, recover.

    queued ──claim──▶ running ──save──▶ succeeded
      ▲                 │ │  └──────────▶ failed / cancelled
      └──── recover ────┘ └─ claim by a later delivery (the attempt is dead)

Each claim opens an OptimizationAttempt with a new run token; every write of an
attempt carries its token, so an attempt that lost the job (its worker died and
the job was given back or taken over) can no longer touch it. The recovery
sweep gives a dead attempt's job back to the queue and sends it again.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from shipments.outbox import optimization_group, outbox_enqueue
from shipments.states import InvalidTransition

from ..models import (
    OptimizationAttempt,
    OptimizationJob,
)
from ..tasks import optimization_job_run_task

logger = logging.getLogger(__name__)

S = OptimizationJob.Status

# The lifecycle of a job. RUNNING → RUNNING is a new attempt taking over from a
# dead one (its heartbeat stopped); RUNNING → QUEUED is the recovery sweep giving
# a dead attempt's job back to the queue, so "running" always means a live solver.
JOB_TRANSITIONS: dict[str, frozenset[str]] = {
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED, S.FAILED}),
    S.RUNNING: frozenset({S.RUNNING, S.QUEUED, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}

# A job whose worker died this many times is given up (a poison job: it kills
# whatever runs it, e.g. out of memory), instead of coming back forever.
MAX_ATTEMPTS = 3

# The watch thread beats this often; a running job whose heartbeat is older than
# the lease is presumed dead and may be taken over.
HEARTBEAT_SECONDS = 1.0
LEASE_SECONDS = 15

# The recovery sweep gives back to the queue a running job whose attempt is dead:
# silent for a lease, or at once when its process on this host is gone. A job
# queued this long without being claimed has its message sent again (it was lost).
RECOVER_QUEUED_AFTER_SECONDS = 300

# The task's soft limit covers the search plus building, checking and saving;
# the hard limit is a backstop above it.
TASK_SOFT_MARGIN_SECONDS = 60
TASK_HARD_MARGIN_SECONDS = 30

STATUS_OUTBOX_TYPE = "optimization.status"


class OptimizationJobBusy(Exception):
    """Another attempt is running the job and is alive; try again later."""

    def __init__(self, *, job_id: int, retry_after_seconds: int):
        super().__init__(f"optimization job {job_id} is running elsewhere")
        self.job_id = job_id
        self.retry_after_seconds = retry_after_seconds


def optimization_job_task_limits(job: OptimizationJob) -> dict[str, int]:
    """Celery time limits for ``job``: soft above the search, hard above that."""
    soft = 2 * job.time_limit_seconds + TASK_SOFT_MARGIN_SECONDS
    return {"soft_time_limit": soft, "time_limit": soft + TASK_HARD_MARGIN_SECONDS}


def _move(job: OptimizationJob, target: str) -> None:
    if target not in JOB_TRANSITIONS[job.status]:
        raise InvalidTransition(
            entity="optimization job",
            current=job.status,
            target=target,
            allowed=JOB_TRANSITIONS[job.status],
        )
    job.status = target


def job_status_payload(job: OptimizationJob) -> dict[str, Any]:
    statistics = job.statistics or {}
    return {
        "job_id": job.pk,
        "status": job.status,
        "progress": job.progress,
        "best_cost": job.best_cost,
        "attempts": job.attempts,
        "route_ids": statistics.get("route_ids", []),
        "unassigned_count": statistics.get("unassigned_count", 0),
        "error": job.error,
    }


def job_status_message(job: OptimizationJob) -> None:
    """The durable status message (the relay publishes it after commit)."""
    outbox_enqueue(
        type=STATUS_OUTBOX_TYPE,
        groups=[optimization_group(job.pk)],
        payload=job_status_payload(job),
    )


def job_finish(
    job: OptimizationJob,
    status: str,
    *,
    error: str = "",
    statistics: dict | None = None,
) -> OptimizationJob:
    """Close a locked job: status, times, the outbox message. Inside the transaction."""
    _move(job, status)
    job.error = error[:4000]
    job.finished_at = timezone.now()
    _attempt_close(job, outcome=status, now=job.finished_at)
    job.heartbeat_at = None
    if statistics is not None:
        job.statistics = statistics
    if status == S.SUCCEEDED:
        job.progress = 1.0
    job.save(
        update_fields=[
            "status",
            "error",
            "finished_at",
            "heartbeat_at",
            "statistics",
            "progress",
            "best_cost",
            "engine",
        ]
    )
    job_status_message(job)
    return job


def job_lock(job_id: int) -> OptimizationJob:
    return OptimizationJob.objects.select_for_update().get(pk=job_id)


def solver_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


def _attempt_close(job: OptimizationJob, *, outcome: str, now: datetime) -> None:
    """End the job's current attempt, if one is open (inside the job's lock)."""
    if job.run_token is None:
        return
    lost = outcome == OptimizationAttempt.Outcome.LOST
    OptimizationAttempt.objects.filter(
        job=job, run_token=job.run_token, ended_at__isnull=True
    ).update(
        ended_at=now,
        outcome=outcome,
        # A lost attempt was last seen at its last heartbeat; the others now.
        last_seen_at=job.heartbeat_at if lost else now,
    )


def _process_is_gone(worker: str) -> bool:
    """True when ``worker`` ("host:pid") ran on this host and no such process
    exists any more. A process elsewhere, or a pid in use again, is not known
    to be gone: the heartbeat lease decides for those."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists (owned by another user)
    return False


def _attempt_is_dead(job: OptimizationJob, *, now: datetime) -> bool:
    """A running job's attempt has stopped: its heartbeat is older than the lease,
    or its process on this host is gone (a killed worker, noticed at once).

    Mistaking a live attempt for a dead one costs only work: the run token
    stops the old attempt's writes, so one result is saved either way."""
    if job.heartbeat_at is None or (
        (now - job.heartbeat_at).total_seconds() >= LEASE_SECONDS
    ):
        return True
    worker = (
        OptimizationAttempt.objects.filter(job=job, run_token=job.run_token)
        .values_list("worker", flat=True)
        .first()
    )
    return bool(worker) and _process_is_gone(worker)


@dataclass(frozen=True)
class Claim:
    job: OptimizationJob
    run_token: uuid.UUID | None  # None: nothing to run (finished, cancelled, given up)


def optimization_job_claim(*, job_id: int, now: datetime | None = None) -> Claim:
    """Take the job for this attempt, or say why not.

    Raises OptimizationJobBusy when a live attempt holds it, and
    OptimizationJob.DoesNotExist when there is no such job.
    """
    now = now or timezone.now()
    with transaction.atomic():
        job = job_lock(job_id)
        if job.is_finished:
            return Claim(job, None)
        if job.status == S.RUNNING:
            if not _attempt_is_dead(job, now=now):
                age_seconds = (now - job.heartbeat_at).total_seconds()
                raise OptimizationJobBusy(
                    job_id=job.pk,
                    retry_after_seconds=math.ceil(LEASE_SECONDS - age_seconds) + 1,
                )
            _attempt_close(job, outcome=OptimizationAttempt.Outcome.LOST, now=now)
        if job.cancel_requested:
            # Queued, or its attempt died: there is no search whose best could be kept.
            return Claim(
                job_finish(
                    job, S.CANCELLED, error="Cancelled before a plan was found."
                ),
                None,
            )
        if job.attempts >= MAX_ATTEMPTS:
            return Claim(
                job_finish(
                    job,
                    S.FAILED,
                    error=f"Gave up after {job.attempts} attempts that did not finish "
                    "(the worker died or was stopped each time).",
                ),
                None,
            )
        _move(job, S.RUNNING)
        job.attempts += 1
        job.run_token = uuid.uuid4()
        job.heartbeat_at = now
        job.started_at = job.started_at or now
        job.progress = 0
        job.error = ""
        OptimizationAttempt.objects.create(
            job=job,
            number=job.attempts,
            run_token=job.run_token,
            worker=solver_name(),
            started_at=now,
            last_seen_at=now,
        )
        job.save(
            update_fields=[
                "status",
                "attempts",
                "run_token",
                "heartbeat_at",
                "started_at",
                "progress",
                "error",
            ]
        )
        job_status_message(job)
        return Claim(job, job.run_token)


def job_fail(job_id: int, run_token: uuid.UUID, error: str) -> OptimizationJob:
    with transaction.atomic():
        job = job_lock(job_id)
        if job.run_token != run_token or job.is_finished:
            return job
        return job_finish(job, S.FAILED, error=error)


@transaction.atomic
def optimization_job_cancel(*, job_id: int, keep_best: bool = True) -> OptimizationJob:
    """Cancel a job: a queued one at once, a running one by asking its search to
    stop (it ends within about a second, its best plan saved if ``keep_best``).

    Cancelling a cancelled job changes nothing; a succeeded or failed job raises
    InvalidTransition (409).
    """
    job = job_lock(job_id)
    if job.status == S.CANCELLED:
        return job
    if job.status in (S.SUCCEEDED, S.FAILED):
        _move(job, S.CANCELLED)  # raises: a finished job stays as it is
    job.cancel_requested = True
    job.keep_best_on_cancel = keep_best
    job.save(update_fields=["cancel_requested", "keep_best_on_cancel"])
    if job.status == S.QUEUED:
        return job_finish(job, S.CANCELLED, error="Cancelled before it started.")
    return job


def optimization_job_recover_stale(
    *, now: datetime | None = None, worker_started: bool = False
) -> list[int]:
    """Give back to the queue the jobs nobody is running, and send them again.

    A running job whose attempt is dead (see _attempt_is_dead) goes back to
    queued at once: its worker died holding the message, which the broker would
    only deliver again after the visibility timeout (an hour). A job queued for
    RECOVER_QUEUED_AFTER_SECONDS is sent again too (its message was lost), and
    every queued job when a worker has just started (``worker_started``): a
    worker that died may have received their messages without claiming them
    yet. The claim decides what happens: run, or give up after MAX_ATTEMPTS; a
    duplicate message finds the job taken or finished and does nothing.
    """
    now = now or timezone.now()
    requeued = [
        job_id
        for job_id in OptimizationJob.objects.filter(status=S.RUNNING).values_list(
            "pk", flat=True
        )
        if _requeue_if_dead(job_id, now=now)
    ]
    queued = OptimizationJob.objects.filter(status=S.QUEUED).exclude(pk__in=requeued)
    if not worker_started:
        queued = queued.filter(
            queued_at__lt=now - timedelta(seconds=RECOVER_QUEUED_AFTER_SECONDS)
        )
    forgotten = list(queued.values_list("pk", flat=True))
    resent = requeued + forgotten
    for job in OptimizationJob.objects.filter(pk__in=resent).only(
        "pk", "time_limit_seconds"
    ):
        optimization_job_run_task.apply_async(
            args=[job.pk], **optimization_job_task_limits(job)
        )
    return resent


def _requeue_if_dead(job_id: int, *, now: datetime) -> bool:
    with transaction.atomic():
        job = job_lock(job_id)
        if job.status != S.RUNNING or not _attempt_is_dead(job, now=now):
            return False
        _attempt_close(job, outcome=OptimizationAttempt.Outcome.LOST, now=now)
        _move(job, S.QUEUED)
        job.queued_at = now
        job.heartbeat_at = None
        job.save(update_fields=["status", "queued_at", "heartbeat_at"])
        job_status_message(job)
        return True
