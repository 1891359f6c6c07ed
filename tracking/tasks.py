"""Celery entry points; each takes ids and calls one service.

Every task here is idempotent: the relay numbers and publishes whatever is
pending (a repeat finds nothing), the ETA tasks recompute from current facts,
and a webhook delivery claims its attempt with a conditional update.
"""

from __future__ import annotations

from celery import shared_task

IDEMPOTENT_TASKS: set[str] = set()


def idempotent_task(task):
    """Declares a task safe to run twice (acks_late re-delivers on a crash)."""
    IDEMPOTENT_TASKS.add(task.name)
    task.idempotent = True
    return task


@idempotent_task
@shared_task(acks_late=True, ignore_result=True)
def outbox_relay_task() -> int:
    from .kick import RELAY_PENDING_KEY, queue_slot_release
    from .relay import outbox_relay_run

    queue_slot_release(RELAY_PENDING_KEY)
    return outbox_relay_run().published


@idempotent_task
@shared_task(acks_late=True, ignore_result=True)
def eta_route_refresh_task(route_id: int) -> None:
    # The route's queue slot is left to expire: at most one refresh per route
    # every few seconds however often its driver pings (tracking.kick).
    from .eta import eta_route_refresh

    eta_route_refresh(route_id=route_id)


@idempotent_task
@shared_task(acks_late=True, ignore_result=True)
def eta_sweep_task() -> None:
    from .eta import eta_sweep_run

    eta_sweep_run()


@idempotent_task
@shared_task(acks_late=True, ignore_result=True)
def webhook_delivery_send_task(delivery_id: int) -> None:
    from .webhooks import webhook_delivery_attempt

    webhook_delivery_attempt(delivery_id=delivery_id)


@idempotent_task
@shared_task(acks_late=True, ignore_result=True)
def webhook_retry_sweep_task() -> None:
    from .webhooks import webhook_deliveries_retry_due

    webhook_deliveries_retry_due()
