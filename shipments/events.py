"""Appending to the shipment event log (and the outbox, in the same transaction)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.dispatch import Signal

from .models import Leg, Shipment, ShipmentEvent
from .outbox import DASHBOARD_GROUP, outbox_enqueue, shipment_group

# Sent after the transaction that recorded an event commits, with ``event_id``,
# ``shipment_id`` and ``event_type``. A hint for reactive work (notifications,
# webhooks): receivers must also sweep the log, since a crash between commit and
# this signal skips it.
shipment_event_committed = Signal()


def event_record(
    *,
    shipment: Shipment,
    type: str,
    source: str,
    leg: Leg | None = None,
    actor=None,
    occurred_at: datetime | None = None,
    latitude: float | None = None,
    longitude: float | None = None,
    idempotency_key: str | None = None,
    payload: dict[str, Any] | None = None,
    extra_groups: list[str] | None = None,
) -> ShipmentEvent:
    """Write one event and its outbox message. Must run inside the transaction
    that made the change the event describes."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("event_record must run inside the transaction of the change")
    event = ShipmentEvent.objects.create(
        shipment=shipment,
        leg=leg,
        type=type,
        source=source,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        occurred_at=occurred_at,
        latitude=latitude,
        longitude=longitude,
        idempotency_key=idempotency_key,
        payload=payload or {},
    )
    outbox_enqueue(
        type="shipment.event",
        groups=[DASHBOARD_GROUP, shipment_group(shipment.pk), *(extra_groups or [])],
        payload={
            "event_id": event.pk,
            "event_type": type,
            "shipment_id": shipment.pk,
            "reference": shipment.reference,
            "leg_id": leg.pk if leg else None,
            "status": shipment.status,
            "current_mile": shipment.current_mile,
            "is_at_risk": shipment.is_at_risk,
            "eta": shipment.eta.isoformat() if shipment.eta else None,
            "recorded_at": event.recorded_at.isoformat(),
            "details": payload or {},
        },
        shipment_id=shipment.pk,
    )
    transaction.on_commit(
        lambda: shipment_event_committed.send(
            sender=ShipmentEvent,
            event_id=event.pk,
            shipment_id=shipment.pk,
            event_type=type,
        )
    )
    return event
