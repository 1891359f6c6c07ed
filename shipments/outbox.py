"""Writing messages to the outbox, inside the business transaction.

The relay (tracking app) publishes them to Channels groups after commit, so a
crash between commit and publish loses nothing. Group names live here because
every app that writes events needs them and ``shipments`` imports no other app.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from .models import OutboxMessage

DASHBOARD_GROUP = "dashboard"


def shipment_group(shipment_id: int) -> str:
    return f"shipment.{shipment_id}"


def driver_group(driver_id: int) -> str:
    return f"driver.{driver_id}"


def optimization_group(job_id: int) -> str:
    return f"optimization.{job_id}"


def outbox_enqueue(
    *,
    type: str,
    groups: list[str],
    payload: dict[str, Any],
    shipment_id: int | None = None,
) -> OutboxMessage:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("outbox_enqueue must run inside the business transaction")
    return OutboxMessage.objects.create(
        type=type, groups=groups, payload=payload, shipment_id_ref=shipment_id
    )
