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
    skills = models.JSONField(default=list, blank=True)  # e.g. ["refrigerated", "tail_lift"]
    fixed_cost = models.DecimalField(max_digits=9, decimal_places=2, default=Decimal(0))
    cost_per_km = models.DecimalField(max_digits=7, decimal_places=3, default=Decimal("0.5"))
    cost_per_hour = models.DecimalField(max_digits=7, decimal_places=2, default=Decimal("25"))
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
