"""The demo's day: every hub's routes optimized, assigned and published.

    for each hub, for each mile with open legs today (last mile, first mile):
        the hub's vans and bikes are shared between its miles by their leg counts
        ──▶ optimization job (routing.services) run here, synchronously
        ──▶ its draft routes
    middle-mile legs ──▶ line-haul trips on the hubs' cut-offs (dispatch.linehaul)
    every draft of the day ──▶ a driver (the one whose own vehicle the route uses,
        else another free driver of the hub) ──▶ published

When an optimization job cannot run (no solver result), the hub's legs of that
mile are put on simple nearest-neighbour routes instead, so every demo driver
still has work; the summary says which hubs needed that.
"""

from __future__ import annotations

import logging
import math
import time as monotonic
from collections import defaultdict
from datetime import date, datetime, timedelta

from django.db import transaction
from django.utils import timezone

from routing.models import OptimizationJob, Route, RouteStop
from shipments.errors import Conflict, DomainError
from shipments.models import Hub, Leg
from shipments.planning import distance_km
from shipments.states import Mile

from .linehaul import trips_plan_day
from .models import Driver, Vehicle
from .services import MIDDLE_MILE_VEHICLE_TYPES, route_assign, routes_publish_day

logger = logging.getLogger(__name__)

DEMO_TIME_LIMIT_SECONDS = 3
# A job another worker is running: wait at most this long for it.
BUSY_WAIT_SECONDS = 60
ROUTED_MILES = (Mile.LAST, Mile.FIRST)
FALLBACK_SPEED_KMH = 25.0
FALLBACK_SERVICE_SECONDS = 180
FALLBACK_STOPS_PER_ROUTE = 25


def demo_day_dispatch(*, service_date: date) -> dict:
    summary: dict = {
        "service_date": service_date.isoformat(),
        "jobs": [],
        "fallback": [],
        "trips": 0,
        "assigned": 0,
        "published": 0,
        "unassigned": [],
        "failed": [],
    }
    for hub in (
        Hub.objects.filter(is_active=True).select_related("location").order_by("code")
    ):
        _plan_hub(hub, service_date, summary)
    trips = trips_plan_day(service_date=service_date)
    summary["trips"] = len(trips.trips)
    summary["assigned"] = _assign_drafts(service_date, summary)
    result = routes_publish_day(service_date=service_date)
    summary["published"] = len(result.published)
    summary["failed"] += result.failed
    summary["unassigned"] = result.unassigned
    return summary


def _legs_in_scope(hub: Hub, mile: str, service_date: date) -> list[Leg]:
    from routing.problem_builder import leg_list_in_scope

    return list(leg_list_in_scope(service_date=service_date, hub=hub, mile=mile))


def _plan_hub(hub: Hub, service_date: date, summary: dict) -> None:
    work = {mile: _legs_in_scope(hub, mile, service_date) for mile in ROUTED_MILES}
    work = {mile: legs for mile, legs in work.items() if legs}
    if not work:
        return
    fleet = list(
        Vehicle.objects.filter(home_hub=hub, is_active=True)
        .exclude(type=Vehicle.Type.TRUCK)
        .order_by("-capacity_kg", "code")
    )
    if not fleet:
        summary["failed"].append({"hub": hub.code, "reason": "no vehicles"})
        return
    shares = _share_fleet(fleet, {mile: len(legs) for mile, legs in work.items()})
    for mile, legs in work.items():
        vehicles = shares[mile]
        job_summary = {
            "hub": hub.code,
            "mile": str(mile),
            "legs": len(legs),
            "vehicles": len(vehicles),
        }
        routes = _optimize(hub, mile, vehicles, service_date, job_summary)
        if not routes:
            routes = _nearest_neighbour_routes(hub, mile, legs, vehicles, service_date)
            summary["fallback"].append(
                {"hub": hub.code, "mile": str(mile), "routes": len(routes)}
            )
        job_summary["routes"] = len(routes)
        summary["jobs"].append(job_summary)


def _share_fleet(
    fleet: list[Vehicle], counts: dict[str, int]
) -> dict[str, list[Vehicle]]:
    """Vehicles per mile, in proportion to its legs, at least one each (a vehicle
    serves one mile so the two plans never book it twice)."""
    miles = sorted(counts, key=lambda m: -counts[m])
    if len(fleet) < len(miles):
        return {mile: list(fleet) for mile in miles}
    total = sum(counts.values())
    sizes = {mile: max(1, round(len(fleet) * counts[mile] / total)) for mile in miles}
    while sum(sizes.values()) > len(fleet):
        biggest = max(sizes, key=lambda m: sizes[m])
        sizes[biggest] -= 1
    shares, start = {}, 0
    for mile in miles:
        shares[mile] = fleet[start : start + sizes[mile]]
        start += sizes[mile]
    shares[miles[0]] += fleet[start:]
    return shares


def _optimize(hub, mile, vehicles, service_date, job_summary) -> list[Route]:
    try:
        from routing.services import (
            OptimizationJobBusy,
            optimization_job_create,
            optimization_job_run,
        )
    except ImportError:
        job_summary["note"] = "routing.services is not available"
        return []
    try:
        job = optimization_job_create(
            service_date=service_date,
            hub=hub,
            mile=mile,
            vehicles=[v.pk for v in vehicles],
            time_limit_seconds=DEMO_TIME_LIMIT_SECONDS,
        )
    except DomainError as exc:
        job_summary["note"] = exc.message
        return []
    job_summary["job_id"] = job.pk
    deadline = monotonic.monotonic() + BUSY_WAIT_SECONDS
    while True:
        try:
            job = optimization_job_run(job_id=job.pk)
            break
        except OptimizationJobBusy as exc:
            if monotonic.monotonic() > deadline:
                job_summary["note"] = "the job is still running elsewhere"
                return []
            monotonic.sleep(min(exc.retry_after_seconds, 2))
    job_summary["status"] = str(job.status)
    if job.status != OptimizationJob.Status.SUCCEEDED:
        job_summary["note"] = job.error[:200]
        return []
    return list(job.routes.filter(status=Route.Status.DRAFT))


def _nearest_neighbour_routes(hub, mile, legs, vehicles, service_date) -> list[Route]:
    """Hand-made routes: legs in nearest-neighbour order from the hub, cut into
    one route per vehicle (no solver, no windows: a fallback, not a plan)."""
    by_place: dict[int, list[Leg]] = defaultdict(list)
    for leg in legs:
        pickup = leg.to_hub_id == hub.pk
        place = leg.from_location if pickup else leg.to_location
        by_place[place.pk].append(leg)
    places = dict(by_place)
    here = (hub.location.latitude, hub.location.longitude)
    order = []
    while places:
        pk = min(
            places,
            key=lambda p: distance_km(*here, *_point(places[p][0], hub)),
        )
        order.append(places.pop(pk))
        here = _point(order[-1][0], hub)
    per_route = max(
        1, min(FALLBACK_STOPS_PER_ROUTE, math.ceil(len(order) / max(1, len(vehicles))))
    )
    routes = []
    with transaction.atomic():
        for index, vehicle in enumerate(vehicles):
            chunk = order[index * per_route : (index + 1) * per_route]
            if not chunk:
                break
            routes.append(_route_from_chunk(hub, mile, vehicle, chunk, service_date))
    return routes


def _point(leg: Leg, hub: Hub) -> tuple[float, float]:
    place = leg.from_location if leg.to_hub_id == hub.pk else leg.to_location
    return place.latitude, place.longitude


def _route_from_chunk(hub, mile, vehicle, chunk, service_date) -> Route:
    start = timezone.make_aware(
        datetime.combine(service_date, datetime.min.time())
    ) + timedelta(hours=9)
    clock = start
    here = (hub.location.latitude, hub.location.longitude)
    route = Route.objects.create(
        service_date=service_date, hub=hub, mile=mile, vehicle=vehicle
    )
    RouteStop.objects.create(
        route=route,
        sequence=0,
        kind=RouteStop.Kind.HUB,
        location=hub.location,
        hub=hub,
        service_seconds=0,
        planned_arrival=start,
        planned_departure=start,
    )
    for sequence, legs in enumerate(chunk, start=1):
        point = _point(legs[0], hub)
        clock += timedelta(hours=distance_km(*here, *point) * 1.3 / FALLBACK_SPEED_KMH)
        pickup = legs[0].to_hub_id == hub.pk
        stop = RouteStop.objects.create(
            route=route,
            sequence=sequence,
            kind=RouteStop.Kind.PICKUP if pickup else RouteStop.Kind.DELIVERY,
            location=legs[0].from_location if pickup else legs[0].to_location,
            service_seconds=FALLBACK_SERVICE_SECONDS,
            planned_arrival=clock,
            planned_departure=clock + timedelta(seconds=FALLBACK_SERVICE_SECONDS),
            eta=clock,
        )
        stop.legs.set(legs)
        clock += timedelta(seconds=FALLBACK_SERVICE_SECONDS)
        here = point
    clock += timedelta(
        hours=distance_km(*here, hub.location.latitude, hub.location.longitude)
        * 1.3
        / FALLBACK_SPEED_KMH
    )
    RouteStop.objects.create(
        route=route,
        sequence=len(chunk) + 1,
        kind=RouteStop.Kind.HUB,
        location=hub.location,
        hub=hub,
        service_seconds=0,
        planned_arrival=clock,
        planned_departure=clock,
    )
    route.planned_start, route.planned_end = start, clock
    route.duration_seconds = int((clock - start).total_seconds())
    route.save(update_fields=["planned_start", "planned_end", "duration_seconds"])
    return route


def _assign_drafts(service_date: date, summary: dict) -> int:
    """Give every draft of the day a driver. Routes first (their vehicle was
    chosen by the plan: its own driver, else another free driver of the hub),
    then trips (any free driver with any free van or truck of the hub)."""
    assigned = 0
    drafts = list(
        Route.objects.filter(
            service_date=service_date, status=Route.Status.DRAFT, driver__isnull=True
        )
        .select_related("hub", "vehicle")
        .order_by("planned_start", "id")
    )
    drafts.sort(key=lambda r: r.vehicle_id is None)
    for route in drafts:
        drivers = list(
            Driver.objects.filter(home_hub=route.hub, is_active=True)
            .select_related("default_vehicle")
            .order_by("user__username")
        )
        if route.vehicle_id is not None:
            own = [d for d in drivers if d.default_vehicle_id == route.vehicle_id]
            candidates = [
                (d, route.vehicle) for d in own + [d for d in drivers if d not in own]
            ]
        else:
            haulers = list(
                Vehicle.objects.filter(
                    home_hub=route.hub,
                    is_active=True,
                    type__in=MIDDLE_MILE_VEHICLE_TYPES,
                ).order_by("-capacity_kg", "code")
            )
            candidates = [
                (d, d.default_vehicle) for d in drivers if d.default_vehicle in haulers
            ]
            candidates += [
                (d, v) for d in drivers for v in haulers if v != d.default_vehicle
            ]
        reason = "no driver of the hub is free"
        for driver, vehicle in candidates:
            try:
                route_assign(
                    route_id=route.pk, driver_id=driver.pk, vehicle_id=vehicle.pk
                )
            except Conflict as exc:
                reason = exc.message
                continue
            assigned += 1
            break
        else:
            summary["failed"].append({"route_id": route.pk, "reason": reason})
    return assigned
