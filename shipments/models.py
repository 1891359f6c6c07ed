"""Locations, hubs, parties, shipments, parcels, legs, the event log and the outbox.

``ShipmentEvent`` is the single source of truth: every state change writes one
row in the same transaction as the change, and rows are never edited or
deleted (enforced here and, on PostgreSQL, by a trigger).
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from .states import LegStatus, Mile, ShipmentStatus, TransportMode

LATITUDE_VALIDATORS = [MinValueValidator(-90), MaxValueValidator(90)]
LONGITUDE_VALIDATORS = [MinValueValidator(-180), MaxValueValidator(180)]


class Location(models.Model):
    """A place on the map. Contact fields are personal data: never on public views."""

    address = models.CharField(max_length=300)
    latitude = models.FloatField(validators=LATITUDE_VALIDATORS)
    longitude = models.FloatField(validators=LONGITUDE_VALIDATORS)
    contact_name = models.CharField(max_length=120, blank=True)
    contact_phone = models.CharField(max_length=40, blank=True)
    contact_email = models.EmailField(blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(latitude__gte=-90, latitude__lte=90),
                name="location_latitude_range",
            ),
            models.CheckConstraint(
                condition=Q(longitude__gte=-180, longitude__lte=180),
                name="location_longitude_range",
            ),
        ]

    def __str__(self) -> str:
        return self.address


class Hub(models.Model):
    class Kind(models.TextChoices):
        WAREHOUSE = "warehouse", "Warehouse"
        DISTRIBUTION_CENTER = "distribution_center", "Distribution center"
        FULFILLMENT_CENTER = "fulfillment_center", "Fulfillment center"
        CROSS_DOCK = "cross_dock", "Cross-dock"
        DEPOT = "depot", "Depot"

    code = models.SlugField(max_length=20, unique=True)
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=30, choices=Kind.choices)
    location = models.OneToOneField(
        Location, on_delete=models.PROTECT, related_name="hub"
    )
    # {"mon": ["06:00", "22:00"], ...}; a missing day means closed.
    opening_hours = models.JSONField(default=dict, blank=True)
    # Middle-mile departures, "HH:MM" local time: freight must be in by then.
    cutoff_times = models.JSONField(default=list, blank=True)
    service_radius_km = models.FloatField(
        default=30, validators=[MinValueValidator(0.1)]
    )
    handling_minutes = models.PositiveIntegerField(default=30)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.code} {self.name}"


class Party(models.Model):
    """A shipper, producer, supplier or consignee."""

    class Kind(models.TextChoices):
        SHIPPER = "shipper", "Shipper"
        PRODUCER = "producer", "Producer"
        SUPPLIER = "supplier", "Supplier"
        CONSIGNEE = "consignee", "Consignee"

    name = models.CharField(max_length=160)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=40, blank=True)
    language = models.CharField(max_length=8, default="en")
    default_location = models.ForeignKey(
        Location, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name_plural = "parties"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


# What a vehicle must offer to carry a shipment (matched against Vehicle.skills).
SHIPMENT_SKILLS = [
    "refrigerated",
    "frozen",
    "tail_lift",
    "hazmat",
    "bulky",
    "high_value",
]


class ServiceLevel(models.TextChoices):
    SAME_DAY = "same_day", "Same day"
    NEXT_DAY = "next_day", "Next day"
    STANDARD = "standard", "Standard"


class Shipment(models.Model):
    shipper = models.ForeignKey(
        Party, on_delete=models.PROTECT, related_name="shipments_sent"
    )
    consignee = models.ForeignKey(
        Party, on_delete=models.PROTECT, related_name="shipments_received"
    )
    reference = models.CharField(max_length=64)
    origin = models.ForeignKey(Location, on_delete=models.PROTECT, related_name="+")
    destination = models.ForeignKey(
        Location, on_delete=models.PROTECT, related_name="+"
    )
    origin_hub = models.ForeignKey(
        Hub, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    destination_hub = models.ForeignKey(
        Hub, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    service_level = models.CharField(
        max_length=20, choices=ServiceLevel.choices, default=ServiceLevel.STANDARD
    )
    pickup_window_start = models.DateTimeField(null=True, blank=True)
    pickup_window_end = models.DateTimeField(null=True, blank=True)
    delivery_window_start = models.DateTimeField(null=True, blank=True)
    delivery_window_end = models.DateTimeField(null=True, blank=True)
    promised_by = models.DateTimeField(null=True, blank=True)
    notes = models.TextField(blank=True, max_length=2000)
    required_skills = models.JSONField(default=list, blank=True)
    is_return = models.BooleanField(default=False)
    original_shipment = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="returns"
    )
    # Denormalised from parcels at creation, for planning queries.
    parcel_count = models.PositiveIntegerField(default=0)
    total_weight_kg = models.DecimalField(
        max_digits=10, decimal_places=3, default=Decimal(0)
    )
    total_volume_m3 = models.DecimalField(
        max_digits=10, decimal_places=4, default=Decimal(0)
    )

    status = models.CharField(
        max_length=20, choices=ShipmentStatus.choices, default=ShipmentStatus.PLANNED
    )
    current_mile = models.CharField(max_length=10, choices=Mile.choices, blank=True)
    is_at_risk = models.BooleanField(default=False)
    eta = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    # The tracking link's token is derived from a secret and this salt (see
    # shipments.tracking_tokens); only its hash is stored, for lookup.
    tracking_salt = models.CharField(max_length=64)
    tracking_version = models.PositiveIntegerField(default=1)
    tracking_token_hash = models.CharField(max_length=64, unique=True)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["shipper", "reference"],
                name="shipment_reference_unique_per_shipper",
            ),
        ]
        indexes = [
            models.Index(fields=["status"]),
            models.Index(fields=["reference"]),
            models.Index(fields=["promised_by"]),
        ]

    def __str__(self) -> str:
        return self.reference


class Parcel(models.Model):
    shipment = models.ForeignKey(
        Shipment, on_delete=models.CASCADE, related_name="parcels"
    )
    barcode = models.CharField(max_length=64, unique=True)
    weight_kg = models.DecimalField(
        max_digits=8, decimal_places=3, validators=[MinValueValidator(Decimal("0.001"))]
    )
    volume_m3 = models.DecimalField(
        max_digits=8,
        decimal_places=4,
        default=Decimal(0),
        validators=[MinValueValidator(0)],
    )
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.barcode


class Leg(models.Model):
    """One segment of a shipment's journey; intermodal legs are just legs."""

    shipment = models.ForeignKey(
        Shipment, on_delete=models.CASCADE, related_name="legs"
    )
    sequence = models.PositiveSmallIntegerField()
    mile = models.CharField(max_length=10, choices=Mile.choices)
    mode = models.CharField(
        max_length=20, choices=TransportMode.choices, default=TransportMode.VAN
    )
    from_location = models.ForeignKey(
        Location, on_delete=models.PROTECT, related_name="+"
    )
    to_location = models.ForeignKey(
        Location, on_delete=models.PROTECT, related_name="+"
    )
    from_hub = models.ForeignKey(
        Hub, null=True, blank=True, on_delete=models.PROTECT, related_name="legs_out"
    )
    to_hub = models.ForeignKey(
        Hub, null=True, blank=True, on_delete=models.PROTECT, related_name="legs_in"
    )
    depends_on = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="dependents",
    )
    status = models.CharField(
        max_length=20, choices=LegStatus.choices, default=LegStatus.PLANNED
    )
    planned_departure = models.DateTimeField(null=True, blank=True)
    planned_arrival = models.DateTimeField(null=True, blank=True)
    actual_departure = models.DateTimeField(null=True, blank=True)
    actual_arrival = models.DateTimeField(null=True, blank=True)
    eta = models.DateTimeField(null=True, blank=True)
    attempt_count = models.PositiveSmallIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["shipment_id", "sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["shipment", "sequence"], name="leg_sequence_unique"
            ),
        ]
        indexes = [models.Index(fields=["mile", "status"])]

    def __str__(self) -> str:
        return f"{self.shipment_id}#{self.sequence} {self.mile}"


class AppendOnlyError(Exception):
    pass


class ShipmentEvent(models.Model):
    """The append-only log. One row per state change, never edited or deleted."""

    class Source(models.TextChoices):
        DASHBOARD = "dashboard", "Dashboard"
        API = "api", "API"
        DRIVER = "driver", "Driver app"
        SYSTEM = "system", "System"
        CUSTOMER = "customer", "Customer"

    id = models.BigAutoField(primary_key=True)
    shipment = models.ForeignKey(
        Shipment, on_delete=models.PROTECT, related_name="events"
    )
    leg = models.ForeignKey(
        Leg, null=True, blank=True, on_delete=models.PROTECT, related_name="events"
    )
    type = models.CharField(max_length=60)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    source = models.CharField(max_length=20, choices=Source.choices)
    occurred_at = models.DateTimeField(null=True, blank=True)  # client time, if any
    recorded_at = models.DateTimeField(auto_now_add=True)  # server time
    latitude = models.FloatField(null=True, blank=True, validators=LATITUDE_VALIDATORS)
    longitude = models.FloatField(
        null=True, blank=True, validators=LONGITUDE_VALIDATORS
    )
    idempotency_key = models.CharField(
        max_length=100, null=True, blank=True, unique=True
    )
    payload = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["shipment", "id"]),
            models.Index(fields=["type"]),
        ]

    def __str__(self) -> str:
        return f"{self.type} on {self.shipment_id}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("Shipment events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Shipment events are append-only.")


class OutboxMessage(models.Model):
    """A message to publish, written in the business transaction and relayed after it.

    ``stream_seq`` is assigned by the relay when it publishes, in publish order, so a
    transaction that commits late is never skipped by a reader of the stream.
    """

    id = models.BigAutoField(primary_key=True)
    message_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    type = models.CharField(max_length=60)
    groups = models.JSONField(default=list)  # channel-layer group names
    payload = models.JSONField(default=dict)
    shipment_id_ref = models.BigIntegerField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    stream_seq = models.BigIntegerField(null=True, blank=True, unique=True)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(
                fields=["id"],
                name="outbox_unpublished",
                condition=Q(published_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.pk}"


class IdempotencyRecord(models.Model):
    """The stored answer to a POST made with an ``Idempotency-Key``, per principal."""

    principal = models.CharField(max_length=80)
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=300)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    response_body = models.TextField(
        blank=True, default=""
    )  # the rendered JSON, replayed byte for byte
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["principal", "key"], name="idempotency_key_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.principal} {self.key}"


class RateCounter(models.Model):
    """Fallback store of rate-limit counters while Redis is unreachable."""

    key = models.CharField(max_length=200, unique=True)
    count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.key}={self.count}"


class TaskDelivery(models.Model):
    """How many times a Celery task message reached a worker without finishing.

    Written when a delivery starts and deleted when it finishes (success,
    failure or retry), so a row that stays is a task whose worker died under
    it. Kept in PostgreSQL because the broker (Redis) can lose its own
    bookkeeping; read by ``shipments.taskguard`` to enforce the delivery cap.
    """

    task_id = models.CharField(max_length=255, primary_key=True)
    task_name = models.CharField(max_length=200)
    deliveries = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}] ×{self.deliveries}"


class DeadLetter(models.Model):
    """A task delivered more times than the cap allows: no longer run, kept
    here for an operator to inspect and re-queue (admin action or
    ``manage.py deadletter_requeue``)."""

    task_id = models.CharField(max_length=255, unique=True)
    task_name = models.CharField(max_length=200, db_index=True)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    deliveries = models.PositiveIntegerField()
    last_error = models.TextField(blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    requeued_at = models.DateTimeField(null=True, blank=True)
    requeue_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}]"
