"""Celery entry points of the routing app; each takes ids and calls one service.

Every task here runs with ``acks_late`` (a worker lost mid-task leaves its message
to be delivered again), so every task is idempotent and says so with
``idempotent=True`` (checked by the Celery configuration guard):

* ``optimization_job_run_task``: the claim in ``optimization_job_run`` makes a
  second delivery a no-op once the result is saved, waits while a live attempt
  holds the job, takes over from a dead one, and gives up after
  ``MAX_ATTEMPTS`` (the delivery cap of a poison job).
* ``optimization_job_recover_task``: only re-sends run tasks, which are idempotent.
  Beat runs it periodically, and every worker runs the sweep once when it
  starts: a worker restarted after a crash is when its dead jobs are noticed
  (their processes are gone), instead of an hour later when Redis would deliver
  their unacknowledged messages again (the visibility timeout).
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready
from django.db import InterfaceError, OperationalError

logger = logging.getLogger(__name__)

# A database outage is retried this often, each after the lease: long enough for
# the claim to see the dead attempt's heartbeat as stale.
DATABASE_RETRIES = 5


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    idempotent=True,
    max_retries=None,
)
def optimization_job_run_task(self, job_id: int) -> str:
    """Run one optimization job (time limits come with each message, from the job)."""
    from routing.services import (
        LEASE_SECONDS,
        OptimizationJobBusy,
        optimization_job_run,
    )

    from .models import OptimizationJob

    try:
        job = optimization_job_run(job_id=job_id)
    except OptimizationJob.DoesNotExist:
        return "missing"
    except OptimizationJobBusy as busy:
        # Bounded: the attempt holding the job either finishes or stops beating,
        # and then this delivery takes over (or the claim gives up).
        raise self.retry(countdown=busy.retry_after_seconds) from None
    except (OperationalError, InterfaceError) as exc:
        if self.request.retries >= DATABASE_RETRIES:
            raise
        raise self.retry(exc=exc, countdown=LEASE_SECONDS + 1) from None
    return job.status


@shared_task(acks_late=True, idempotent=True)
def optimization_job_recover_task(worker_started: bool = False) -> list[int]:
    """Re-send jobs that nobody runs (see optimization_job_recover_stale)."""
    from routing.services import optimization_job_recover_stale

    return optimization_job_recover_stale(worker_started=worker_started)


@worker_ready.connect
def _recover_jobs_when_a_worker_starts(**_kwargs) -> None:
    """Run the sweep here, in the starting worker's main process: sent as a task it
    would wait behind every job message already queued."""
    from django.db import connections

    from routing.services import optimization_job_recover_stale

    try:
        resent = optimization_job_recover_stale(worker_started=True)
    except (OperationalError, InterfaceError):
        logger.warning("optimization jobs not recovered at start", exc_info=True)
    else:
        if resent:
            logger.info("optimization jobs sent again at start: %s", resent)
    finally:
        connections.close_all()  # the pool's processes have their own


@shared_task(acks_late=True, reject_on_worker_lost=True, idempotent=True)
def optimization_part_solve_task(part_id: int) -> str:
    """Solve one part of a decomposed job; a part already taken or done is left
    alone (the claim is a conditional UPDATE), so a re-delivery does nothing."""
    from routing.services import optimization_part_solve

    return optimization_part_solve(part_id=part_id)
