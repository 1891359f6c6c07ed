"""Tasks used by the [FAULT] tier only (the app is not installed in production)."""

from celery import shared_task

from .models import ProbeRun


@shared_task(name="reliability.probe", idempotent=True, acks_late=True)
def probe_task(token: str) -> None:
    """Records that a worker ran it (R5: a worker consumes again after Redis restarts)."""
    ProbeRun.objects.create(token=token)
