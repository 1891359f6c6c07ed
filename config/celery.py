"""The Celery app. Settings come from Django settings under the CELERY_ namespace."""

import logging
import os

from celery import Celery
from celery.worker.consumer import Consumer

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

logger = logging.getLogger(__name__)


class BrokerLossConsumer(Consumer):
    """The worker's consumer, surviving a Redis restart that finds tasks in flight.

    When the broker goes away, Celery closes the dead connection before it
    reconnects. With late acks there are delivered, unacknowledged messages,
    and kombu (5.7) tries to hand them back through a transport it has already
    detached: an AttributeError escapes the close, Celery calls it an
    "Unrecoverable error" and the worker stops consuming for good (measured
    in R5: a clean Redis restart under load). The connection is gone either
    way, so carry on and reconnect; the messages stay in Redis's unacked set
    and come back after the visibility timeout (every task is idempotent).
    """

    def on_connection_error_after_connected(self, exc):
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError:
            logger.warning("closing the lost broker connection failed; reconnecting", exc_info=True)


app = Celery("allmile")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.worker_consumer = f"{__name__}:BrokerLossConsumer"
app.autodiscover_tasks()

# Periodic work: one readable schedule that fans out (tasks live in their apps).
app.conf.beat_schedule = {
    "relay-outbox": {"task": "tracking.tasks.outbox_relay_task", "schedule": 2.0},
    "sweep-silent-routes": {"task": "tracking.tasks.eta_sweep_task", "schedule": 60.0},
    "recover-optimization-jobs": {
        "task": "routing.tasks.optimization_job_recover_task",
        # Two indexed queries: a dead worker's job is back in the queue quickly.
        "schedule": 15.0,
    },
    "retry-webhooks": {"task": "tracking.tasks.webhook_retry_sweep_task", "schedule": 60.0},
    "sweep-notifications": {
        "task": "notifications.tasks.notification_sweep_task",
        "schedule": 60.0,
    },
    "purge-idempotency-keys": {
        "task": "shipments.tasks.idempotency_purge_task",
        "schedule": 3600.0,
    },
}
