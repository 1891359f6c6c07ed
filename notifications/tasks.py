"""Celery entry points; each takes ids and calls one service.

All are idempotent: a decision is taken once per event (``EventReview``), a
send claims its message with a conditional update, and the sweep only picks
up what is still pending.
"""

from __future__ import annotations

from celery import shared_task

from tracking.tasks import idempotent_task


@idempotent_task
@shared_task(acks_late=True, ignore_result=True)
def notification_event_process_task(event_id: int) -> None:
    from .services import notifications_decide_for_event

    notifications_decide_for_event(event_id=event_id)


@idempotent_task
@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=None)
def notification_send_task(self, message_id: int) -> None:
    from .services import notification_send

    outcome = notification_send(message_id=message_id)
    # The row says "retrying" with its due time; an eager run (the embedded
    # default) leaves the retry to the sweep instead of recursing at once.
    retry = outcome is not None and outcome.retry_in_seconds is not None
    if retry and not self.request.is_eager:
        raise self.retry(countdown=outcome.retry_in_seconds)


@idempotent_task
@shared_task(acks_late=True, ignore_result=True)
def notification_sweep_task() -> None:
    from .services import notification_sweep_run

    notification_sweep_run()
