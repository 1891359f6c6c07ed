"""A delivery cap and a dead-letter table for every Celery task of the project.

Tasks run with ``acks_late`` and ``reject_on_worker_lost``: a worker that dies
under a task (SIGKILL, OOM, a crash in native code) leaves the message to be
delivered again. That is what makes a kill lose nothing, and also what makes a
task that *itself* kills its worker (a poison message) loop for ever. Redis
keeps no delivery count, and may lose its own bookkeeping, so the count lives
in PostgreSQL:

    delivery starts ──▶ task_delivery_begin: TaskDelivery.deliveries += 1 (one upsert)
         │                ├─ ≤ cap: the task runs
         │                └─ > cap: a DeadLetter row; the task is not run (Ignore: acked)
         ▼
    delivery ends (success, failure, retry) ──▶ its TaskDelivery row is deleted
    worker dies mid-task ──▶ the row stays; the broker delivers again: count + 1

So the count is of deliveries that never finished: ordinary failures and
retries are the task's own business (they are acknowledged or re-sent by the
task), only deaths add up. A dead letter is re-queued from the admin or with
``manage.py deadletter_requeue``.

Every task gets the check through a Celery task annotation (``install()``,
called by ``ShipmentsConfig.ready``): its ``before_start`` runs inside the
task's trace, where raising ``Ignore`` acknowledges the message without running
the body. If PostgreSQL cannot be reached the task runs unguarded: it needs the
database anyway, and losing it would be worse than one more delivery.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import states
from celery.exceptions import Ignore
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from .models import DeadLetter, TaskDelivery

logger = logging.getLogger(__name__)

DEFAULT_MAX_DELIVERIES = 5
WORKER_LOST = "the previous delivery never finished (its worker died or was killed)"


def max_deliveries() -> int:
    """Deliveries a task may have before it is dead-lettered (setting, default 5)."""
    return int(getattr(settings, "TASK_MAX_DELIVERIES", DEFAULT_MAX_DELIVERIES))


def task_delivery_begin(*, task_id: str, task_name: str) -> tuple[int, str]:
    """Count one more delivery of ``task_id``; returns (deliveries, last error).

    One statement, committed at once (autocommit): the count must survive the
    worker dying a moment later.
    """
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO shipments_taskdelivery
                (task_id, task_name, deliveries, last_error, first_seen_at, last_seen_at)
            VALUES (%s, %s, 1, '', %s, %s)
            ON CONFLICT (task_id) DO UPDATE
                SET deliveries = shipments_taskdelivery.deliveries + 1,
                    last_seen_at = excluded.last_seen_at
            RETURNING deliveries, last_error
            """,
            [task_id, task_name[:200], now, now],
        )
        deliveries, last_error = cursor.fetchone()
    return deliveries, last_error


def task_delivery_end(*, task_id: str) -> None:
    """The delivery finished (whatever its outcome): forget its count."""
    TaskDelivery.objects.filter(task_id=task_id).delete()


def task_delivery_error_note(*, task_id: str, error: str) -> None:
    TaskDelivery.objects.filter(task_id=task_id).update(last_error=error[:2000])


@transaction.atomic
def dead_letter_record(
    *,
    task_id: str,
    task_name: str,
    args: Any,
    kwargs: Any,
    deliveries: int,
    last_error: str,
) -> DeadLetter:
    """Park a task that went over the cap (the same task again updates its row)."""
    now = timezone.now()
    first_seen_at = (
        TaskDelivery.objects.filter(task_id=task_id)
        .values_list("first_seen_at", flat=True)
        .first()
    ) or now
    letter, _ = DeadLetter.objects.update_or_create(
        task_id=task_id,
        defaults={
            "task_name": task_name[:200],
            "args": list(args or []),
            "kwargs": dict(kwargs or {}),
            "deliveries": deliveries,
            "last_error": last_error or WORKER_LOST,
            "last_seen_at": now,
        },
        create_defaults={
            "task_name": task_name[:200],
            "args": list(args or []),
            "kwargs": dict(kwargs or {}),
            "deliveries": deliveries,
            "last_error": last_error or WORKER_LOST,
            "first_seen_at": first_seen_at,
            "last_seen_at": now,
        },
    )
    TaskDelivery.objects.filter(task_id=task_id).delete()
    return letter


def dead_letter_requeue(*, dead_letter_id: int) -> DeadLetter:
    """Send a dead letter's task again, with the same id and a fresh count.

    The message is sent after the commit, so a worker never finds the old
    count still in place.
    """
    from celery import current_app

    with transaction.atomic():
        letter = DeadLetter.objects.select_for_update().get(pk=dead_letter_id)
        TaskDelivery.objects.filter(task_id=letter.task_id).delete()
        letter.requeued_at = timezone.now()
        letter.requeue_count += 1
        letter.save(update_fields=["requeued_at", "requeue_count"])
        transaction.on_commit(
            lambda: current_app.send_task(
                letter.task_name,
                args=letter.args,
                kwargs=letter.kwargs,
                task_id=letter.task_id,
            )
        )
    return letter


# ---------------------------------------------------------------------------
# Celery wiring
# ---------------------------------------------------------------------------


def guard_before_start(task, task_id: str, args, kwargs) -> None:
    """``before_start`` of every task: count the delivery, refuse one over the cap."""
    request = task.request
    if request.is_eager:  # run in-process: never redelivered
        return
    try:
        deliveries, last_error = task_delivery_begin(
            task_id=task_id, task_name=task.name
        )
        if deliveries > 1 and not last_error:
            last_error = WORKER_LOST
            task_delivery_error_note(task_id=task_id, error=last_error)
        cap = max_deliveries()
        if deliveries <= cap:
            return
        dead_letter_record(
            task_id=task_id,
            task_name=task.name,
            args=args,
            kwargs=kwargs,
            deliveries=deliveries,
            last_error=last_error,
        )
    except DatabaseError:
        logger.warning(
            "delivery of %s[%s] not counted (database error)", task.name, task_id
        )
        return
    logger.error(
        "task %s[%s] delivered %s times (cap %s): dead-lettered, not run",
        task.name,
        task_id,
        deliveries,
        cap,
    )
    raise Ignore()


class DeliveryCap:
    """The task annotation that gives every task ``guard_before_start``."""

    def annotate(self, task) -> dict | None:
        return None

    def annotate_any(self) -> dict:
        return {"before_start": guard_before_start}


def _delivery_finished(sender=None, task_id=None, state=None, retval=None, **_ignored):
    request = getattr(sender, "request", None)
    if task_id is None or (request is not None and request.is_eager):
        return
    try:
        if state == states.REJECTED:
            # Rejected back to the queue: the next delivery adds to the count.
            task_delivery_error_note(task_id=task_id, error=f"rejected: {retval!r}")
        else:
            task_delivery_end(task_id=task_id)
    except DatabaseError:
        logger.warning("delivery count of %s not updated (database error)", task_id)


def install(app=None) -> None:
    """Add the delivery cap to every task of ``app`` (the current Celery app).

    Annotations are applied when a task class is bound to the app, which
    happens on first use, after Django's apps are ready.
    """
    from celery import current_app, signals

    app = app or current_app
    annotations = app.conf.task_annotations
    if annotations is None:
        annotations = []
    elif not isinstance(annotations, (list, tuple)):
        annotations = [annotations]
    if not any(isinstance(a, DeliveryCap) for a in annotations):
        app.conf.task_annotations = [*annotations, DeliveryCap()]
        if "annotations" in app.__dict__:  # already computed: recompute on next bind
            del app.__dict__["annotations"]
    signals.task_postrun.connect(
        _delivery_finished, weak=False, dispatch_uid="taskguard"
    )
