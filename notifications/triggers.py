"""Which event is which customer moment, and when a message may go out.

Pure functions of their inputs (no queries), so the tables below can be read
against the issue and tested with plain values.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from .models import Trigger

# The event types any rule can react to; everything else is skipped unseen.
TRIGGER_EVENT_TYPES = frozenset(
    {
        "shipment.created",
        "leg.departed",
        "leg.completed",
        "leg.failed",
        "shipment.at_risk",
        "eta.updated",
    }
)

# (event type, leg mile) -> trigger, for a shipment on its way to the customer.
_LEG_TRIGGERS: dict[tuple[str, str], str] = {
    ("leg.departed", "first"): Trigger.PICKED_UP,
    ("leg.completed", "first"): Trigger.ARRIVED_AT_HUB,  # scanned into the hub
    ("leg.departed", "middle"): Trigger.DEPARTED_HUB,
    ("leg.completed", "middle"): Trigger.ARRIVED_AT_HUB,
    ("leg.departed", "last"): Trigger.OUT_FOR_DELIVERY,
    ("leg.completed", "last"): Trigger.DELIVERED,
    ("leg.failed", "last"): Trigger.ATTEMPT_FAILED,
}


def trigger_for(*, event_type: str, payload: dict, is_return: bool) -> str | None:
    """The customer moment an event stands for, or None.

    A return shipment speaks only once, when it starts; its legs are the
    shipper's business. ``leg.arrived`` is skipped on purpose: the hand-over
    (``leg.completed``) follows it, and one message per hub is enough.
    """
    if is_return:
        return Trigger.RETURN_STARTED if event_type == "shipment.created" else None
    if event_type == "shipment.at_risk":
        return Trigger.AT_RISK
    if event_type == "eta.updated":
        return Trigger.ETA_MOVED
    return _LEG_TRIGGERS.get((event_type, str(payload.get("mile", ""))))


def eta_moved_enough(
    *, told: datetime | None, current: datetime | None, threshold: timedelta
) -> bool:
    """True when the ETA differs from the one last told by more than the threshold."""
    if current is None:
        return False
    if told is None:
        return True
    return abs(current - told) > threshold


def quiet_hours_end(
    *, local_now: datetime, start: time | None, end: time | None
) -> datetime | None:
    """When the quiet window around ``local_now`` ends, or None outside it.

    ``local_now`` is an aware local datetime; a window may span midnight
    (21:00-08:00). Equal start and end means no quiet hours.
    """
    if start is None or end is None or start == end:
        return None
    clock = local_now.timetz().replace(tzinfo=None)
    day = local_now.date()
    if start < end:
        inside = start <= clock < end
        end_day = day
    else:  # spans midnight
        inside = clock >= start or clock < end
        end_day = day + timedelta(days=1) if clock >= start else day
    if not inside:
        return None
    # zoneinfo resolves the offset of the wall-clock end (DST-safe).
    return datetime.combine(end_day, end, tzinfo=local_now.tzinfo)


def language_pick(requested: str, supported: list[str], default: str = "en") -> str:
    """'fr-FR', 'FR' or 'fr' -> 'fr' when French is supported; else the default."""
    code = (requested or "").strip().lower().replace("_", "-")
    if code in supported:
        return code
    base = code.split("-")[0]
    return base if base in supported else default
