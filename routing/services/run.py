"""Running a job in this process: claim, build, solve, check, save.

optimization_job_run(job_id)   (the run task, or seed_demo directly)
  1. claim   lifecycle.optimization_job_claim: a new attempt, or nothing to do
  2. build   problem_builder: open legs, vehicles, matrix → Problem
  3. solve   the solver portfolio; a watch thread beats the heartbeat and
             turns a cancel request into should_stop(); progress goes to the
             job row and the channel group optimization.<id> (≤ 4 per second).
             Above decomposition.DECOMPOSE_THRESHOLD_JOBS the problem is split
             and its parts fanned out to the workers (see decomposition)
  4. check   the independent checker: any violation fails the job, nothing saved
  5. save    saving.optimization_job_result_save, in one transaction
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone

from shipments.models import Hub, Leg
from shipments.outbox import optimization_group

from .. import problem_builder
from ..models import (
    OptimizationJob,
)
from ..problem_builder import BuiltProblem
from ..solver import decompose
from ..solver.checker import check_solution
from ..solver.portfolio import solve
from ..solver.progress import Progress
from ..solver.solution import Solution
from . import decomposition
from .jobs import MAX_LEGS_PER_JOB
from .lifecycle import (
    HEARTBEAT_SECONDS,
    S,
    job_fail,
    optimization_job_claim,
)
from .saving import optimization_job_result_save

logger = logging.getLogger(__name__)

# Progress reaches the job row and the channel group at most this often: never
# more than 4 messages inside any one second.
PROGRESS_MIN_INTERVAL_SECONDS = 0.3

# The search's own limit when building the problem used up the job's limit.
MIN_SEARCH_SECONDS = 1.0

PROGRESS_MESSAGE_TYPE = (
    "optimization.progress"  # consumers' handler: optimization_progress
)


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
        and len(problem.jobs) > decomposition.DECOMPOSE_THRESHOLD_JOBS
        and not problem.hub_links  # hub links span clusters: solved whole
    ):
        return decompose.solve_decomposed(
            problem,
            time_limit_seconds=time_limit_seconds,
            seed=seed,
            map_fn=decomposition.CeleryGroupMap(
                job_id=job_id, run_token=run_token, on_progress=on_progress
            ),
            threshold_jobs=decomposition.DECOMPOSE_THRESHOLD_JOBS,
            cluster_jobs_target=decomposition.DECOMPOSE_CLUSTER_JOBS,
            parallel_parts=decomposition.decompose_parallel_parts(),
        )
    return solve(
        problem,
        time_limit_seconds=time_limit_seconds,
        seed=seed,
        on_progress=on_progress,
        should_stop=should_stop,
    )


def search_seconds(job: OptimizationJob, *, elapsed: float) -> float:
    """The search's time limit: what is left of the job's limit after building
    the problem (a matrix can take a while), so the plan is ready within the
    limit; at least MIN_SEARCH_SECONDS. Always set: OR-Tools has none by default."""
    return max(MIN_SEARCH_SECONDS, job.time_limit_seconds - elapsed)


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
    claimed = time.monotonic()
    watch: _JobWatch | None = None
    try:
        try:
            built = optimization_job_build(job)
        except ValueError as exc:  # hub closed, vehicles retired since the job was made
            return job_fail(job_id, run_token, str(exc))
        watch = _JobWatch(job_id=job_id, run_token=run_token)
        watch.start()
        started = time.monotonic()
        solution = optimization_job_solve(
            built,
            time_limit_seconds=search_seconds(job, elapsed=started - claimed),
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
            return job_fail(
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
            extra_statistics={"build_seconds": round(started - claimed, 3)},
        )
    except (OperationalError, InterfaceError):
        raise  # the database is away: the task retries, the claim sees a dead heartbeat
    except Exception as exc:
        logger.exception("optimization %s failed", job_id)
        return job_fail(job_id, run_token, f"{type(exc).__name__}: {exc}")
    finally:
        if watch is not None and watch.is_alive():
            watch.finish()
