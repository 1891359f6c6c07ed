"""Optimization jobs and their result: draft routes with ordered stops."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from shipments.states import Mile


class OptimizationJob(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    service_date = models.DateField()
    hub = models.ForeignKey("shipments.Hub", on_delete=models.PROTECT, related_name="+")
    mile = models.CharField(max_length=10, choices=Mile.choices)
    vehicles = models.ManyToManyField("dispatch.Vehicle", related_name="+")
    legs = models.ManyToManyField("shipments.Leg", blank=True, related_name="+")
    time_limit_seconds = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(600)]
    )
    objective_weights = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0)  # 0..1
    best_cost = models.FloatField(null=True, blank=True)
    statistics = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    keep_best_on_cancel = models.BooleanField(default=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]


class Route(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"

    job = models.ForeignKey(
        OptimizationJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="routes"
    )
    service_date = models.DateField(db_index=True)
    hub = models.ForeignKey("shipments.Hub", on_delete=models.PROTECT, related_name="routes")
    mile = models.CharField(max_length=10, choices=Mile.choices)
    vehicle = models.ForeignKey(
        "dispatch.Vehicle", null=True, blank=True, on_delete=models.PROTECT, related_name="routes"
    )
    driver = models.ForeignKey(
        "dispatch.Driver", null=True, blank=True, on_delete=models.PROTECT, related_name="routes"
    )
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.DRAFT)
    planned_start = models.DateTimeField(null=True, blank=True)
    planned_end = models.DateTimeField(null=True, blank=True)
    distance_meters = models.PositiveIntegerField(default=0)
    duration_seconds = models.PositiveIntegerField(default=0)
    cost = models.FloatField(default=0)
    published_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)  # bumped on every change; feeds ETags
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["service_date", "id"]

    def __str__(self) -> str:
        return f"route {self.pk} {self.service_date} {self.mile}"


class RouteStop(models.Model):
    class Kind(models.TextChoices):
        PICKUP = "pickup", "Pickup"
        DELIVERY = "delivery", "Delivery"
        HUB = "hub", "Hub"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ARRIVED = "arrived", "Arrived"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="stops")
    sequence = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=10, choices=Kind.choices)
    location = models.ForeignKey("shipments.Location", on_delete=models.PROTECT, related_name="+")
    hub = models.ForeignKey(
        "shipments.Hub", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    legs = models.ManyToManyField("shipments.Leg", blank=True, related_name="route_stops")
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    service_seconds = models.PositiveIntegerField(default=120)
    planned_arrival = models.DateTimeField(null=True, blank=True)
    planned_departure = models.DateTimeField(null=True, blank=True)
    eta = models.DateTimeField(null=True, blank=True)
    actual_arrival = models.DateTimeField(null=True, blank=True)
    actual_departure = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    requires = models.JSONField(default=list, blank=True)  # photo, signature, recipient_name
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["route_id", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["route", "sequence"], name="route_stop_sequence_unique"),
        ]
