"""Signal receivers: hints that queue work, never the work itself."""

from __future__ import annotations

import logging

from .triggers import TRIGGER_EVENT_TYPES

logger = logging.getLogger(__name__)


def event_committed(sender, *, event_id: int, event_type: str, **kwargs) -> None:
    """Queue the rules' decision for an event that may concern a customer."""
    if event_type not in TRIGGER_EVENT_TYPES:
        return
    from .tasks import notification_event_process_task

    try:
        notification_event_process_task.delay(event_id)
    except Exception:  # noqa: BLE001 - broker away: the sweep finds the event
        logger.warning("could not queue notifications for event %s", event_id)
