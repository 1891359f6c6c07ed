"""Install the default notification rules (a frozen copy of notifications.defaults)."""

from datetime import time

from django.db import migrations

NIGHT = {"quiet_hours_start": time(21, 0), "quiet_hours_end": time(8, 0)}
RULES = [
    {"name": "Picked up (e-mail)", "trigger": "picked_up", "channel": "email"},
    {"name": "Arrived at hub (e-mail)", "trigger": "arrived_at_hub", "channel": "email"},
    {"name": "Departed hub (e-mail)", "trigger": "departed_hub", "channel": "email"},
    {"name": "Out for delivery (e-mail)", "trigger": "out_for_delivery", "channel": "email"},
    {"name": "Out for delivery (SMS)", "trigger": "out_for_delivery", "channel": "sms", **NIGHT},
    {
        "name": "ETA moved (e-mail)",
        "trigger": "eta_moved",
        "channel": "email",
        "eta_threshold_minutes": 30,
        "min_interval_minutes": 60,
        **NIGHT,
    },
    {
        "name": "At risk (e-mail)",
        "trigger": "at_risk",
        "channel": "email",
        "min_interval_minutes": 720,
        **NIGHT,
    },
    {"name": "Delivered (e-mail)", "trigger": "delivered", "channel": "email"},
    {"name": "Attempt failed (e-mail)", "trigger": "attempt_failed", "channel": "email"},
    {"name": "Attempt failed (SMS)", "trigger": "attempt_failed", "channel": "sms", **NIGHT},
    {"name": "Return started (e-mail)", "trigger": "return_started", "channel": "email"},
]


def install(apps, schema_editor):
    rule_model = apps.get_model("notifications", "NotificationRule")
    for spec in RULES:
        fields = {"recipient_role": "consignee", **spec}
        rule_model.objects.get_or_create(name=fields.pop("name"), defaults=fields)


class Migration(migrations.Migration):
    dependencies = [("notifications", "0001_initial")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
