"""Customer communication: rules, templates, the delivery log, opt-outs, and
what customers tell us through the tracking page.

    ShipmentEvent ──▶ trigger (picked up, out for delivery, at risk …)
        ──▶ each active NotificationRule of that trigger ──▶ one Message per
            (event, rule, recipient), unique: the decision is taken once
        ──▶ queued / scheduled (quiet hours) / suppressed (opted out, throttled …)
        ──▶ sent or failed, by a Celery task, with every attempt on the row
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Channel(models.TextChoices):
    EMAIL = "email", "E-mail"
    SMS = "sms", "SMS"


class Trigger(models.TextChoices):
    PICKED_UP = "picked_up", "Picked up from the seller"
    ARRIVED_AT_HUB = "arrived_at_hub", "Arrived at a hub"
    DEPARTED_HUB = "departed_hub", "Departed from a hub"
    OUT_FOR_DELIVERY = "out_for_delivery", "Out for delivery (with the ETA window)"
    ETA_MOVED = "eta_moved", "ETA moved by more than N minutes"
    AT_RISK = "at_risk", "At risk of missing the promise"
    DELIVERED = "delivered", "Delivered (with proof)"
    ATTEMPT_FAILED = (
        "attempt_failed",
        "Delivery attempt failed (with what happens next)",
    )
    RETURN_STARTED = "return_started", "Return started"


class RecipientRole(models.TextChoices):
    # For a return shipment the consignee is still the customer who ordered.
    CONSIGNEE = "consignee", "Consignee (the customer)"
    SHIPPER = "shipper", "Shipper"


class NotificationRule(models.Model):
    """Which event sends which message to whom, on which channel. Admin-editable."""

    name = models.CharField(max_length=120)
    trigger = models.CharField(max_length=30, choices=Trigger.choices)
    recipient_role = models.CharField(
        max_length=20, choices=RecipientRole.choices, default=RecipientRole.CONSIGNEE
    )
    channel = models.CharField(max_length=10, choices=Channel.choices)
    is_active = models.BooleanField(default=True)
    # At most one message per shipment, rule and recipient in this interval
    # (0: no limit), so a jittery ETA or a flapping risk flag never spams.
    min_interval_minutes = models.PositiveIntegerField(default=0)
    # ETA_MOVED only: how far the ETA must move from the one last told.
    eta_threshold_minutes = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1)]
    )
    # Local time (settings.TIME_ZONE); a window may span midnight (21:00-08:00).
    quiet_hours_start = models.TimeField(null=True, blank=True)
    quiet_hours_end = models.TimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["trigger", "recipient_role", "channel", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(quiet_hours_start__isnull=True, quiet_hours_end__isnull=True)
                    | Q(quiet_hours_start__isnull=False, quiet_hours_end__isnull=False)
                ),
                name="rule_quiet_hours_both_or_neither",
            ),
        ]
        indexes = [
            # Serves decisions: the active rules of one trigger.
            models.Index(
                fields=["trigger"],
                condition=Q(is_active=True),
                name="rule_active_trigger",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class MessageTemplate(models.Model):
    """A rule's wording in one language (Django template syntax).

    Without a row, the default shipped in ``templates/notifications/messages/``
    is used. The subject is for e-mail only.
    """

    rule = models.ForeignKey(
        NotificationRule, on_delete=models.CASCADE, related_name="templates"
    )
    language = models.CharField(max_length=8, choices=settings.LANGUAGES)
    subject = models.CharField(max_length=300, blank=True)
    body = models.TextField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["rule_id", "language"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "language"], name="message_template_unique_language"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rule} ({self.language})"

    def clean(self) -> None:
        from .rendering import template_source_check

        template_source_check(subject=self.subject, body=self.body)


class NotificationOptOut(models.Model):
    """A recipient who asked for no more messages on a channel."""

    channel = models.CharField(max_length=10, choices=Channel.choices)
    address = models.CharField(max_length=254)  # normalised e-mail or phone number
    source = models.CharField(max_length=20, default="dashboard")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "opt-out"
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "address"], name="opt_out_unique_address"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.address}"


class EventReview(models.Model):
    """The sweep's bookmark: this event has been looked at by the rules."""

    event = models.OneToOneField(
        "shipments.ShipmentEvent",
        on_delete=models.PROTECT,
        primary_key=True,
        related_name="notification_review",
    )
    reviewed_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"event {self.event_id} reviewed"


class Message(models.Model):
    """One decision and its delivery: the log the dispatcher reads."""

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled (quiet hours)"
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        RETRYING = "retrying", "Waiting to retry"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SUPPRESSED = "suppressed", "Not sent"

    shipment = models.ForeignKey(
        "shipments.Shipment", on_delete=models.PROTECT, related_name="messages"
    )
    event = models.ForeignKey(
        "shipments.ShipmentEvent", on_delete=models.PROTECT, related_name="messages"
    )
    rule = models.ForeignKey(
        NotificationRule, on_delete=models.PROTECT, related_name="messages"
    )
    channel = models.CharField(max_length=10, choices=Channel.choices)
    recipient_role = models.CharField(max_length=20, choices=RecipientRole.choices)
    recipient = models.CharField(max_length=254, blank=True)  # "" when none is known
    language = models.CharField(max_length=8, default="en")
    subject = models.CharField(max_length=300, blank=True)
    body = models.TextField(blank=True)
    status = models.CharField(max_length=12, choices=Status.choices)
    # Why it was not sent, or why the last attempt failed.
    reason = models.CharField(max_length=500, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    send_after = models.DateTimeField(null=True, blank=True)  # end of quiet hours
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    provider_message_id = models.CharField(max_length=200, blank=True)
    # Facts the message told (e.g. the ETA), for later decisions ("moved since?").
    facts = models.JSONField(default=dict, blank=True)
    # The decision's time (the throttle's clock), set by the service.
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["event", "rule", "recipient"], name="message_once_per_decision"
            ),
        ]
        indexes = [
            # Serves the throttle and "last ETA told": one shipment's messages of a rule.
            models.Index(
                fields=["shipment", "rule", "created_at"], name="message_throttle"
            ),
            # Serves the sweep: messages still to send or retry.
            models.Index(
                fields=["status", "next_attempt_at"],
                condition=Q(status__in=["scheduled", "queued", "sending", "retrying"]),
                name="message_pending",
            ),
            # Serves the KPIs: messages of a day.
            models.Index(fields=["created_at"], name="message_created"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} to {self.recipient or '-'} ({self.status})"


# ---------------------------------------------------------------------------
# What customers tell us through the tracking page
# ---------------------------------------------------------------------------


class DeliveryInstruction(models.Model):
    """The customer's latest instructions for the driver (one row per shipment)."""

    shipment = models.OneToOneField(
        "shipments.Shipment",
        on_delete=models.CASCADE,
        related_name="delivery_instruction",
    )
    safe_place = models.CharField(max_length=120, blank=True)
    door_code = models.CharField(max_length=20, blank=True)
    note = models.CharField(max_length=500, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"instructions for {self.shipment_id}"


class HubPickupRequest(models.Model):
    """The customer will collect the parcel at the hub after a failed attempt."""

    class Status(models.TextChoices):
        REQUESTED = "requested", "Requested"
        WITHDRAWN = "withdrawn", "Withdrawn (redelivery chosen instead)"
        COLLECTED = "collected", "Collected"

    shipment = models.ForeignKey(
        "shipments.Shipment",
        on_delete=models.CASCADE,
        related_name="hub_pickup_requests",
    )
    hub = models.ForeignKey("shipments.Hub", on_delete=models.PROTECT, related_name="+")
    status = models.CharField(
        max_length=12, choices=Status.choices, default=Status.REQUESTED
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["shipment"],
                condition=Q(status="requested"),
                name="hub_pickup_one_open_per_shipment",
            ),
        ]

    def __str__(self) -> str:
        return f"pickup of {self.shipment_id} at {self.hub_id} ({self.status})"


class CustomerRating(models.Model):
    """How the delivery went, once delivered: 1-5 stars and a comment."""

    shipment = models.OneToOneField(
        "shipments.Shipment", on_delete=models.CASCADE, related_name="customer_rating"
    )
    stars = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(5)]
    )
    comment = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(stars__gte=1, stars__lte=5), name="rating_stars_1_to_5"
            ),
        ]
        indexes = [models.Index(fields=["created_at"], name="rating_created")]

    def __str__(self) -> str:
        return f"{self.stars}/5 for {self.shipment_id}"
