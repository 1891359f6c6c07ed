"""Optimization jobs and their result: draft routes with ordered stops."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

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
    status = models.CharField(
        max_length=12, choices=Status.choices, default=Status.QUEUED
    )
    progress = models.FloatField(default=0)  # 0..1
    best_cost = models.FloatField(null=True, blank=True)
    statistics = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    keep_best_on_cancel = models.BooleanField(default=True)
    attempts = models.PositiveSmallIntegerField(
        default=0
    )  # deliveries that claimed the job
    seed = models.PositiveIntegerField(default=0)
    engine = models.CharField(
        max_length=40, blank=True
    )  # which engine found the saved plan
    # The running attempt: its token guards every write of that attempt (a stale
    # attempt that lost the job can no longer touch it), and its heartbeat tells
    # a re-delivered task whether the previous attempt is still alive.
    run_token = models.UUIDField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # When the job last (re-)entered the queue: at creation, and when the
    # recovery sweep gives a dead attempt's job back to the queue.
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(progress__gte=0, progress__lte=1),
                name="optimization_progress_fraction",
            ),
            models.CheckConstraint(
                condition=Q(time_limit_seconds__gte=1),
                name="optimization_time_limit_positive",
            ),
        ]
        indexes = [
            # Serves services.optimization_job_recover_stale (unfinished jobs only).
            models.Index(
                fields=["status", "heartbeat_at"],
                condition=Q(status__in=["queued", "running"]),
                name="optimization_unfinished_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"optimization {self.pk} {self.service_date} {self.mile} {self.status}"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_JOB_STATUSES


class Route(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"

    job = models.ForeignKey(
        OptimizationJob,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="routes",
    )
    service_date = models.DateField(db_index=True)
    hub = models.ForeignKey(
        "shipments.Hub", on_delete=models.PROTECT, related_name="routes"
    )
    mile = models.CharField(max_length=10, choices=Mile.choices)
    vehicle = models.ForeignKey(
        "dispatch.Vehicle",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="routes",
    )
    driver = models.ForeignKey(
        "dispatch.Driver",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="routes",
    )
    status = models.CharField(
        max_length=12, choices=Status.choices, default=Status.DRAFT
    )
    planned_start = models.DateTimeField(null=True, blank=True)
    planned_end = models.DateTimeField(null=True, blank=True)
    distance_meters = models.PositiveIntegerField(default=0)
    duration_seconds = models.PositiveIntegerField(default=0)
    cost = models.FloatField(default=0)
    # [[lat, lng], ...]: hub, stops in order, hub; straight lines between them
    # unless a road geometry replaces it.
    geometry = models.JSONField(default=list, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(
        default=1
    )  # bumped on every change; feeds ETags
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
    location = models.ForeignKey(
        "shipments.Location", on_delete=models.PROTECT, related_name="+"
    )
    hub = models.ForeignKey(
        "shipments.Hub",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    legs = models.ManyToManyField(
        "shipments.Leg", blank=True, related_name="route_stops"
    )
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    service_seconds = models.PositiveIntegerField(default=120)
    planned_arrival = models.DateTimeField(null=True, blank=True)
    planned_departure = models.DateTimeField(null=True, blank=True)
    eta = models.DateTimeField(null=True, blank=True)
    actual_arrival = models.DateTimeField(null=True, blank=True)
    actual_departure = models.DateTimeField(null=True, blank=True)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING
    )
    requires = models.JSONField(
        default=list, blank=True
    )  # photo, signature, recipient_name
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["route_id", "sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["route", "sequence"], name="route_stop_sequence_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"stop {self.sequence} of route {self.route_id} ({self.kind})"


class OptimizationAttempt(models.Model):
    """One delivery that claimed a job: who ran it, when, and how it ended.

    Opened by the claim, closed in the same transaction as whatever ends it: the
    job's finish, a takeover by a later attempt, or the recovery sweep giving the
    job back to the queue after the attempt's worker died. ``last_seen_at`` is the
    attempt's last heartbeat, so a lost attempt shows how far it got.
    """

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        LOST = "lost", "Lost (its worker died)"

    job = models.ForeignKey(
        OptimizationJob, on_delete=models.CASCADE, related_name="attempt_log"
    )
    number = models.PositiveSmallIntegerField()
    run_token = models.UUIDField(unique=True)
    worker = models.CharField(max_length=200, blank=True)  # "host:pid" of the solver
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, blank=True)

    class Meta:
        ordering = ["job_id", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "number"], name="optimization_attempt_number_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of optimization {self.job_id}"


FINISHED_JOB_STATUSES = frozenset(
    {
        OptimizationJob.Status.SUCCEEDED,
        OptimizationJob.Status.FAILED,
        OptimizationJob.Status.CANCELLED,
    }
)


class OptimizationPart(models.Model):
    """One cluster of a decomposed job, solved by whichever worker claims it first:
    a worker running its Celery task, or the job's own worker while it waits.

    The problem (compacted to the locations it uses) and the solution are stored
    as JSON; ``run_token`` names the job attempt that made the part, so parts of
    a dead attempt are never mistaken for the current ones.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    job = models.ForeignKey(OptimizationJob, on_delete=models.CASCADE, related_name="parts")
    run_token = models.UUIDField()
    index = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    problem = models.JSONField()
    # Locations of the compacted problem → index in the job's whole problem.
    location_indices = models.JSONField(default=list)
    time_limit_seconds = models.FloatField()
    seed = models.IntegerField(default=0)
    solution = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    claimed_by = models.CharField(max_length=200, blank=True)  # "host:pid" of the solver
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job_id", "index"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "run_token", "index"], name="optimization_part_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"part {self.index} of optimization {self.job_id} ({self.status})"
