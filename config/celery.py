"""The Celery app. Settings come from Django settings under the CELERY_ namespace."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("allmile")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Periodic work: one readable schedule that fans out (tasks live in their apps).
app.conf.beat_schedule = {
    "relay-outbox": {"task": "tracking.tasks.outbox_relay_task", "schedule": 2.0},
    "sweep-silent-routes": {"task": "tracking.tasks.eta_sweep_task", "schedule": 60.0},
    "recover-optimization-jobs": {
        "task": "routing.tasks.optimization_job_recover_task",
        "schedule": 60.0,
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
