"""Fault hooks for the [FAULT] tier, switched on per process by environment variables.

Installed by ``ReliabilityConfig.ready`` (``config.settings.reliability`` only).

``RELIABILITY_FAULT_HOOKS=1`` (R3) connects a ``post_save`` receiver of
``OutboxMessage``. It runs inside the business transaction, right after the
business rows and their outbox row were written, and injects the fault the
request asked for (``reliability.middleware``): an exception, so the
transaction must roll back whole, or a ``pg_sleep`` that holds it open while
the harness SIGKILLs the worker. A held transaction names itself in
``pg_stat_activity.application_name`` (``reliability-hold:<pid>``) so the
harness knows which process to kill.
"""

from __future__ import annotations

import os

from django.db import connection
from django.db.models.signals import post_save

from .middleware import requested_fault

FAULT_HOOKS_ENV = "RELIABILITY_FAULT_HOOKS"
HOLD_APPLICATION_PREFIX = "reliability-hold:"


class InjectedFault(RuntimeError):
    """Raised on purpose between the business write and the commit."""


def outbox_written_fault(sender, instance, created: bool, **kwargs) -> None:
    fault = requested_fault.get()
    if fault is None or not created:
        return
    requested_fault.set(None)  # once per request, however many outbox rows it writes
    if fault.kind == "raise":
        raise InjectedFault(f"injected after outbox row {instance.pk}, before commit")
    with connection.cursor() as cursor:
        # SET LOCAL: the name goes away with the transaction (pooled connections).
        cursor.execute(
            "SELECT set_config('application_name', %s, true)",
            [f"{HOLD_APPLICATION_PREFIX}{os.getpid()}"],
        )
        cursor.execute("SELECT pg_sleep(%s)", [fault.seconds])


def install() -> None:
    """Connect the hooks whose environment variables are set."""
    if os.environ.get(FAULT_HOOKS_ENV) == "1":
        from shipments.models import OutboxMessage

        post_save.connect(
            outbox_written_fault, sender=OutboxMessage, dispatch_uid="reliability-outbox-fault"
        )
