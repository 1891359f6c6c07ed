"""Optimization jobs: create, run, cancel, recover, and save the result as draft routes.

    jobs           validate a plan request and queue it; list jobs
    lifecycle      states, attempts, claim, finish, cancel, the recovery sweep
    run            claim, build, solve (progress, heartbeat, cancel), check, save
    saving         the checked plan as draft routes, in one transaction
    decomposition  the parts of a large job solved in parallel by a Celery group

This package's public names are importable from ``routing.services``.
"""

from .decomposition import (
    DECOMPOSE_CLUSTER_JOBS,
    DECOMPOSE_THRESHOLD_JOBS,
    PART_POLL_SECONDS,
    PART_STOP_POLL_SECONDS,
    PART_WAIT_MARGIN_SECONDS,
    CeleryGroupMap,
    decompose_parallel_parts,
    optimization_part_claim,
    optimization_part_solve,
)
from .jobs import (
    MAX_LEGS_PER_JOB,
    MAX_VEHICLES_PER_JOB,
    OBJECTIVE_WEIGHT_KEYS,
    OBJECTIVE_WEIGHT_MAX,
    SERVICE_DATE_MAX_DAYS_AGO,
    SERVICE_DATE_MAX_DAYS_AHEAD,
    OptimizationInputError,
    optimization_job_create,
    optimization_job_list,
)
from .lifecycle import (
    HEARTBEAT_SECONDS,
    JOB_TRANSITIONS,
    LEASE_SECONDS,
    MAX_ATTEMPTS,
    RECOVER_QUEUED_AFTER_SECONDS,
    STATUS_OUTBOX_TYPE,
    TASK_HARD_MARGIN_SECONDS,
    TASK_SOFT_MARGIN_SECONDS,
    Claim,
    OptimizationJobBusy,
    job_fail,
    job_finish,
    job_lock,
    job_status_message,
    job_status_payload,
    optimization_job_cancel,
    optimization_job_claim,
    optimization_job_recover_stale,
    optimization_job_task_limits,
    solver_name,
)
from .run import (
    PROGRESS_MESSAGE_TYPE,
    PROGRESS_MIN_INTERVAL_SECONDS,
    optimization_job_build,
    optimization_job_run,
    optimization_job_solve,
)
from .saving import (
    optimization_job_result_save,
)

__all__ = [
    "CeleryGroupMap",
    "Claim",
    "DECOMPOSE_CLUSTER_JOBS",
    "DECOMPOSE_THRESHOLD_JOBS",
    "HEARTBEAT_SECONDS",
    "JOB_TRANSITIONS",
    "LEASE_SECONDS",
    "MAX_ATTEMPTS",
    "MAX_LEGS_PER_JOB",
    "MAX_VEHICLES_PER_JOB",
    "OBJECTIVE_WEIGHT_KEYS",
    "OBJECTIVE_WEIGHT_MAX",
    "OptimizationInputError",
    "OptimizationJobBusy",
    "PART_POLL_SECONDS",
    "PART_STOP_POLL_SECONDS",
    "PART_WAIT_MARGIN_SECONDS",
    "PROGRESS_MESSAGE_TYPE",
    "PROGRESS_MIN_INTERVAL_SECONDS",
    "RECOVER_QUEUED_AFTER_SECONDS",
    "SERVICE_DATE_MAX_DAYS_AGO",
    "SERVICE_DATE_MAX_DAYS_AHEAD",
    "STATUS_OUTBOX_TYPE",
    "TASK_HARD_MARGIN_SECONDS",
    "TASK_SOFT_MARGIN_SECONDS",
    "decompose_parallel_parts",
    "job_fail",
    "job_finish",
    "job_lock",
    "job_status_message",
    "job_status_payload",
    "optimization_job_build",
    "optimization_job_cancel",
    "optimization_job_claim",
    "optimization_job_create",
    "optimization_job_list",
    "optimization_job_recover_stale",
    "optimization_job_result_save",
    "optimization_job_run",
    "optimization_job_solve",
    "optimization_job_task_limits",
    "optimization_part_claim",
    "optimization_part_solve",
    "solver_name",
]
