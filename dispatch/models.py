"""Vehicles and drivers: the fleet that routes are dispatched to."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models


class Vehicle(models.Model):
    class Type(models.TextChoices):
        CARGO_BIKE = "cargo_bike", "Cargo bike"
        CAR = "car", "Car"
        VAN = "van", "Van"
        TRUCK = "truck", "Truck"

    code = models.SlugField(max_length=30, unique=True)
    type = models.CharField(max_length=20, choices=Type.choices, default=Type.VAN)
    home_hub = models.ForeignKey(
        "shipments.Hub", on_delete=models.PROTECT, related_name="vehicles"
    )
    capacity_kg = models.DecimalField(
        max_digits=9, decimal_places=2, validators=[MinValueValidator(Decimal("0.01"))]
    )
    capacity_m3 = models.DecimalField(
        max_digits=8, decimal_places=3, validators=[MinValueValidator(Decimal("0.001"))]
    )
    capacity_parcels = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    skills = models.JSONField(
        default=list, blank=True
    )  # e.g. ["refrigerated", "tail_lift"]
    fixed_cost = models.DecimalField(max_digits=9, decimal_places=2, default=Decimal(0))
    cost_per_km = models.DecimalField(
        max_digits=7, decimal_places=3, default=Decimal("0.5")
    )
    cost_per_hour = models.DecimalField(
        max_digits=7, decimal_places=2, default=Decimal("25")
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code


class Driver(models.Model):
    class DutyStatus(models.TextChoices):
        ON_DUTY = "on_duty", "On duty"
        BREAK = "break", "On break"
        OFF_DUTY = "off_duty", "Off duty"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="driver"
    )
    phone = models.CharField(max_length=40, blank=True)
    home_hub = models.ForeignKey(
        "shipments.Hub", on_delete=models.PROTECT, related_name="drivers"
    )
    default_vehicle = models.ForeignKey(
        Vehicle, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    shift_start = models.TimeField()
    shift_end = models.TimeField()
    duty_status = models.CharField(
        max_length=10, choices=DutyStatus.choices, default=DutyStatus.OFF_DUTY
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["user__username"]

    def __str__(self) -> str:
        return self.user.get_full_name() or self.user.username

    @property
    def public_name(self) -> str:
        """What a customer may see: first name only."""
        return self.user.first_name or "Your driver"


# ---------------------------------------------------------------------------
# What drivers send: event receipts, location pings, proofs of delivery
# ---------------------------------------------------------------------------


class DriverEventReceipt(models.Model):
    """One item of a driver's event batch, as received and judged.

    Stored for every item, applied or rejected, so nothing a device sent is ever
    dropped silently. ``(driver, event_id)`` and ``(driver, device_id, seq)`` are
    unique: a retried or re-queued item is recognised and answered with the
    original result instead of being applied twice.
    """

    class Status(models.TextChoices):
        APPLIED = "applied", "Applied"
        REJECTED = "rejected", "Rejected"

    id = models.BigAutoField(primary_key=True)
    driver = models.ForeignKey(
        Driver, on_delete=models.CASCADE, related_name="event_receipts"
    )
    route = models.ForeignKey(
        "routing.Route",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    stop = models.ForeignKey(
        "routing.RouteStop",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    event_id = models.UUIDField()
    device_id = models.CharField(max_length=100)
    seq = models.PositiveBigIntegerField()
    type = models.CharField(max_length=20)
    occurred_at = models.DateTimeField()  # device clock
    barcode = models.CharField(max_length=64, blank=True)
    failure_reason = models.CharField(max_length=30, blank=True)
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices)
    rejection_reason = models.CharField(max_length=40, blank=True)
    detail = models.CharField(max_length=300, blank=True)
    current_state = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["driver", "event_id"], name="driver_event_receipt_event_unique"
            ),
            models.UniqueConstraint(
                fields=["driver", "device_id", "seq"],
                name="driver_event_receipt_seq_unique",
            ),
        ]
        indexes = [models.Index(fields=["route", "seq"])]

    def __str__(self) -> str:
        return f"{self.type} #{self.seq} from {self.device_id}: {self.status}"


class LocationPing(models.Model):
    """A GPS fix from a driver's device; the route's trace is its pings by fix time."""

    id = models.BigAutoField(primary_key=True)
    driver = models.ForeignKey(Driver, on_delete=models.CASCADE, related_name="pings")
    route = models.ForeignKey(
        "routing.Route",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    device_id = models.CharField(max_length=100)
    latitude = models.FloatField()
    longitude = models.FloatField()
    accuracy_meters = models.FloatField()
    speed_mps = models.FloatField(null=True, blank=True)
    heading_degrees = models.FloatField(null=True, blank=True)
    recorded_at = models.DateTimeField()  # the fix time, device clock
    received_at = models.DateTimeField()

    class Meta:
        ordering = ["recorded_at", "id"]
        constraints = [
            # A re-sent batch stores nothing twice.
            models.UniqueConstraint(
                fields=["driver", "device_id", "recorded_at"],
                name="location_ping_unique_fix",
            ),
        ]
        indexes = [models.Index(fields=["route", "recorded_at"])]

    def __str__(self) -> str:
        return f"driver {self.driver_id} at {self.recorded_at:%H:%M:%S}"


class DriverPosition(models.Model):
    """The driver's latest known fix: the one with the latest fix time, whatever
    order the pings arrived in."""

    driver = models.OneToOneField(
        Driver, primary_key=True, on_delete=models.CASCADE, related_name="position"
    )
    route = models.ForeignKey(
        "routing.Route",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    latitude = models.FloatField()
    longitude = models.FloatField()
    accuracy_meters = models.FloatField()
    speed_mps = models.FloatField(null=True, blank=True)
    heading_degrees = models.FloatField(null=True, blank=True)
    recorded_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"driver {self.driver_id} at {self.recorded_at:%H:%M:%S}"


class ProofOfDelivery(models.Model):
    """Photo and/or signature (re-encoded JPEGs under random names), recipient, place, time."""

    stop = models.ForeignKey(
        "routing.RouteStop", on_delete=models.PROTECT, related_name="pods"
    )
    driver = models.ForeignKey(Driver, on_delete=models.PROTECT, related_name="pods")
    photo = models.FileField(max_length=200, blank=True)
    signature = models.FileField(max_length=200, blank=True)
    recipient_name = models.CharField(max_length=120, blank=True)
    note = models.CharField(max_length=500, blank=True)
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    captured_at = models.DateTimeField(null=True, blank=True)  # device clock
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "proofs of delivery"

    def __str__(self) -> str:
        return f"POD {self.pk} of stop {self.stop_id}"


class DutyStatusChange(models.Model):
    """The driver's own on duty / break / off duty switches, in order."""

    id = models.BigAutoField(primary_key=True)
    driver = models.ForeignKey(
        Driver, on_delete=models.CASCADE, related_name="duty_changes"
    )
    from_status = models.CharField(max_length=10, choices=Driver.DutyStatus.choices)
    to_status = models.CharField(max_length=10, choices=Driver.DutyStatus.choices)
    occurred_at = models.DateTimeField(null=True, blank=True)  # device clock
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    # ---------------------------------------------------------------------------
    # Dispatching: the route log, conflicts, reassignments, line-haul trips
    # ---------------------------------------------------------------------------

    def __str__(self) -> str:
        return f"driver {self.driver_id}: {self.from_status} → {self.to_status}"


class RouteEvent(models.Model):
    """Append-only log of route-level changes (assign, publish, start, finish,
    stop reassigned, insertion). Leg changes are shipment events."""

    id = models.BigAutoField(primary_key=True)
    route = models.ForeignKey(
        "routing.Route", on_delete=models.CASCADE, related_name="events"
    )
    type = models.CharField(max_length=40)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    source = models.CharField(max_length=20)
    occurred_at = models.DateTimeField(null=True, blank=True)
    recorded_at = models.DateTimeField(auto_now_add=True)
    payload = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.type} on route {self.route_id}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ValueError("Route events are append-only.")
        super().save(*args, **kwargs)


class StopReassignment(models.Model):
    """A stop moved by a dispatcher: the old stop is kept (skipped) for history
    and for a driver who may still report it done (a physical fact wins)."""

    from_stop = models.OneToOneField(
        "routing.RouteStop", on_delete=models.CASCADE, related_name="reassigned_to"
    )
    to_stop = models.OneToOneField(
        "routing.RouteStop", on_delete=models.CASCADE, related_name="reassigned_from"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"stop {self.from_stop_id} → {self.to_stop_id}"


class DispatchConflict(models.Model):
    """Something a dispatcher must look at: field facts that overrode a plan."""

    class Kind(models.TextChoices):
        DELIVERED_AFTER_REASSIGNMENT = (
            "delivered_after_reassignment",
            "Delivered after reassignment",
        )
        DELIVERED_AFTER_FAILURE = (
            "delivered_after_failure",
            "Delivered after a reported failure",
        )
        DELIVERED_AFTER_ROUTE_FINISHED = (
            "delivered_after_finish",
            "Delivered after route finished",
        )

    route = models.ForeignKey(
        "routing.Route",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
    )
    stop = models.ForeignKey(
        "routing.RouteStop",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
    )
    kind = models.CharField(max_length=40, choices=Kind.choices)
    detail = models.CharField(max_length=300)
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.kind} on stop {self.stop_id}"


class LineHaulTrip(models.Model):
    """A middle-mile departure between two hubs on the timetable (a hub cut-off).

    The trip *is* a route (mile ``middle``): one driver and vehicle, two hub
    stops; consolidated legs sit on both stops, so the departure scan moves them
    all in transit and the arrival scan completes them.
    """

    route = models.OneToOneField(
        "routing.Route", on_delete=models.CASCADE, related_name="trip"
    )
    origin_hub = models.ForeignKey(
        "shipments.Hub", on_delete=models.PROTECT, related_name="trips_out"
    )
    destination_hub = models.ForeignKey(
        "shipments.Hub", on_delete=models.PROTECT, related_name="trips_in"
    )
    departs_at = models.DateTimeField()  # the origin hub's cut-off
    arrives_at = models.DateTimeField()

    class Meta:
        ordering = ["departs_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["origin_hub", "destination_hub", "departs_at"],
                name="line_haul_trip_unique_departure",
            ),
        ]

    def __str__(self) -> str:
        return f"trip {self.origin_hub_id}→{self.destination_hub_id} {self.departs_at:%Y-%m-%d %H:%M}"
