"""Saving a checked plan: draft routes and stops, the job finished, in one transaction.

Older drafts holding the same legs are superseded (one plan per leg); saves of
one hub take turns. A save by an attempt that no longer holds the job is a no-op,
so a job's result is saved exactly once.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import ProtectedError

from shipments.models import Hub

from .. import problem_builder
from ..models import (
    OptimizationJob,
    OptimizationPart,
    Route,
    RouteStop,
)
from ..problem_builder import BuiltProblem
from ..solver.solution import Solution
from .lifecycle import S, job_finish, job_lock

logger = logging.getLogger(__name__)


def _drafts_supersede(*, job: OptimizationJob, leg_ids: set[int]) -> list[int]:
    """Delete other jobs' draft routes holding any of these legs: one plan per leg."""
    if not leg_ids:
        return []
    candidates = set(
        Route.objects.filter(status=Route.Status.DRAFT, stops__legs__in=leg_ids)
        .exclude(job=job)
        .values_list("pk", flat=True)
    )
    # Lock, then re-check: a route published meanwhile is no longer a draft and stays.
    stale = sorted(
        Route.objects.select_for_update()
        .filter(pk__in=candidates, status=Route.Status.DRAFT)
        .values_list("pk", flat=True)
    )
    if stale:
        try:
            with transaction.atomic():
                Route.objects.filter(pk__in=stale).delete()
        except ProtectedError:
            # Something already refers to a draft (nothing should): keep the
            # rows for the record, out of play.
            Route.objects.filter(pk__in=stale).update(status=Route.Status.CANCELLED)
    return stale


@dataclass
class _StopDraft:
    kind: str
    location_index: int
    arrival_seconds: int
    departure_seconds: int
    service_seconds: int
    window_start_seconds: int | None
    window_end_seconds: int | None
    job_keys: list[str]


def _stop_drafts(built: BuiltProblem, route) -> list[_StopDraft]:
    """One stop per place visited in a row: three parcels for one door are one stop."""
    jobs = built.problem.job_by_key()
    drafts: list[_StopDraft] = []
    for stop in route.stops:
        job = jobs[stop.job_key]
        visit = job.pickup if stop.kind == problem_builder.PICKUP else job.delivery
        window = visit.time_windows[0] if visit.time_windows else None
        previous = drafts[-1] if drafts else None
        if (
            previous is not None
            and previous.kind == stop.kind
            and previous.location_index == stop.location_index
        ):
            previous.departure_seconds = stop.departure_seconds
            previous.service_seconds += visit.service_seconds
            previous.job_keys.append(stop.job_key)
            if window is not None:  # the stop's window is what every parcel allows
                previous.window_start_seconds = max(
                    previous.window_start_seconds or 0, window.start_seconds
                )
                previous.window_end_seconds = min(
                    previous.window_end_seconds
                    if previous.window_end_seconds is not None
                    else window.end_seconds,
                    window.end_seconds,
                )
            continue
        drafts.append(
            _StopDraft(
                kind=stop.kind,
                location_index=stop.location_index,
                arrival_seconds=stop.arrival_seconds,
                departure_seconds=stop.departure_seconds,
                service_seconds=visit.service_seconds,
                window_start_seconds=window.start_seconds if window else None,
                window_end_seconds=window.end_seconds if window else None,
                job_keys=[stop.job_key],
            )
        )
    return drafts


def _routes_create(
    job: OptimizationJob, built: BuiltProblem, solution: Solution
) -> list[Route]:
    hub = built.hub
    hub_point = [hub.location.latitude, hub.location.longitude]
    routes: list[Route] = []
    stop_plans: list[list[_StopDraft]] = []
    for solved in solution.routes:
        vehicle = built.vehicles[solved.vehicle_key]
        drafts = _stop_drafts(built, solved)
        points = [
            [
                built.locations[d.location_index].latitude,
                built.locations[d.location_index].longitude,
            ]
            for d in drafts
        ]
        routes.append(
            Route(
                job=job,
                service_date=job.service_date,
                hub=hub,
                mile=job.mile,
                vehicle=vehicle,
                status=Route.Status.DRAFT,
                planned_start=built.at(solved.start_seconds),
                planned_end=built.at(solved.end_seconds),
                distance_meters=solved.distance_meters,
                duration_seconds=solved.duration_seconds,
                cost=problem_builder.route_cost_money(
                    vehicle,
                    distance_meters=solved.distance_meters,
                    duration_seconds=solved.duration_seconds,
                ),
                geometry=[hub_point, *points, hub_point],
            )
        )
        stop_plans.append(drafts)
    Route.objects.bulk_create(routes)

    stops: list[RouteStop] = []
    stop_jobs: list[list[str]] = []
    for route, solved, drafts in zip(routes, solution.routes, stop_plans, strict=True):
        sequence = 0
        stops.append(
            RouteStop(
                route=route,
                sequence=sequence,
                kind=RouteStop.Kind.HUB,
                location=hub.location,
                hub=hub,
                service_seconds=0,
                planned_arrival=built.at(solved.start_seconds),
                planned_departure=built.at(solved.start_seconds),
            )
        )
        stop_jobs.append([])
        for draft in drafts:
            sequence += 1
            stops.append(
                RouteStop(
                    route=route,
                    sequence=sequence,
                    kind=draft.kind,
                    location=built.locations[draft.location_index],
                    window_start=None
                    if draft.window_start_seconds is None
                    else built.at(draft.window_start_seconds),
                    window_end=None
                    if draft.window_end_seconds is None
                    else built.at(draft.window_end_seconds),
                    service_seconds=draft.service_seconds,
                    planned_arrival=built.at(draft.arrival_seconds),
                    planned_departure=built.at(draft.departure_seconds),
                )
            )
            stop_jobs.append(draft.job_keys)
        stops.append(
            RouteStop(
                route=route,
                sequence=sequence + 1,
                kind=RouteStop.Kind.HUB,
                location=hub.location,
                hub=hub,
                service_seconds=0,
                planned_arrival=built.at(solved.end_seconds),
                planned_departure=built.at(solved.end_seconds),
            )
        )
        stop_jobs.append([])
    RouteStop.objects.bulk_create(stops)
    through = RouteStop.legs.through
    through.objects.bulk_create(
        through(routestop_id=stop.pk, leg_id=built.legs[key].pk)
        for stop, keys in zip(stops, stop_jobs, strict=True)
        for key in keys
    )
    return routes


def _unassigned(built: BuiltProblem, solution: Solution) -> list[dict[str, Any]]:
    out = list(built.excluded)
    for item in solution.unassigned:
        leg = built.legs[item.job_key]
        out.append(
            {"leg_id": leg.pk, "shipment_id": leg.shipment_id, "reason": item.reason}
        )
    return out


def _parts_summary_and_clear(job: OptimizationJob) -> dict[str, Any]:
    """Who solved the parts of a decomposed run (for the statistics), then the
    parts themselves go: their problems are bulky and served their purpose."""
    solvers = list(
        OptimizationPart.objects.filter(job=job, run_token=job.run_token)
        .order_by("index")
        .values_list("claimed_by", flat=True)
    )
    OptimizationPart.objects.filter(job=job).delete()
    if not solvers:
        return {}
    return {"parts": len(solvers), "part_solvers": solvers}


def optimization_job_result_save(
    *,
    job_id: int,
    run_token: uuid.UUID,
    built: BuiltProblem,
    solution: Solution,
    wall_seconds: float,
    extra_statistics: dict[str, Any] | None = None,
) -> OptimizationJob:
    """Save a checked plan as draft routes and finish the job, in one transaction.

    A no-op when this attempt no longer holds the job (another attempt took
    over, or the result is already saved). A cancel request that arrived meanwhile
    ends the job as cancelled, with the plan kept only if the job asked for it.
    """
    with transaction.atomic():
        job = job_lock(job_id)
        if job.run_token != run_token or job.is_finished:
            return job
        if job.cancel_requested and not job.keep_best_on_cancel:
            return job_finish(
                job, S.CANCELLED, error="Cancelled; the best plan was discarded."
            )
        # Two jobs of one hub saving at once would each miss the other's fresh
        # drafts and leave two plans for the same legs: saves of a hub take turns.
        Hub.objects.select_for_update().filter(pk=job.hub_id).first()
        leg_ids = {leg.pk for leg in built.legs.values()}
        superseded = _drafts_supersede(job=job, leg_ids=leg_ids)
        parts = _parts_summary_and_clear(job)
        routes = _routes_create(job, built, solution)
        unassigned = _unassigned(built, solution)
        statistics = {
            "engine": solution.engine,
            "attempt": job.attempts,
            "time_limit_seconds": job.time_limit_seconds,
            "search_seconds": round(solution.search_seconds, 3),
            "wall_seconds": round(wall_seconds, 3),
            "matrix": built.matrix_source,
            "jobs": len(built.problem.jobs),
            "vehicles": len(built.problem.vehicles),
            "routes": len(routes),
            "route_ids": [route.pk for route in routes],
            "stops": sum(len(r.stops) for r in solution.routes),
            "distance_meters": solution.distance_meters,
            "duration_seconds": solution.duration_seconds,
            "cost": round(sum(route.cost for route in routes), 2),
            "objective_cost": round(solution.cost, 2),
            "unassigned_count": len(unassigned),
            "unassigned": unassigned,
            "checker_violations": 0,
            "superseded_route_ids": superseded,
            "stopped_early": bool(job.cancel_requested),
            **parts,
            **(extra_statistics or {}),
        }
        job.best_cost = statistics["cost"]
        job.engine = solution.engine
        status = S.CANCELLED if job.cancel_requested else S.SUCCEEDED
        error = (
            "Cancelled; the best plan found so far was kept."
            if job.cancel_requested
            else ""
        )
        return job_finish(job, status, error=error, statistics=statistics)
