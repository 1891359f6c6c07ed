"""Optimization jobs: validate a plan request and queue it; list jobs.

    optimization_job_create ── on commit ──▶ tasks.optimization_job_run_task(job_id)

Without legs or shipments a job plans every open leg of its day's scope (see
problem_builder); a bad request raises OptimizationInputError (400) naming the field.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Prefetch, QuerySet
from django.utils import timezone

from dispatch.models import Vehicle
from shipments.errors import DomainError
from shipments.models import Hub, Leg, Shipment
from shipments.states import Mile

from .. import problem_builder
from ..models import (
    OptimizationJob,
)
from ..tasks import optimization_job_run_task
from .lifecycle import job_status_message, optimization_job_task_limits

logger = logging.getLogger(__name__)

MAX_VEHICLES_PER_JOB = 500
MAX_LEGS_PER_JOB = 10_000
SERVICE_DATE_MAX_DAYS_AGO = 1
SERVICE_DATE_MAX_DAYS_AHEAD = 90
OBJECTIVE_WEIGHT_KEYS = frozenset(problem_builder.DEFAULT_OBJECTIVE_WEIGHTS)
OBJECTIVE_WEIGHT_MAX = 1000.0


class OptimizationInputError(DomainError):
    code = "invalid_optimization"


def optimization_job_list() -> QuerySet[OptimizationJob]:
    """Jobs with what their API shape shows, in three queries per page (jobs with
    hub and author, then their vehicles)."""
    return (
        OptimizationJob.objects.select_related("hub", "created_by")
        .prefetch_related(Prefetch("vehicles", queryset=Vehicle.objects.only("pk")))
        .annotate(selected_leg_count=Count("legs", distinct=True))
        .order_by("-created_at", "-id")
    )


def _ids(values: Iterable[Any] | None) -> list[int]:
    return list(dict.fromkeys(getattr(value, "pk", value) for value in values or []))


def _resolve_hub(hub: Hub | int) -> Hub:
    found = (
        Hub.objects.select_related("location")
        .filter(pk=getattr(hub, "pk", hub))
        .first()
    )
    if found is None:
        raise OptimizationInputError("Unknown hub.", field="hub")
    if not found.is_active:
        raise OptimizationInputError(f"Hub {found.code} is not active.", field="hub")
    return found


def _check_mile(mile: str) -> None:
    if mile == Mile.MIDDLE:
        raise OptimizationInputError(
            "The middle mile is planned as line-haul trips, not by optimization jobs.",
            field="mile",
        )
    if mile not in problem_builder.PLANNABLE_MILES:
        raise OptimizationInputError(f"Unknown mile {mile!r}.", field="mile")


def _check_service_date(service_date: date, hub: Hub) -> None:
    today = timezone.localdate()
    if not (
        today - timedelta(days=SERVICE_DATE_MAX_DAYS_AGO)
        <= service_date
        <= today + timedelta(days=SERVICE_DATE_MAX_DAYS_AHEAD)
    ):
        raise OptimizationInputError(
            f"The service date must lie between {SERVICE_DATE_MAX_DAYS_AGO} day before "
            f"and {SERVICE_DATE_MAX_DAYS_AHEAD} days after today.",
            field="service_date",
        )
    if problem_builder.hub_opening_seconds(hub, service_date) is None:
        raise OptimizationInputError(
            f"Hub {hub.code} is closed on {service_date:%A %Y-%m-%d}.",
            field="service_date",
        )


def _check_time_limit(time_limit_seconds: Any) -> int:
    ceiling = settings.ROUTING_MAX_TIME_LIMIT_SECONDS
    if (
        isinstance(time_limit_seconds, bool)
        or not isinstance(time_limit_seconds, int)
        or not 1 <= time_limit_seconds <= ceiling
    ):
        raise OptimizationInputError(
            f"The time limit must be a whole number of seconds from 1 to {ceiling}.",
            field="time_limit_seconds",
        )
    return time_limit_seconds


def _check_weights(objective_weights: Any) -> dict[str, float]:
    if objective_weights is None:
        return {}
    if not isinstance(objective_weights, dict):
        raise OptimizationInputError(
            "Objective weights are an object of numbers.", field="objective_weights"
        )
    unknown = sorted(set(objective_weights) - OBJECTIVE_WEIGHT_KEYS)
    if unknown:
        raise OptimizationInputError(
            f"Unknown objective weights: {', '.join(map(str, unknown))}; known: "
            f"{', '.join(sorted(OBJECTIVE_WEIGHT_KEYS))}.",
            field="objective_weights",
        )
    weights = {}
    for name, value in objective_weights.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 <= value <= OBJECTIVE_WEIGHT_MAX
        ):
            raise OptimizationInputError(
                f"Weight {name} must be a number from 0 to {OBJECTIVE_WEIGHT_MAX:g}.",
                field="objective_weights",
            )
        weights[name] = float(value)
    return weights


def _resolve_vehicles(vehicles: Iterable[Any], hub: Hub) -> list[Vehicle]:
    ids = _ids(vehicles)
    if not ids:
        raise OptimizationInputError(
            "At least one vehicle is required.", field="vehicles"
        )
    if len(ids) > MAX_VEHICLES_PER_JOB:
        raise OptimizationInputError(
            f"At most {MAX_VEHICLES_PER_JOB} vehicles per job.", field="vehicles"
        )
    found = Vehicle.objects.in_bulk(ids)
    missing = [pk for pk in ids if pk not in found]
    if missing:
        raise OptimizationInputError(
            f"Unknown vehicles: {missing[:20]}.", field="vehicles"
        )
    inactive = [v.code for v in found.values() if not v.is_active]
    if inactive:
        raise OptimizationInputError(
            f"Vehicles not in service: {', '.join(sorted(inactive))}.", field="vehicles"
        )
    elsewhere = [v.code for v in found.values() if v.home_hub_id != hub.pk]
    if elsewhere:
        raise OptimizationInputError(
            f"Vehicles based at another hub than {hub.code}: "
            f"{', '.join(sorted(elsewhere))}.",
            field="vehicles",
        )
    return [found[pk] for pk in ids]


def _resolve_legs(
    *,
    legs: Iterable[Any] | None,
    shipments: Iterable[Any] | None,
    hub: Hub,
    mile: str,
    service_date: date,
) -> list[Leg]:
    """The explicit selection (legs, or the in-scope legs of some shipments), or
    every open leg of the day's scope when nothing is selected."""
    leg_ids, shipment_ids = _ids(legs), _ids(shipments)
    if len(leg_ids) > MAX_LEGS_PER_JOB or len(shipment_ids) > MAX_LEGS_PER_JOB:
        raise OptimizationInputError(
            f"At most {MAX_LEGS_PER_JOB} legs per job.", field="legs"
        )
    selectable = problem_builder.leg_list_selectable(hub=hub, mile=mile)
    selected: dict[int, Leg] = {}
    if leg_ids:
        known = set(Leg.objects.filter(pk__in=leg_ids).values_list("pk", flat=True))
        missing = [pk for pk in leg_ids if pk not in known]
        if missing:
            raise OptimizationInputError(f"Unknown legs: {missing[:20]}.", field="legs")
        selected.update(selectable.filter(pk__in=leg_ids).in_bulk())
        outside = [pk for pk in leg_ids if pk not in selected]
        if outside:
            raise OptimizationInputError(
                f"Legs that are not open {mile}-mile legs of hub {hub.code}: "
                f"{outside[:20]}.",
                field="legs",
            )
    if shipment_ids:
        known = set(
            Shipment.objects.filter(pk__in=shipment_ids).values_list("pk", flat=True)
        )
        missing = [pk for pk in shipment_ids if pk not in known]
        if missing:
            raise OptimizationInputError(
                f"Unknown shipments: {missing[:20]}.", field="shipments"
            )
        found = list(selectable.filter(shipment_id__in=shipment_ids))
        without = sorted(set(shipment_ids) - {leg.shipment_id for leg in found})
        if without:
            raise OptimizationInputError(
                f"Shipments without an open {mile}-mile leg at hub {hub.code}: "
                f"{without[:20]}.",
                field="shipments",
            )
        selected.update({leg.pk: leg for leg in found})
    if leg_ids or shipment_ids:
        return list(selected.values())
    in_scope = list(
        problem_builder.leg_list_in_scope(
            service_date=service_date, hub=hub, mile=mile
        )[: MAX_LEGS_PER_JOB + 1]
    )
    if not in_scope:
        raise OptimizationInputError(
            f"Nothing to plan: no open {mile}-mile legs at hub {hub.code} "
            f"on {service_date}.",
            field="legs",
        )
    if len(in_scope) > MAX_LEGS_PER_JOB:
        raise OptimizationInputError(
            f"More than {MAX_LEGS_PER_JOB} legs in scope: select legs or shipments.",
            field="legs",
        )
    return in_scope


@transaction.atomic
def optimization_job_create(
    *,
    service_date: date,
    hub: Hub | int,
    mile: str,
    vehicles: Iterable[Vehicle | int],
    legs: Iterable[Leg | int] | None = None,
    shipments: Iterable[Shipment | int] | None = None,
    time_limit_seconds: int = 10,
    objective_weights: dict[str, float] | None = None,
    keep_best_on_cancel: bool = True,
    created_by=None,
) -> OptimizationJob:
    """Validate a plan request and queue it.

    Without ``legs`` or ``shipments`` the job plans every open leg of the
    day's scope (see problem_builder). Raises OptimizationInputError (400) with
    the offending field. Queues ``optimization_job_run_task`` after commit and
    writes an ``optimization.status`` outbox message.
    """
    hub = _resolve_hub(hub)
    _check_mile(mile)
    if not isinstance(service_date, date) or isinstance(service_date, datetime):
        raise OptimizationInputError("A date is required.", field="service_date")
    _check_service_date(service_date, hub)
    time_limit_seconds = _check_time_limit(time_limit_seconds)
    weights = _check_weights(objective_weights)
    vehicle_rows = _resolve_vehicles(vehicles, hub)
    explicit = bool(_ids(legs) or _ids(shipments))
    leg_rows = _resolve_legs(
        legs=legs, shipments=shipments, hub=hub, mile=mile, service_date=service_date
    )

    job = OptimizationJob.objects.create(
        service_date=service_date,
        hub=hub,
        mile=mile,
        time_limit_seconds=time_limit_seconds,
        objective_weights=weights,
        keep_best_on_cancel=keep_best_on_cancel,
        created_by=created_by
        if getattr(created_by, "is_authenticated", False)
        else None,
        queued_at=timezone.now(),
    )
    job.seed = job.pk  # reproducible: the same job searches the same way on a re-run
    job.save(update_fields=["seed"])
    job.vehicles.set(vehicle_rows)
    if explicit:  # otherwise the scope is re-read when the job runs
        job.legs.set(leg_rows)
    job_status_message(job)
    optimization_job_run_task.apply_async_on_commit(
        args=[job.pk], **optimization_job_task_limits(job)
    )
    return job
