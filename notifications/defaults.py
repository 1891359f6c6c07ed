"""The rules a fresh installation starts with (also installed by migration 0002).

Consignee messages on e-mail for every moment of the journey, SMS for the two
that need the customer's attention the same day; SMS and "late" messages keep
quiet at night, and jittery moments are throttled.
"""

from __future__ import annotations

from datetime import time

from django.db import transaction

from .models import Channel, NotificationRule, RecipientRole, Trigger

NIGHT = {"quiet_hours_start": time(21, 0), "quiet_hours_end": time(8, 0)}

DEFAULT_RULES: list[dict] = [
    {
        "name": "Picked up (e-mail)",
        "trigger": Trigger.PICKED_UP,
        "channel": Channel.EMAIL,
    },
    {
        "name": "Arrived at hub (e-mail)",
        "trigger": Trigger.ARRIVED_AT_HUB,
        "channel": Channel.EMAIL,
    },
    {
        "name": "Departed hub (e-mail)",
        "trigger": Trigger.DEPARTED_HUB,
        "channel": Channel.EMAIL,
    },
    {
        "name": "Out for delivery (e-mail)",
        "trigger": Trigger.OUT_FOR_DELIVERY,
        "channel": Channel.EMAIL,
    },
    {
        "name": "Out for delivery (SMS)",
        "trigger": Trigger.OUT_FOR_DELIVERY,
        "channel": Channel.SMS,
        **NIGHT,
    },
    {
        "name": "ETA moved (e-mail)",
        "trigger": Trigger.ETA_MOVED,
        "channel": Channel.EMAIL,
        "eta_threshold_minutes": 30,
        "min_interval_minutes": 60,
        **NIGHT,
    },
    {
        "name": "At risk (e-mail)",
        "trigger": Trigger.AT_RISK,
        "channel": Channel.EMAIL,
        "min_interval_minutes": 720,
        **NIGHT,
    },
    {
        "name": "Delivered (e-mail)",
        "trigger": Trigger.DELIVERED,
        "channel": Channel.EMAIL,
    },
    {
        "name": "Attempt failed (e-mail)",
        "trigger": Trigger.ATTEMPT_FAILED,
        "channel": Channel.EMAIL,
    },
    {
        "name": "Attempt failed (SMS)",
        "trigger": Trigger.ATTEMPT_FAILED,
        "channel": Channel.SMS,
        **NIGHT,
    },
    {
        "name": "Return started (e-mail)",
        "trigger": Trigger.RETURN_STARTED,
        "channel": Channel.EMAIL,
    },
]


@transaction.atomic
def notification_rules_install_defaults() -> list[NotificationRule]:
    """Create the default rules that are missing (matched by name); returns all of them."""
    rules = []
    for spec in DEFAULT_RULES:
        fields = {"recipient_role": RecipientRole.CONSIGNEE, **spec}
        rule, _ = NotificationRule.objects.get_or_create(
            name=fields.pop("name"), defaults=fields
        )
        rules.append(rule)
    return rules
