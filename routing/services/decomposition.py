"""Decomposition: the parts of a large job solved in parallel by a Celery group.

Each part is an OptimizationPart row and a task; the job's own worker solves
parts nobody has taken while it waits, so one worker alone still finishes.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from datetime import datetime, timedelta

from celery import group
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from .. import problem_builder
from ..models import (
    OptimizationJob,
    OptimizationPart,
)
from ..solver import decompose
from ..solver.portfolio import solve
from ..solver.problem import Problem
from ..solver.progress import Progress
from ..solver.solution import Solution
from ..tasks import optimization_part_solve_task
from .lifecycle import (
    LEASE_SECONDS,
    TASK_HARD_MARGIN_SECONDS,
    TASK_SOFT_MARGIN_SECONDS,
    S,
    solver_name,
)

logger = logging.getLogger(__name__)

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
    ).update(status=P.RUNNING, claimed_at=now, claimed_by=solver_name(), error="")
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
