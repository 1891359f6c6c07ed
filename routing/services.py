"""Optimization jobs: create, run, cancel, and save the result as draft routes.

    optimization_job_create ── on commit ──▶ tasks.optimization_job_run_task(job_id)
                                                     │ (acks_late: a lost worker's job
                                                     │  is delivered again)
    optimization_job_run(job_id) ◀───────────────────┘ also called directly (seed_demo)
      1. claim   lock the row: queued, or running with a dead heartbeat → running,
                 attempts + 1, a new run token; finished → nothing to do (a
                 re-delivered job whose result is saved is a no-op); attempts
                 used up → failed (a job that kills its worker stops coming back)
      2. build   problem_builder: open legs, vehicles, matrix → Problem
      3. solve   the solver portfolio; a watch thread beats the heartbeat and
                 turns a cancel request into should_stop(); progress goes to the
                 job row and the channel group optimization.<id> (≤ 4 per second).
                 Above DECOMPOSE_THRESHOLD_JOBS: solver.decompose splits the
                 problem, its parts go out as a Celery group (OptimizationPart
                 rows) and the job's worker solves parts nobody has taken yet
                 while it waits, then the borders are repaired
      4. check   the independent checker: any violation fails the job, nothing saved
      5. save    one transaction: draft Route/RouteStop rows, older drafts holding
                 the same legs superseded, the job finished, one outbox message

Every write of an attempt carries its run token: an attempt that lost the job
(its heartbeat went stale and a re-delivery took over) can no longer touch it.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync
from celery import group
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Count, Prefetch, ProtectedError, QuerySet
from django.utils import timezone

from dispatch.models import Vehicle
from shipments.errors import DomainError
from shipments.models import Hub, Leg, Shipment
from shipments.outbox import optimization_group, outbox_enqueue
from shipments.states import InvalidTransition, Mile

from . import problem_builder
from .models import (
    OptimizationAttempt,
    OptimizationJob,
    OptimizationPart,
    Route,
    RouteStop,
)
from .problem_builder import BuiltProblem
from .solver import decompose
from .solver.checker import check_solution
from .solver.portfolio import solve
from .solver.problem import Problem
from .solver.progress import Progress
from .solver.solution import Solution
from .tasks import optimization_job_run_task, optimization_part_solve_task

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
# Progress reaches the job row and the channel group at most this often: never
# more than 4 messages inside any one second.
PROGRESS_MIN_INTERVAL_SECONDS = 0.3
# The recovery sweep gives back to the queue a running job whose attempt is dead:
# silent for a lease, or at once when its process on this host is gone. A job
# queued this long without being claimed has its message sent again (it was lost).
RECOVER_QUEUED_AFTER_SECONDS = 300
# The task's soft limit covers the search plus building, checking and saving;
# the hard limit is a backstop above it.
TASK_SOFT_MARGIN_SECONDS = 60
TASK_HARD_MARGIN_SECONDS = 30

MAX_VEHICLES_PER_JOB = 500
MAX_LEGS_PER_JOB = 10_000
SERVICE_DATE_MAX_DAYS_AGO = 1
SERVICE_DATE_MAX_DAYS_AHEAD = 90
OBJECTIVE_WEIGHT_KEYS = frozenset(problem_builder.DEFAULT_OBJECTIVE_WEIGHTS)
OBJECTIVE_WEIGHT_MAX = 1000.0

PROGRESS_MESSAGE_TYPE = (
    "optimization.progress"  # consumers' handler: optimization_progress
)
STATUS_OUTBOX_TYPE = "optimization.status"


class OptimizationInputError(DomainError):
    code = "invalid_optimization"


class OptimizationJobBusy(Exception):
    """Another attempt is running the job and is alive; try again later."""

    def __init__(self, *, job_id: int, retry_after_seconds: int):
        super().__init__(f"optimization job {job_id} is running elsewhere")
        self.job_id = job_id
        self.retry_after_seconds = retry_after_seconds


# ---------------------------------------------------------------------------
# Read
# ---------------------------------------------------------------------------


def optimization_job_list() -> QuerySet[OptimizationJob]:
    """Jobs with what their API shape shows, in three queries per page (jobs with
    hub and author, then their vehicles)."""
    return (
        OptimizationJob.objects.select_related("hub", "created_by")
        .prefetch_related(Prefetch("vehicles", queryset=Vehicle.objects.only("pk")))
        .annotate(selected_leg_count=Count("legs", distinct=True))
        .order_by("-created_at", "-id")
    )


# ---------------------------------------------------------------------------
# Create
# ---------------------------------------------------------------------------


def _ids(values: Iterable[Any] | None) -> list[int]:
    return list(dict.fromkeys(getattr(value, "pk", value) for value in values or []))


def _resolve_hub(hub: Hub | int) -> Hub:
    found = (
        Hub.objects.select_related("location")
        .filter(pk=getattr(hub, "pk", hub))
        .first()
    )
    if found is None:
        raise OptimizationInputError("Unknown hub.", field="hub")
    if not found.is_active:
        raise OptimizationInputError(f"Hub {found.code} is not active.", field="hub")
    return found


def _check_mile(mile: str) -> None:
    if mile == Mile.MIDDLE:
        raise OptimizationInputError(
            "The middle mile is planned as line-haul trips, not by optimization jobs.",
            field="mile",
        )
    if mile not in problem_builder.PLANNABLE_MILES:
        raise OptimizationInputError(f"Unknown mile {mile!r}.", field="mile")


def _check_service_date(service_date: date, hub: Hub) -> None:
    today = timezone.localdate()
    if not (
        today - timedelta(days=SERVICE_DATE_MAX_DAYS_AGO)
        <= service_date
        <= today + timedelta(days=SERVICE_DATE_MAX_DAYS_AHEAD)
    ):
        raise OptimizationInputError(
            f"The service date must lie between {SERVICE_DATE_MAX_DAYS_AGO} day before "
            f"and {SERVICE_DATE_MAX_DAYS_AHEAD} days after today.",
            field="service_date",
        )
    if problem_builder.hub_opening_seconds(hub, service_date) is None:
        raise OptimizationInputError(
            f"Hub {hub.code} is closed on {service_date:%A %Y-%m-%d}.",
            field="service_date",
        )


def _check_time_limit(time_limit_seconds: Any) -> int:
    ceiling = settings.ROUTING_MAX_TIME_LIMIT_SECONDS
    if (
        isinstance(time_limit_seconds, bool)
        or not isinstance(time_limit_seconds, int)
        or not 1 <= time_limit_seconds <= ceiling
    ):
        raise OptimizationInputError(
            f"The time limit must be a whole number of seconds from 1 to {ceiling}.",
            field="time_limit_seconds",
        )
    return time_limit_seconds


def _check_weights(objective_weights: Any) -> dict[str, float]:
    if objective_weights is None:
        return {}
    if not isinstance(objective_weights, dict):
        raise OptimizationInputError(
            "Objective weights are an object of numbers.", field="objective_weights"
        )
    unknown = sorted(set(objective_weights) - OBJECTIVE_WEIGHT_KEYS)
    if unknown:
        raise OptimizationInputError(
            f"Unknown objective weights: {', '.join(map(str, unknown))}; known: "
            f"{', '.join(sorted(OBJECTIVE_WEIGHT_KEYS))}.",
            field="objective_weights",
        )
    weights = {}
    for name, value in objective_weights.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 <= value <= OBJECTIVE_WEIGHT_MAX
        ):
            raise OptimizationInputError(
                f"Weight {name} must be a number from 0 to {OBJECTIVE_WEIGHT_MAX:g}.",
                field="objective_weights",
            )
        weights[name] = float(value)
    return weights


def _resolve_vehicles(vehicles: Iterable[Any], hub: Hub) -> list[Vehicle]:
    ids = _ids(vehicles)
    if not ids:
        raise OptimizationInputError(
            "At least one vehicle is required.", field="vehicles"
        )
    if len(ids) > MAX_VEHICLES_PER_JOB:
        raise OptimizationInputError(
            f"At most {MAX_VEHICLES_PER_JOB} vehicles per job.", field="vehicles"
        )
    found = Vehicle.objects.in_bulk(ids)
    missing = [pk for pk in ids if pk not in found]
    if missing:
        raise OptimizationInputError(
            f"Unknown vehicles: {missing[:20]}.", field="vehicles"
        )
    inactive = [v.code for v in found.values() if not v.is_active]
    if inactive:
        raise OptimizationInputError(
            f"Vehicles not in service: {', '.join(sorted(inactive))}.", field="vehicles"
        )
    elsewhere = [v.code for v in found.values() if v.home_hub_id != hub.pk]
    if elsewhere:
        raise OptimizationInputError(
            f"Vehicles based at another hub than {hub.code}: "
            f"{', '.join(sorted(elsewhere))}.",
            field="vehicles",
        )
    return [found[pk] for pk in ids]


def _resolve_legs(
    *,
    legs: Iterable[Any] | None,
    shipments: Iterable[Any] | None,
    hub: Hub,
    mile: str,
    service_date: date,
) -> list[Leg]:
    """The explicit selection (legs, or the in-scope legs of some shipments), or
    every open leg of the day's scope when nothing is selected."""
    leg_ids, shipment_ids = _ids(legs), _ids(shipments)
    if len(leg_ids) > MAX_LEGS_PER_JOB or len(shipment_ids) > MAX_LEGS_PER_JOB:
        raise OptimizationInputError(
            f"At most {MAX_LEGS_PER_JOB} legs per job.", field="legs"
        )
    selectable = problem_builder.leg_list_selectable(hub=hub, mile=mile)
    selected: dict[int, Leg] = {}
    if leg_ids:
        known = set(Leg.objects.filter(pk__in=leg_ids).values_list("pk", flat=True))
        missing = [pk for pk in leg_ids if pk not in known]
        if missing:
            raise OptimizationInputError(f"Unknown legs: {missing[:20]}.", field="legs")
        selected.update(selectable.filter(pk__in=leg_ids).in_bulk())
        outside = [pk for pk in leg_ids if pk not in selected]
        if outside:
            raise OptimizationInputError(
                f"Legs that are not open {mile}-mile legs of hub {hub.code}: "
                f"{outside[:20]}.",
                field="legs",
            )
    if shipment_ids:
        known = set(
            Shipment.objects.filter(pk__in=shipment_ids).values_list("pk", flat=True)
        )
        missing = [pk for pk in shipment_ids if pk not in known]
        if missing:
            raise OptimizationInputError(
                f"Unknown shipments: {missing[:20]}.", field="shipments"
            )
        found = list(selectable.filter(shipment_id__in=shipment_ids))
        without = sorted(set(shipment_ids) - {leg.shipment_id for leg in found})
        if without:
            raise OptimizationInputError(
                f"Shipments without an open {mile}-mile leg at hub {hub.code}: "
                f"{without[:20]}.",
                field="shipments",
            )
        selected.update({leg.pk: leg for leg in found})
    if leg_ids or shipment_ids:
        return list(selected.values())
    in_scope = list(
        problem_builder.leg_list_in_scope(
            service_date=service_date, hub=hub, mile=mile
        )[: MAX_LEGS_PER_JOB + 1]
    )
    if not in_scope:
        raise OptimizationInputError(
            f"Nothing to plan: no open {mile}-mile legs at hub {hub.code} "
            f"on {service_date}.",
            field="legs",
        )
    if len(in_scope) > MAX_LEGS_PER_JOB:
        raise OptimizationInputError(
            f"More than {MAX_LEGS_PER_JOB} legs in scope: select legs or shipments.",
            field="legs",
        )
    return in_scope


def optimization_job_task_limits(job: OptimizationJob) -> dict[str, int]:
    """Celery time limits for ``job``: soft above the search, hard above that."""
    soft = 2 * job.time_limit_seconds + TASK_SOFT_MARGIN_SECONDS
    return {"soft_time_limit": soft, "time_limit": soft + TASK_HARD_MARGIN_SECONDS}


@transaction.atomic
def optimization_job_create(
    *,
    service_date: date,
    hub: Hub | int,
    mile: str,
    vehicles: Iterable[Vehicle | int],
    legs: Iterable[Leg | int] | None = None,
    shipments: Iterable[Shipment | int] | None = None,
    time_limit_seconds: int = 10,
    objective_weights: dict[str, float] | None = None,
    keep_best_on_cancel: bool = True,
    created_by=None,
) -> OptimizationJob:
    """Validate a plan request and queue it.

    Without ``legs`` or ``shipments`` the job plans every open leg of the
    day's scope (see problem_builder). Raises OptimizationInputError (400) with
    the offending field. Queues ``optimization_job_run_task`` after commit and
    writes an ``optimization.status`` outbox message.
    """
    hub = _resolve_hub(hub)
    _check_mile(mile)
    if not isinstance(service_date, date) or isinstance(service_date, datetime):
        raise OptimizationInputError("A date is required.", field="service_date")
    _check_service_date(service_date, hub)
    time_limit_seconds = _check_time_limit(time_limit_seconds)
    weights = _check_weights(objective_weights)
    vehicle_rows = _resolve_vehicles(vehicles, hub)
    explicit = bool(_ids(legs) or _ids(shipments))
    leg_rows = _resolve_legs(
        legs=legs, shipments=shipments, hub=hub, mile=mile, service_date=service_date
    )

    job = OptimizationJob.objects.create(
        service_date=service_date,
        hub=hub,
        mile=mile,
        time_limit_seconds=time_limit_seconds,
        objective_weights=weights,
        keep_best_on_cancel=keep_best_on_cancel,
        created_by=created_by
        if getattr(created_by, "is_authenticated", False)
        else None,
        queued_at=timezone.now(),
    )
    job.seed = job.pk  # reproducible: the same job searches the same way on a re-run
    job.save(update_fields=["seed"])
    job.vehicles.set(vehicle_rows)
    if explicit:  # otherwise the scope is re-read when the job runs
        job.legs.set(leg_rows)
    _status_message(job)
    optimization_job_run_task.apply_async_on_commit(
        args=[job.pk], **optimization_job_task_limits(job)
    )
    return job


# ---------------------------------------------------------------------------
# Lifecycle helpers
# ---------------------------------------------------------------------------


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


def _status_message(job: OptimizationJob) -> None:
    """The durable status message (the relay publishes it after commit)."""
    outbox_enqueue(
        type=STATUS_OUTBOX_TYPE,
        groups=[optimization_group(job.pk)],
        payload=job_status_payload(job),
    )


def _finish(
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
    _status_message(job)
    return job


def _lock(job_id: int) -> OptimizationJob:
    return OptimizationJob.objects.select_for_update().get(pk=job_id)


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
        job = _lock(job_id)
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
                _finish(job, S.CANCELLED, error="Cancelled before a plan was found."),
                None,
            )
        if job.attempts >= MAX_ATTEMPTS:
            return Claim(
                _finish(
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
            worker=_solver_name(),
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
        _status_message(job)
        return Claim(job, job.run_token)


def _fail(job_id: int, run_token: uuid.UUID, error: str) -> OptimizationJob:
    with transaction.atomic():
        job = _lock(job_id)
        if job.run_token != run_token or job.is_finished:
            return job
        return _finish(job, S.FAILED, error=error)


# ---------------------------------------------------------------------------
# Progress and cancellation while the solver runs
# ---------------------------------------------------------------------------


def _group_send(job_id: int, message: dict[str, Any]) -> None:
    """Best effort: live messages are hints, the job row is the truth."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(optimization_group(job_id), message)
    except Exception:  # noqa: BLE001 - a dead channel layer must not stop a solve
        logger.warning("optimization %s: progress not published", job_id, exc_info=True)


class _ProgressReporter:
    """The solver's on_progress: job row and channel group, at most 4 times a second."""

    def __init__(self, *, job_id: int, run_token: uuid.UUID):
        self.job_id = job_id
        self.run_token = run_token
        self.started = time.monotonic()
        self._last = -math.inf
        self._lock = threading.Lock()
        self.reports = 0

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < PROGRESS_MIN_INTERVAL_SECONDS:
                return
            self._last = now
        fraction = round(min(0.99, max(0.0, progress.elapsed_fraction)), 4)
        best_cost = round(progress.best_cost / 1000, 2)  # solver milli-units → currency
        try:
            OptimizationJob.objects.filter(
                pk=self.job_id, run_token=self.run_token
            ).update(
                progress=fraction, best_cost=best_cost, heartbeat_at=timezone.now()
            )
        except (OperationalError, InterfaceError):
            logger.warning(
                "optimization %s: progress not saved", self.job_id, exc_info=True
            )
        self.reports += 1
        _group_send(
            self.job_id,
            {
                "type": PROGRESS_MESSAGE_TYPE,
                "job_id": self.job_id,
                "status": S.RUNNING,
                "progress": fraction,
                "best_cost": best_cost,
                "engine": progress.engine,
                "elapsed_seconds": round(now - self.started, 2),
            },
        )


class _JobWatch(threading.Thread):
    """Beats the heartbeat and watches for a cancel request while the solver runs.

    Runs in its own thread (and database connection) because the search holds
    the calling thread inside OR-Tools or PyVRP.
    """

    def __init__(self, *, job_id: int, run_token: uuid.UUID):
        super().__init__(name=f"optimization-{job_id}-watch", daemon=True)
        self.job_id = job_id
        self.run_token = run_token
        self.stop_search = threading.Event()
        self.cancel_seen = False
        self.lost = False  # another attempt holds the job now
        self._done = threading.Event()

    def should_stop(self) -> bool:
        return self.stop_search.is_set()

    def run(self) -> None:
        try:
            while not self._done.wait(HEARTBEAT_SECONDS):
                self._beat()
        finally:
            connection.close()

    def _beat(self) -> None:
        try:
            row = (
                OptimizationJob.objects.filter(pk=self.job_id)
                .values("run_token", "status", "cancel_requested")
                .first()
            )
            # No row: not visible from this connection (a test's open
            # transaction); there is nothing to learn, keep searching.
            if row is None:
                return
            if row["run_token"] != self.run_token or row["status"] != S.RUNNING:
                self.lost = True
                self.stop_search.set()
                return
            if row["cancel_requested"]:
                self.cancel_seen = True
                self.stop_search.set()
            OptimizationJob.objects.filter(
                pk=self.job_id, run_token=self.run_token
            ).update(heartbeat_at=timezone.now())
        except (OperationalError, InterfaceError):
            logger.warning(
                "optimization %s: heartbeat failed", self.job_id, exc_info=True
            )
            connection.close()

    def finish(self) -> None:
        self._done.set()
        self.join(timeout=10)


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def _legs_to_plan(job: OptimizationJob) -> list[Leg]:
    chosen = list(job.legs.values_list("pk", flat=True))
    selectable = problem_builder.leg_list_selectable(hub=job.hub, mile=job.mile)
    if chosen:
        return list(selectable.filter(pk__in=chosen))
    return list(
        problem_builder.leg_list_in_scope(
            service_date=job.service_date, hub=job.hub, mile=job.mile
        )[:MAX_LEGS_PER_JOB]
    )


def optimization_job_build(job: OptimizationJob) -> BuiltProblem:
    """The job's problem, from what the database holds now."""
    legs = _legs_to_plan(job)
    vehicles = list(job.vehicles.filter(is_active=True))
    if not vehicles:
        raise ValueError("none of the job's vehicles is in service any more")
    built = problem_builder.problem_build(
        service_date=job.service_date,
        hub=Hub.objects.select_related("location").get(pk=job.hub_id),
        mile=job.mile,
        vehicles=vehicles,
        legs=legs,
        objective_weights=job.objective_weights,
    )
    chosen = set(job.legs.values_list("pk", flat=True))
    gone = chosen - {leg.pk for leg in legs}
    if gone:
        gone_rows = Leg.objects.filter(pk__in=gone).values_list("pk", "shipment_id")
        built.excluded.extend(
            {
                "leg_id": pk,
                "shipment_id": shipment_id,
                "reason": problem_builder.REASON_NO_LONGER_OPEN,
            }
            for pk, shipment_id in gone_rows
        )
    return built


def optimization_job_solve(
    built: BuiltProblem,
    *,
    time_limit_seconds: float,
    seed: int,
    on_progress=None,
    should_stop=None,
    job_id: int | None = None,
    run_token: uuid.UUID | None = None,
) -> Solution:
    """Solve a built problem: whole, or, for a job's large problem, decomposed
    with its parts fanned out to the workers."""
    problem = built.problem
    if (
        job_id is not None
        and run_token is not None
        and len(problem.jobs) > DECOMPOSE_THRESHOLD_JOBS
        and not problem.hub_links  # hub links span clusters: solved whole
    ):
        return decompose.solve_decomposed(
            problem,
            time_limit_seconds=time_limit_seconds,
            seed=seed,
            map_fn=CeleryGroupMap(
                job_id=job_id, run_token=run_token, on_progress=on_progress
            ),
            threshold_jobs=DECOMPOSE_THRESHOLD_JOBS,
            cluster_jobs_target=DECOMPOSE_CLUSTER_JOBS,
            parallel_parts=decompose_parallel_parts(),
        )
    return solve(
        problem,
        time_limit_seconds=time_limit_seconds,
        seed=seed,
        on_progress=on_progress,
        should_stop=should_stop,
    )


def optimization_job_run(*, job_id: int) -> OptimizationJob:
    """Run the job to the end in this process: claim, build, solve, check, save.

    Returns the job as it stands after (succeeded, failed, cancelled, or as it
    was when there was nothing to do). Raises OptimizationJobBusy while another
    live attempt holds the job, and database errors (the caller retries).
    """
    claim = optimization_job_claim(job_id=job_id)
    if claim.run_token is None:
        return claim.job
    job, run_token = claim.job, claim.run_token
    watch: _JobWatch | None = None
    try:
        try:
            built = optimization_job_build(job)
        except ValueError as exc:  # hub closed, vehicles retired since the job was made
            return _fail(job_id, run_token, str(exc))
        watch = _JobWatch(job_id=job_id, run_token=run_token)
        watch.start()
        started = time.monotonic()
        solution = optimization_job_solve(
            built,
            time_limit_seconds=job.time_limit_seconds,
            seed=job.seed,
            on_progress=_ProgressReporter(job_id=job_id, run_token=run_token),
            should_stop=watch.should_stop,
            job_id=job_id,
            run_token=run_token,
        )
        wall_seconds = time.monotonic() - started
        watch.finish()
        if watch.lost:
            return OptimizationJob.objects.get(pk=job_id)
        violations = check_solution(built.problem, solution)
        if violations:
            detail = "; ".join(
                f"{v.kind} {v.subject}: {v.detail}" for v in violations[:5]
            )
            logger.error(
                "optimization %s: checker refused the plan: %s", job_id, detail
            )
            return _fail(
                job_id,
                run_token,
                f"The plan failed the independent check ({len(violations)} "
                f"violations): {detail}",
            )
        return optimization_job_result_save(
            job_id=job_id,
            run_token=run_token,
            built=built,
            solution=solution,
            wall_seconds=wall_seconds,
        )
    except (OperationalError, InterfaceError):
        raise  # the database is away: the task retries, the claim sees a dead heartbeat
    except Exception as exc:
        logger.exception("optimization %s failed", job_id)
        return _fail(job_id, run_token, f"{type(exc).__name__}: {exc}")
    finally:
        if watch is not None and watch.is_alive():
            watch.finish()


# ---------------------------------------------------------------------------
# Save
# ---------------------------------------------------------------------------


def _drafts_supersede(*, job: OptimizationJob, leg_ids: set[int]) -> list[int]:
    """Delete other jobs' draft routes holding any of these legs: one plan per leg."""
    if not leg_ids:
        return []
    candidates = set(
        Route.objects.filter(status=Route.Status.DRAFT, stops__legs__in=leg_ids)
        .exclude(job=job)
        .values_list("pk", flat=True)
    )
    # Lock, then re-check: a route published meanwhile is no longer a draft and stays.
    stale = sorted(
        Route.objects.select_for_update()
        .filter(pk__in=candidates, status=Route.Status.DRAFT)
        .values_list("pk", flat=True)
    )
    if stale:
        try:
            with transaction.atomic():
                Route.objects.filter(pk__in=stale).delete()
        except ProtectedError:
            # Something already refers to a draft (nothing should): keep the
            # rows for the record, out of play.
            Route.objects.filter(pk__in=stale).update(status=Route.Status.CANCELLED)
    return stale


@dataclass
class _StopDraft:
    kind: str
    location_index: int
    arrival_seconds: int
    departure_seconds: int
    service_seconds: int
    window_start_seconds: int | None
    window_end_seconds: int | None
    job_keys: list[str]


def _stop_drafts(built: BuiltProblem, route) -> list[_StopDraft]:
    """One stop per place visited in a row: three parcels for one door are one stop."""
    jobs = built.problem.job_by_key()
    drafts: list[_StopDraft] = []
    for stop in route.stops:
        job = jobs[stop.job_key]
        visit = job.pickup if stop.kind == problem_builder.PICKUP else job.delivery
        window = visit.time_windows[0] if visit.time_windows else None
        previous = drafts[-1] if drafts else None
        if (
            previous is not None
            and previous.kind == stop.kind
            and previous.location_index == stop.location_index
        ):
            previous.departure_seconds = stop.departure_seconds
            previous.service_seconds += visit.service_seconds
            previous.job_keys.append(stop.job_key)
            if window is not None:  # the stop's window is what every parcel allows
                previous.window_start_seconds = max(
                    previous.window_start_seconds or 0, window.start_seconds
                )
                previous.window_end_seconds = min(
                    previous.window_end_seconds
                    if previous.window_end_seconds is not None
                    else window.end_seconds,
                    window.end_seconds,
                )
            continue
        drafts.append(
            _StopDraft(
                kind=stop.kind,
                location_index=stop.location_index,
                arrival_seconds=stop.arrival_seconds,
                departure_seconds=stop.departure_seconds,
                service_seconds=visit.service_seconds,
                window_start_seconds=window.start_seconds if window else None,
                window_end_seconds=window.end_seconds if window else None,
                job_keys=[stop.job_key],
            )
        )
    return drafts


def _routes_create(
    job: OptimizationJob, built: BuiltProblem, solution: Solution
) -> list[Route]:
    hub = built.hub
    hub_point = [hub.location.latitude, hub.location.longitude]
    routes: list[Route] = []
    stop_plans: list[list[_StopDraft]] = []
    for solved in solution.routes:
        vehicle = built.vehicles[solved.vehicle_key]
        drafts = _stop_drafts(built, solved)
        points = [
            [
                built.locations[d.location_index].latitude,
                built.locations[d.location_index].longitude,
            ]
            for d in drafts
        ]
        routes.append(
            Route(
                job=job,
                service_date=job.service_date,
                hub=hub,
                mile=job.mile,
                vehicle=vehicle,
                status=Route.Status.DRAFT,
                planned_start=built.at(solved.start_seconds),
                planned_end=built.at(solved.end_seconds),
                distance_meters=solved.distance_meters,
                duration_seconds=solved.duration_seconds,
                cost=problem_builder.route_cost_money(
                    vehicle,
                    distance_meters=solved.distance_meters,
                    duration_seconds=solved.duration_seconds,
                ),
                geometry=[hub_point, *points, hub_point],
            )
        )
        stop_plans.append(drafts)
    Route.objects.bulk_create(routes)

    stops: list[RouteStop] = []
    stop_jobs: list[list[str]] = []
    for route, solved, drafts in zip(routes, solution.routes, stop_plans, strict=True):
        sequence = 0
        stops.append(
            RouteStop(
                route=route,
                sequence=sequence,
                kind=RouteStop.Kind.HUB,
                location=hub.location,
                hub=hub,
                service_seconds=0,
                planned_arrival=built.at(solved.start_seconds),
                planned_departure=built.at(solved.start_seconds),
            )
        )
        stop_jobs.append([])
        for draft in drafts:
            sequence += 1
            stops.append(
                RouteStop(
                    route=route,
                    sequence=sequence,
                    kind=draft.kind,
                    location=built.locations[draft.location_index],
                    window_start=None
                    if draft.window_start_seconds is None
                    else built.at(draft.window_start_seconds),
                    window_end=None
                    if draft.window_end_seconds is None
                    else built.at(draft.window_end_seconds),
                    service_seconds=draft.service_seconds,
                    planned_arrival=built.at(draft.arrival_seconds),
                    planned_departure=built.at(draft.departure_seconds),
                )
            )
            stop_jobs.append(draft.job_keys)
        stops.append(
            RouteStop(
                route=route,
                sequence=sequence + 1,
                kind=RouteStop.Kind.HUB,
                location=hub.location,
                hub=hub,
                service_seconds=0,
                planned_arrival=built.at(solved.end_seconds),
                planned_departure=built.at(solved.end_seconds),
            )
        )
        stop_jobs.append([])
    RouteStop.objects.bulk_create(stops)
    through = RouteStop.legs.through
    through.objects.bulk_create(
        through(routestop_id=stop.pk, leg_id=built.legs[key].pk)
        for stop, keys in zip(stops, stop_jobs, strict=True)
        for key in keys
    )
    return routes


def _unassigned(built: BuiltProblem, solution: Solution) -> list[dict[str, Any]]:
    out = list(built.excluded)
    for item in solution.unassigned:
        leg = built.legs[item.job_key]
        out.append(
            {"leg_id": leg.pk, "shipment_id": leg.shipment_id, "reason": item.reason}
        )
    return out


def _parts_summary_and_clear(job: OptimizationJob) -> dict[str, Any]:
    """Who solved the parts of a decomposed run (for the statistics), then the
    parts themselves go: their problems are bulky and served their purpose."""
    solvers = list(
        OptimizationPart.objects.filter(job=job, run_token=job.run_token)
        .order_by("index")
        .values_list("claimed_by", flat=True)
    )
    OptimizationPart.objects.filter(job=job).delete()
    if not solvers:
        return {}
    return {"parts": len(solvers), "part_solvers": solvers}


def optimization_job_result_save(
    *,
    job_id: int,
    run_token: uuid.UUID,
    built: BuiltProblem,
    solution: Solution,
    wall_seconds: float,
    extra_statistics: dict[str, Any] | None = None,
) -> OptimizationJob:
    """Save a checked plan as draft routes and finish the job, in one transaction.

    A no-op when this attempt no longer holds the job (another attempt took
    over, or the result is already saved). A cancel request that arrived meanwhile
    ends the job as cancelled, with the plan kept only if the job asked for it.
    """
    with transaction.atomic():
        job = _lock(job_id)
        if job.run_token != run_token or job.is_finished:
            return job
        if job.cancel_requested and not job.keep_best_on_cancel:
            return _finish(
                job, S.CANCELLED, error="Cancelled; the best plan was discarded."
            )
        # Two jobs of one hub saving at once would each miss the other's fresh
        # drafts and leave two plans for the same legs: saves of a hub take turns.
        Hub.objects.select_for_update().filter(pk=job.hub_id).first()
        leg_ids = {leg.pk for leg in built.legs.values()}
        superseded = _drafts_supersede(job=job, leg_ids=leg_ids)
        parts = _parts_summary_and_clear(job)
        routes = _routes_create(job, built, solution)
        unassigned = _unassigned(built, solution)
        statistics = {
            "engine": solution.engine,
            "attempt": job.attempts,
            "time_limit_seconds": job.time_limit_seconds,
            "search_seconds": round(solution.search_seconds, 3),
            "wall_seconds": round(wall_seconds, 3),
            "matrix": built.matrix_source,
            "jobs": len(built.problem.jobs),
            "vehicles": len(built.problem.vehicles),
            "routes": len(routes),
            "route_ids": [route.pk for route in routes],
            "stops": sum(len(r.stops) for r in solution.routes),
            "distance_meters": solution.distance_meters,
            "duration_seconds": solution.duration_seconds,
            "cost": round(sum(route.cost for route in routes), 2),
            "objective_cost": round(solution.cost, 2),
            "unassigned_count": len(unassigned),
            "unassigned": unassigned,
            "checker_violations": 0,
            "superseded_route_ids": superseded,
            "stopped_early": bool(job.cancel_requested),
            **parts,
            **(extra_statistics or {}),
        }
        job.best_cost = statistics["cost"]
        job.engine = solution.engine
        status = S.CANCELLED if job.cancel_requested else S.SUCCEEDED
        error = (
            "Cancelled; the best plan found so far was kept."
            if job.cancel_requested
            else ""
        )
        return _finish(job, status, error=error, statistics=statistics)


# ---------------------------------------------------------------------------
# Cancel and recover
# ---------------------------------------------------------------------------


@transaction.atomic
def optimization_job_cancel(*, job_id: int, keep_best: bool = True) -> OptimizationJob:
    """Cancel a job: a queued one at once, a running one by asking its search to
    stop (it ends within about a second, its best plan saved if ``keep_best``).

    Cancelling a cancelled job changes nothing; a succeeded or failed job raises
    InvalidTransition (409).
    """
    job = _lock(job_id)
    if job.status == S.CANCELLED:
        return job
    if job.status in (S.SUCCEEDED, S.FAILED):
        _move(job, S.CANCELLED)  # raises: a finished job stays as it is
    job.cancel_requested = True
    job.keep_best_on_cancel = keep_best
    job.save(update_fields=["cancel_requested", "keep_best_on_cancel"])
    if job.status == S.QUEUED:
        return _finish(job, S.CANCELLED, error="Cancelled before it started.")
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
        job = _lock(job_id)
        if job.status != S.RUNNING or not _attempt_is_dead(job, now=now):
            return False
        _attempt_close(job, outcome=OptimizationAttempt.Outcome.LOST, now=now)
        _move(job, S.QUEUED)
        job.queued_at = now
        job.heartbeat_at = None
        job.save(update_fields=["status", "queued_at", "heartbeat_at"])
        _status_message(job)
        return True


# ---------------------------------------------------------------------------
# Decomposition: parts solved in parallel by a Celery group
# ---------------------------------------------------------------------------

DECOMPOSE_THRESHOLD_JOBS = decompose.DEFAULT_THRESHOLD_JOBS
DECOMPOSE_CLUSTER_JOBS = decompose.DEFAULT_CLUSTER_JOBS
# How often a waiting job's worker looks at its parts, and how often a part's
# search asks whether the job was cancelled (a database read).
PART_POLL_SECONDS = 0.2
PART_STOP_POLL_SECONDS = 0.5
# Beyond every part's own limit, how long the job waits before it gives up.
PART_WAIT_MARGIN_SECONDS = 30
P = OptimizationPart.Status


def decompose_parallel_parts() -> int:
    """How many parts run at once (each gets the parts' time budget divided by
    the number of waves): the deployment's worker count, 1 unless configured."""
    return max(1, int(getattr(settings, "ROUTING_DECOMPOSE_PARALLEL_PARTS", 1)))


def _solver_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


class _JobStopCheck:
    """should_stop for a part: the job was cancelled, or its attempt is over.
    Reads the job row at most every PART_STOP_POLL_SECONDS."""

    def __init__(self, *, job_id: int, run_token: uuid.UUID):
        self.job_id = job_id
        self.run_token = run_token
        self._checked = -math.inf
        self._stop = False

    def __call__(self) -> bool:
        now = time.monotonic()
        if self._stop or now - self._checked < PART_STOP_POLL_SECONDS:
            return self._stop
        self._checked = now
        row = (
            OptimizationJob.objects.filter(pk=self.job_id)
            .values("run_token", "status", "cancel_requested")
            .first()
        )
        self._stop = (
            row is None
            or row["cancel_requested"]
            or row["run_token"] != self.run_token
            or row["status"] != S.RUNNING
        )
        return self._stop


def optimization_part_claim(
    *, part_id: int, include_failed: bool = False, now: datetime | None = None
) -> bool:
    """Take a part if nobody has it: queued, or running so long past its limit
    that its solver is presumed dead (failed too, for the job's own worker).
    A conditional UPDATE: of two claimants exactly one wins."""
    now = now or timezone.now()
    row = (
        OptimizationPart.objects.filter(pk=part_id)
        .values("status", "claimed_at", "time_limit_seconds")
        .first()
    )
    if row is None:
        return False
    claimable = row["status"] == P.QUEUED or (
        include_failed and row["status"] == P.FAILED
    )
    if row["status"] == P.RUNNING and row["claimed_at"] is not None:
        dead_after = timedelta(seconds=row["time_limit_seconds"] + LEASE_SECONDS)
        claimable = row["claimed_at"] < now - dead_after
    if not claimable:
        return False
    won = OptimizationPart.objects.filter(
        pk=part_id, status=row["status"], claimed_at=row["claimed_at"]
    ).update(status=P.RUNNING, claimed_at=now, claimed_by=_solver_name(), error="")
    return won == 1


def optimization_part_solve(*, part_id: int, include_failed: bool = False) -> str:
    """Claim and solve one part; "done", "failed", or "taken" (someone else has
    it, or it no longer exists: its job attempt is over). What the part task
    runs, and what the job's worker runs on parts nobody took."""
    if not optimization_part_claim(part_id=part_id, include_failed=include_failed):
        return "taken"
    part = OptimizationPart.objects.get(pk=part_id)
    try:
        solution = solve(
            problem_builder.from_json(Problem, part.problem),
            time_limit_seconds=part.time_limit_seconds,
            seed=part.seed,
            should_stop=_JobStopCheck(job_id=part.job_id, run_token=part.run_token),
        )
    except (OperationalError, InterfaceError):
        raise
    except Exception as exc:
        logger.exception("optimization part %s failed", part_id)
        OptimizationPart.objects.filter(pk=part_id, status=P.RUNNING).update(
            status=P.FAILED,
            error=f"{type(exc).__name__}: {exc}"[:4000],
            finished_at=timezone.now(),
        )
        return "failed"
    # The first solver to finish wins; a late duplicate finds it done already.
    OptimizationPart.objects.filter(pk=part_id, status=P.RUNNING).update(
        status=P.DONE,
        solution=problem_builder.to_json(solution),
        finished_at=timezone.now(),
    )
    return "done"


class CeleryGroupMap:
    """``map_fn`` for solver.decompose: each part becomes an OptimizationPart row
    and a task of one Celery group; the result comes back through the rows (no
    result backend needed, and a worker never blocks on another's result).

    While it waits, the job's own worker solves parts nobody has taken, so one
    worker alone still finishes (sequentially), and a part whose worker died is
    taken over once its limit and a lease have passed.
    """

    def __init__(self, *, job_id: int, run_token: uuid.UUID, on_progress=None):
        self.job_id = job_id
        self.run_token = run_token
        self.on_progress = on_progress

    def __call__(self, fn, items) -> list[Solution]:
        # ``fn`` is the core's part solver; optimization_part_solve does the same
        # (solve(part, time limit, seed)) and also stops when the job is cancelled.
        items = list(items)
        part_ids = self._store(items)
        group(
            optimization_part_solve_task.signature(
                (part_id,),
                soft_time_limit=math.ceil(seconds) + TASK_SOFT_MARGIN_SECONDS,
                time_limit=math.ceil(seconds)
                + TASK_SOFT_MARGIN_SECONDS
                + TASK_HARD_MARGIN_SECONDS,
            )
            for part_id, (_problem, seconds, _seed) in zip(part_ids, items, strict=True)
        ).apply_async()
        longest = max(seconds for _problem, seconds, _seed in items)
        self._wait(
            part_ids,
            deadline=time.monotonic()
            + longest * len(items)
            + LEASE_SECONDS
            + PART_WAIT_MARGIN_SECONDS,
        )
        parts = OptimizationPart.objects.in_bulk(part_ids)
        return [
            problem_builder.solution_expand(
                problem_builder.from_json(Solution, parts[pk].solution),
                parts[pk].location_indices,
            )
            for pk in part_ids
        ]

    def _store(self, items) -> list[int]:
        rows = []
        for index, (problem, seconds, seed) in enumerate(items):
            compact, old_indices = problem_builder.problem_compact(problem)
            rows.append(
                OptimizationPart(
                    job_id=self.job_id,
                    run_token=self.run_token,
                    index=index,
                    problem=problem_builder.to_json(compact),
                    location_indices=old_indices,
                    time_limit_seconds=seconds,
                    seed=seed,
                )
            )
        with transaction.atomic():
            # Parts of an earlier, dead attempt: their tasks find nothing and stop.
            OptimizationPart.objects.filter(job_id=self.job_id).delete()
            OptimizationPart.objects.bulk_create(rows)
        return [row.pk for row in rows]

    def _wait(self, part_ids: list[int], *, deadline: float) -> None:
        started = time.monotonic()
        total_seconds = max(1e-9, deadline - started)
        while True:
            rows = list(
                OptimizationPart.objects.filter(pk__in=part_ids).values_list(
                    "pk", "status", "solution__cost"
                )
            )
            done = [cost for _pk, status, cost in rows if status == P.DONE]
            if self.on_progress is not None and done:
                self.on_progress(
                    Progress(
                        best_cost=sum(done)
                        * 1000,  # currency → the solver's milli-units
                        elapsed_fraction=(1 - decompose.REPAIR_FRACTION)
                        * len(done)
                        / len(part_ids),
                        engine="decomposed",
                    )
                )
            if len(done) == len(part_ids):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{len(part_ids) - len(done)} of {len(part_ids)} parts unfinished after "
                    f"{time.monotonic() - started:.0f} s (limit {total_seconds:.0f} s)"
                )
            for pk, status, _cost in rows:
                if status == P.DONE:
                    continue
                outcome = optimization_part_solve(part_id=pk, include_failed=True)
                if outcome == "failed":
                    error = OptimizationPart.objects.filter(pk=pk).values_list(
                        "error", flat=True
                    )
                    raise RuntimeError(f"part {pk} failed twice: {error.first()}")
                if outcome == "done":
                    break  # look at the parts again before taking another
            else:
                time.sleep(PART_POLL_SECONDS)
