"""Tasks used by the [FAULT] tier only (the app is not installed in production)."""

import os

from celery import shared_task

from .models import ProbeRun


@shared_task(name="reliability.probe", idempotent=True, acks_late=True)
def probe_task(token: str) -> None:
    """Records that a worker ran it (R5: a worker consumes again after Redis restarts)."""
    ProbeRun.objects.create(token=token)


@shared_task(name="reliability.poison", idempotent=True, acks_late=True)
def poison_task(token: str) -> None:
    """R6: kills its worker process on every run, as a crash in native code or
    the OOM killer would. Each run is recorded first (a ProbeRun with the
    token, committed), so the harness counts how often it ran before the
    delivery cap stopped it."""
    ProbeRun.objects.create(token=token)
    os._exit(1)
