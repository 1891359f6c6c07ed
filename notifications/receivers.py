"""Signal receivers: hints that queue work, never the work itself."""

from __future__ import annotations

import logging

from .triggers import TRIGGER_EVENT_TYPES

logger = logging.getLogger(__name__)


def event_committed(
    sender, *, event_id: int, shipment_id: int, event_type: str, **kwargs
) -> None:
    """Queue the rules' decision for an event that may concern a customer."""
    if event_type not in TRIGGER_EVENT_TYPES:
        return
    from shipments.models import Shipment

    from .tasks import notification_event_process_task

    # Of all creations only a return's start is news (a bulk import stays quiet).
    if event_type == "shipment.created" and not (
        Shipment.objects.filter(pk=shipment_id, is_return=True).exists()
    ):
        return

    try:
        notification_event_process_task.delay(event_id)
    except Exception:  # noqa: BLE001 - broker away: the sweep finds the event
        logger.warning("could not queue notifications for event %s", event_id)
