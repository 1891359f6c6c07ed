"""Moving a shipment along its whole journey through the real leg service."""

from __future__ import annotations

import re

from notifications.models import Message
from notifications.services import notification_send, notifications_decide_for_event
from shipments.models import Shipment, ShipmentEvent
from shipments.services import leg_transition

LINK = re.compile(r"https?://\S+/t/([A-Za-z0-9_-]{20,})")

# (mile, leg status) in the order a parcel lives them, first mile to the door.
JOURNEY = [
    ("first", "assigned"),
    ("first", "in_transit"),  # picked up
    ("first", "completed"),  # arrived at the DC
    ("middle", "assigned"),
    ("middle", "in_transit"),  # departed the DC
    ("middle", "completed"),  # arrived at the Monaco hub
    ("last", "assigned"),
    ("last", "in_transit"),  # out for delivery
    ("last", "completed"),  # delivered
]


def leg_of(shipment: Shipment, mile: str):
    return (
        shipment.legs.exclude(status="cancelled")
        .filter(mile=mile)
        .order_by("-sequence")
        .first()
    )


def step(shipment: Shipment, mile: str, status: str, **kwargs):
    return leg_transition(
        leg_id=leg_of(shipment, mile).pk, to=status, source="driver", **kwargs
    )


def decide_pending(shipment: Shipment, *, now=None) -> list[Message]:
    """What the signal + worker do, run here: decide every undecided event."""
    decided = []
    for event_id in (
        ShipmentEvent.objects.filter(
            shipment=shipment, notification_review__isnull=True
        )
        .order_by("id")
        .values_list("pk", flat=True)
    ):
        decided += notifications_decide_for_event(event_id=event_id, now=now)
    return decided


def process_in_process(shipment: Shipment) -> list[Message]:
    """Decide every undecided event of the shipment, then make one attempt at
    every queued message."""
    decided = decide_pending(shipment)
    for message in decided:
        if message.status == Message.Status.QUEUED:
            notification_send(message_id=message.pk)
    return decided


def link_token(text: str) -> str:
    match = LINK.search(text)
    assert match, f"no tracking link in: {text!r}"
    return match.group(1)
