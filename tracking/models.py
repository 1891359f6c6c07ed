"""Live tracking: relay state, forecasts, ETA history, exceptions and webhooks.

Shipments, legs, routes and stops belong to other apps; this app only keeps
what it derives from them (forecasts, ETA history, exceptions) and what it
needs to deliver messages (relay state, webhook endpoints and deliveries).
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q


class RelayState(models.Model):
    """One row: the last stream sequence number handed out by the outbox relay.

    The relay locks this row while it numbers new outbox messages, so numbers are
    given in commit order and a reader of ``stream_seq > n`` never skips a
    message that commits late.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_seq = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"relay at seq {self.last_seq}"


def write_lock_take() -> None:
    """On SQLite (the embedded default), start a transaction with a write.

    A SQLite transaction that reads first and writes later cannot wait for the
    write lock (it fails at once with "database is locked"); one that writes
    first waits its turn. PostgreSQL needs nothing here: row locks do the job.
    """
    from django.db import connection

    if connection.vendor == "sqlite":
        RelayState.objects.filter(pk=1).update(last_seq=models.F("last_seq"))


class RouteForecast(models.Model):
    """The ETA engine's latest view of one route (one row per route)."""

    route = models.OneToOneField(
        "routing.Route", on_delete=models.CASCADE, related_name="forecast"
    )
    computed_at = models.DateTimeField()
    # Where the estimate started from: the latest ping, or the last finished stop.
    origin_latitude = models.FloatField(null=True, blank=True)
    origin_longitude = models.FloatField(null=True, blank=True)
    last_ping_at = models.DateTimeField(null=True, blank=True)
    # Lateness of the next stop against its planned arrival (negative: early).
    delay_seconds = models.IntegerField(default=0)
    # Observed travel time over planned travel time on the finished part (1 = on plan).
    pace_factor = models.FloatField(default=1.0)
    remaining_stops = models.PositiveIntegerField(default=0)
    end_eta = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"forecast of route {self.route_id}"


class LegForecast(models.Model):
    """Expected departure and arrival of a leg after delay propagation.

    Planned times on the leg stay as planned; this row says where the leg now
    stands, e.g. a middle-mile leg moved to the next departure after a missed
    cut-off.
    """

    leg = models.OneToOneField("shipments.Leg", on_delete=models.CASCADE, related_name="forecast")
    expected_departure = models.DateTimeField(null=True, blank=True)
    expected_arrival = models.DateTimeField(null=True, blank=True)
    missed_cutoff = models.BooleanField(default=False)
    delay_seconds = models.IntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"forecast of leg {self.leg_id}"


class EtaRecord(models.Model):
    """One ETA as it was estimated at one moment: the history behind ETA accuracy.

    A row is written only when a stop's ETA moves by at least a minute, so a
    steady stream of pings does not flood the table.
    """

    class Source(models.TextChoices):
        PING = "ping", "Ping or stop event"
        SWEEP = "sweep", "Periodic sweep"
        PLAN = "plan", "Plan"

    stop = models.ForeignKey(
        "routing.RouteStop", on_delete=models.CASCADE, related_name="eta_records"
    )
    eta = models.DateTimeField()
    computed_at = models.DateTimeField()
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.PING)

    class Meta:
        ordering = ["stop_id", "computed_at", "id"]
        indexes = [
            # Serves ETA accuracy: the last estimate for a stop before a horizon.
            models.Index(fields=["stop", "computed_at"], name="eta_record_stop_time"),
        ]

    def __str__(self) -> str:
        return f"stop {self.stop_id} eta {self.eta:%H:%M}"


class ExceptionType(models.TextChoices):
    MISSED_CUTOFF = "missed_cutoff", "Missed middle-mile cut-off"
    LATE_LINEHAUL = "late_linehaul", "Late line-haul arrival"
    LATE_DELIVERY = "late_delivery", "Delivery running late"
    DRIVER_SILENT = "driver_silent", "Driver silent"


class Severity(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"
    CRITICAL = "critical", "Critical"


class DeliveryException(models.Model):
    """A promise at risk, or an operational problem, for a dispatcher to act on.

    ``key`` names the cause (e.g. the hub and departure a first-mile route will
    miss), so repeated estimates update one open exception rather than raising
    new ones; at most one unresolved exception exists per key.
    """

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        RESOLVED = "resolved", "Resolved"

    class Resolution(models.TextChoices):
        RECOVERED = "recovered", "Recovered (delay shrank)"
        MANUAL = "manual", "Resolved by a dispatcher"

    key = models.CharField(max_length=160)
    type = models.CharField(max_length=20, choices=ExceptionType.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    status = models.CharField(max_length=14, choices=Status.choices, default=Status.OPEN)
    title = models.CharField(max_length=200)
    detail = models.TextField(blank=True)
    suggested_action = models.CharField(max_length=300, blank=True)
    shipments = models.ManyToManyField(
        "shipments.Shipment", blank=True, related_name="delivery_exceptions"
    )
    hub = models.ForeignKey(
        "shipments.Hub", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    route = models.ForeignKey(
        "routing.Route", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    driver = models.ForeignKey(
        "dispatch.Driver", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    delay_seconds = models.IntegerField(default=0)
    data = models.JSONField(default=dict, blank=True)
    raised_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolution = models.CharField(max_length=10, choices=Resolution.choices, blank=True)
    note = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-raised_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["key"],
                condition=~Q(status="resolved"),
                name="exception_one_unresolved_per_key",
            ),
        ]
        indexes = [
            # Serves the dashboard's open-exceptions panel.
            models.Index(
                fields=["-raised_at"], condition=~Q(status="resolved"), name="exception_unresolved"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.key} ({self.status})"


def webhook_secret_new() -> str:
    return secrets.token_urlsafe(32)


class WebhookEndpoint(models.Model):
    """A shipper's URL that receives signed status changes of its shipments."""

    shipper = models.ForeignKey(
        "shipments.Party", on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=100, default=webhook_secret_new)
    # Event types to send; empty means every status change.
    event_types = models.JSONField(default=list, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    """One message to one endpoint, with its attempts (the delivery log)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed for good"

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    # The shipment event that caused it: (endpoint, event) is delivered once.
    event_id = models.BigIntegerField()
    event_type = models.CharField(max_length=60)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "event_id"], name="webhook_delivery_once_per_event"
            ),
        ]
        indexes = [
            # Serves the retry sweep: pending deliveries that are due.
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="webhook_delivery_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} → {self.endpoint_id} ({self.status})"
