"""The ETA engine: re-time the rest of a route from where its driver is now.

    ping / stop event ─▶ dispatch.signals.route_activity(route_id)
        ─▶ eta_route_refresh_task ─▶ eta_route_refresh:
            1. the route's remaining stops, in sequence
            2. the start: a fresh fix of the driver, else the stop the driver is
               at, else the last finished stop, else the route's hub
            3. walk the stops: travel time (the solver's haversine provider, or
               OSRM through the same interface) × the pace observed so far on
               this route, waiting for a window to open, then service time
            4. write stop ETAs, the ETA history (when an ETA moves ≥ 1 min)
               and the route's forecast
            5. legs on those stops take the new ETAs, and each shipment whose
               leg ETA moved is propagated down its leg chain
               (tracking.propagation), which may raise or clear exceptions

A periodic sweep re-times routes under way that went quiet (so ETAs keep up
with the clock) and flags drivers without a fix for N minutes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from routing.models import Route, RouteStop
from routing.solver.matrix import (
    DEFAULT_DETOUR_FACTOR,
    DEFAULT_SPEEDS_KMH,
    haversine_meters,
)
from shipments.outbox import DASHBOARD_GROUP, driver_group, outbox_enqueue

from .models import EtaRecord, RouteForecast, write_lock_take
from .positions import Position, driver_position

logger = logging.getLogger(__name__)

Point = tuple[float, float]
TravelSeconds = Callable[[Point, Point], float]

ACTIVE_ROUTE_STATUSES = (Route.Status.PUBLISHED, Route.Status.IN_PROGRESS)
REMAINING_STOP_STATUSES = (RouteStop.Status.PENDING, RouteStop.Status.ARRIVED)
FINISHED_STOP_STATUSES = (
    RouteStop.Status.COMPLETED,
    RouteStop.Status.FAILED,
    RouteStop.Status.SKIPPED,
)
# A fix older than this says little about where the driver is now.
POSITION_FRESH_FOR = timedelta(minutes=15)
# History rows and live messages only for moves at least this large.
ETA_RECORD_MIN_MOVE = timedelta(seconds=60)
# Pace is only trusted over enough driving, and within sane bounds.
PACE_MIN_PLANNED_SECONDS = 600
PACE_BOUNDS = (0.8, 2.0)
VEHICLE_PROFILE = {"cargo_bike": "bike", "car": "car", "van": "van", "truck": "truck"}


def travel_seconds_haversine(profile: str = "van") -> TravelSeconds:
    """Straight line × detour factor at the profile's speed: what the solver planned with."""
    speed_kmh = DEFAULT_SPEEDS_KMH.get(profile, DEFAULT_SPEEDS_KMH["van"])

    def travel(a: Point, b: Point) -> float:
        meters = haversine_meters(a, b) * DEFAULT_DETOUR_FACTOR
        return meters * 3.6 / speed_kmh

    return travel


@dataclass(frozen=True)
class StopInput:
    key: int
    point: Point
    service_seconds: int
    window_start: datetime | None = None
    arrived_at: datetime | None = None  # the driver is at this stop since then


def stop_etas(
    *,
    start_at: datetime,
    start_point: Point,
    stops: Sequence[StopInput],
    travel: TravelSeconds,
    pace_factor: float = 1.0,
) -> tuple[list[datetime], datetime]:
    """ETAs of ``stops`` in order, and when the driver leaves the last one.

    A pure function: known travel times in, known ETAs out.
    """
    etas: list[datetime] = []
    clock = start_at
    here = start_point
    for stop in stops:
        if stop.arrived_at is not None:
            arrival = stop.arrived_at
            clock = max(clock, arrival)
        else:
            clock = clock + timedelta(seconds=travel(here, stop.point) * pace_factor)
            if stop.window_start is not None and clock < stop.window_start:
                clock = stop.window_start  # early: wait for the window to open
            arrival = clock
        etas.append(arrival)
        clock = max(clock, arrival + timedelta(seconds=stop.service_seconds))
        if stop.arrived_at is not None:
            clock = max(clock, start_at)  # still there now at the earliest
        here = stop.point
    return etas, clock


def pace_factor_observed(finished: Sequence[RouteStop], start_point: Point | None, travel: TravelSeconds) -> float:
    """Actual over planned driving time between finished stops (1.0 without enough data)."""
    planned = actual = 0.0
    previous: RouteStop | None = None
    for stop in finished:
        if previous is not None and previous.actual_departure and stop.actual_arrival:
            driven = (stop.actual_arrival - previous.actual_departure).total_seconds()
            expected = travel(_point(previous), _point(stop))
            if driven > 0 and expected > 0:
                planned += expected
                actual += driven
        previous = stop
    if planned < PACE_MIN_PLANNED_SECONDS:
        return 1.0
    low, high = PACE_BOUNDS
    return min(high, max(low, actual / planned))


def _point(stop: RouteStop) -> Point:
    return (stop.location.latitude, stop.location.longitude)


@dataclass
class RouteEta:
    route_id: int
    computed_at: datetime
    origin: Point
    start_at: datetime
    etas: dict[int, datetime] = field(default_factory=dict)  # stop id -> eta
    end_eta: datetime | None = None  # back at the route's hub
    delay_seconds: int = 0
    pace_factor: float = 1.0
    used_position: Position | None = None
    moved_stop_ids: list[int] = field(default_factory=list)


def route_eta_compute(
    *,
    route: Route,
    stops: list[RouteStop],
    position: Position | None,
    now: datetime,
    travel: TravelSeconds,
) -> RouteEta:
    """Where the driver starts from, and the ETA of every remaining stop."""
    finished = [s for s in stops if s.status in FINISHED_STOP_STATUSES]
    remaining = [s for s in stops if s.status in REMAINING_STOP_STATUSES]
    hub_point = (route.hub.location.latitude, route.hub.location.longitude)
    arrived = next((s for s in remaining if s.status == RouteStop.Status.ARRIVED), None)

    fresh = (
        position is not None
        and now - position.recorded_at <= POSITION_FRESH_FOR
        and position.route_id in (None, route.pk)
    )
    if arrived is not None:
        origin, start_at = _point(arrived), now
        remaining = remaining[remaining.index(arrived):]
    elif fresh:
        origin, start_at = (position.latitude, position.longitude), now
    elif finished:
        last = max(finished, key=lambda s: (s.actual_departure or s.actual_arrival or now, s.sequence))
        left_at = last.actual_departure or last.actual_arrival or now
        origin, start_at = _point(last), max(now, left_at)
    else:
        planned_start = route.planned_start or now
        origin, start_at = hub_point, max(now, planned_start)

    pace = pace_factor_observed(finished, origin, travel)
    inputs = [
        StopInput(
            key=s.pk,
            point=_point(s),
            service_seconds=s.service_seconds,
            window_start=s.window_start,
            arrived_at=(s.actual_arrival or now) if s.status == RouteStop.Status.ARRIVED else None,
        )
        for s in remaining
    ]
    etas, leave_last = stop_etas(
        start_at=start_at, start_point=origin, stops=inputs, travel=travel, pace_factor=pace
    )
    last_point = inputs[-1].point if inputs else origin
    end_eta = leave_last + timedelta(seconds=travel(last_point, hub_point) * pace)
    result = RouteEta(
        route_id=route.pk,
        computed_at=now,
        origin=origin,
        start_at=start_at,
        etas={s.pk: eta for s, eta in zip(remaining, etas, strict=True)},
        end_eta=end_eta,
        pace_factor=pace,
        used_position=position if fresh else None,
    )
    first_planned = next(
        ((s, result.etas[s.pk]) for s in remaining if s.planned_arrival is not None), None
    )
    if first_planned is not None:
        stop, eta = first_planned
        result.delay_seconds = int((eta - stop.planned_arrival).total_seconds())
    return result


def _route_travel(route: Route) -> TravelSeconds:
    profile = VEHICLE_PROFILE.get(route.vehicle.type, "van") if route.vehicle_id else "van"
    return travel_seconds_haversine(profile)


def eta_route_refresh(
    *,
    route_id: int,
    now: datetime | None = None,
    travel: TravelSeconds | None = None,
    source: str = EtaRecord.Source.PING,
) -> RouteEta | None:
    """Re-time a route's remaining stops and everything downstream of them.

    Writes stop ETAs, ETA history, the route forecast and leg ETAs; propagates
    shipments whose ETA moved (may raise or clear exceptions, each an event);
    sends one ``route.etas`` message to the dashboard and the driver's group.
    """
    from .exceptions import driver_silent_clear
    from .propagation import shipment_forecast_refresh

    now = now or timezone.now()
    route = (
        Route.objects.select_related("hub__location", "vehicle", "driver")
        .filter(pk=route_id, status__in=ACTIVE_ROUTE_STATUSES)
        .first()
    )
    if route is None:
        return None
    stops = list(
        route.stops.select_related("location").prefetch_related("legs").order_by("sequence")
    )
    position = driver_position(route.driver_id) if route.driver_id else None
    result = route_eta_compute(
        route=route, stops=stops, position=position, now=now, travel=travel or _route_travel(route)
    )
    leg_etas = _leg_etas(route, stops, result)
    moved = _route_eta_save(route, stops, result, source=source)

    # Only shipments whose leg ETA moved are propagated: a steady stream of pings
    # on a route running to plan re-times its stops and stops there.
    moved_shipments = {
        leg.shipment_id
        for leg, eta in leg_etas.values()
        if leg.eta is None or abs(leg.eta - eta) >= ETA_RECORD_MIN_MOVE
    }
    for shipment_id in sorted(moved_shipments):
        shipment_leg_etas = {
            leg_id: eta for leg_id, (leg, eta) in leg_etas.items() if leg.shipment_id == shipment_id
        }
        shipment_forecast_refresh(shipment_id=shipment_id, leg_etas=shipment_leg_etas, now=now)
    if result.used_position is not None and route.driver_id:
        driver_silent_clear(driver_id=route.driver_id, route_id=route.pk)
    result.moved_stop_ids = moved
    return result


def _leg_etas(route: Route, stops: list[RouteStop], result: RouteEta) -> dict[int, tuple]:
    """Each leg on a remaining stop, with the ETA at the leg's own end.

    A leg to a customer ends at its delivery stop; a leg to a hub ends at that
    hub's stop later on the route, or when the route gets back to its hub.
    """
    hub_stop_etas: list[tuple[int, datetime]] = [
        (s.hub_id, result.etas[s.pk])
        for s in stops
        if s.pk in result.etas and s.kind == RouteStop.Kind.HUB and s.hub_id
    ]
    legs: dict[int, tuple] = {}
    for stop in stops:
        stop_eta = result.etas.get(stop.pk)
        for leg in stop.legs.all():
            if leg.status in ("completed", "cancelled", "failed"):
                continue
            if stop_eta is None:
                # A finished stop: only goods picked up there still ride along,
                # to the hub this route brings them to.
                if leg.status not in ("in_transit", "arrived") or leg.to_hub_id is None:
                    continue
                eta = _hub_eta(leg.to_hub_id, hub_stop_etas, after=None) or result.end_eta
            elif leg.to_hub_id is None or stop.kind == RouteStop.Kind.HUB and stop.hub_id == leg.to_hub_id:
                eta = stop_eta
            else:
                eta = _hub_eta(leg.to_hub_id, hub_stop_etas, after=stop_eta) or result.end_eta
            if eta is not None:
                legs[leg.pk] = (leg, eta)
    return legs


def _hub_eta(hub_id: int, hub_stop_etas: list[tuple[int, datetime]], *, after: datetime | None) -> datetime | None:
    for stop_hub_id, eta in hub_stop_etas:
        if stop_hub_id == hub_id and (after is None or eta >= after):
            return eta
    return None


def _route_eta_save(route: Route, stops: list[RouteStop], result: RouteEta, *, source: str) -> list[int]:
    moved: list[int] = []
    records: list[EtaRecord] = []
    changed: list[RouteStop] = []
    for stop in stops:
        eta = result.etas.get(stop.pk)
        if eta is None or stop.eta == eta:
            continue
        if stop.eta is None or abs(stop.eta - eta) >= ETA_RECORD_MIN_MOVE:
            moved.append(stop.pk)
            records.append(EtaRecord(stop=stop, eta=eta, computed_at=result.computed_at, source=source))
        stop.eta = eta
        changed.append(stop)
    forecast = {
        "computed_at": result.computed_at,
        "origin_latitude": result.origin[0],
        "origin_longitude": result.origin[1],
        "last_ping_at": result.used_position.recorded_at if result.used_position else None,
        "delay_seconds": result.delay_seconds,
        "pace_factor": result.pace_factor,
        "remaining_stops": len(result.etas),
        "end_eta": result.end_eta,
    }
    with transaction.atomic():
        write_lock_take()
        # The route first, as the driver's events take it: locking its stops
        # alone, in another order, deadlocked against a driver's batch.
        Route.objects.select_for_update().filter(pk=route.pk).exists()
        # One statement for every stop, one for the history, one for the forecast.
        if changed:
            RouteStop.objects.bulk_update(changed, ["eta"])
        EtaRecord.objects.bulk_create(records)
        if not RouteForecast.objects.filter(route=route).update(**forecast):
            RouteForecast.objects.create(route=route, **forecast)
        if moved:
            groups = [DASHBOARD_GROUP] + ([driver_group(route.driver_id)] if route.driver_id else [])
            outbox_enqueue(
                type="route.etas",
                groups=groups,
                payload={
                    "route_id": route.pk,
                    "driver_id": route.driver_id,
                    "delay_seconds": result.delay_seconds,
                    "stops": [
                        {"id": s.pk, "eta": result.etas[s.pk].isoformat(), "status": s.status}
                        for s in stops
                        if s.pk in result.etas
                    ],
                },
            )
    return moved


def eta_sweep_run(*, now: datetime | None = None) -> dict:
    """Re-time quiet routes under way; flag drivers silent for N minutes."""
    from .exceptions import driver_silent_raise

    now = now or timezone.now()
    quiet_after = timedelta(minutes=getattr(settings, "TRACKING_ROUTE_QUIET_MINUTES", 2))
    silent_after = timedelta(minutes=getattr(settings, "TRACKING_DRIVER_SILENT_MINUTES", 10))
    refreshed = silent = 0
    routes = Route.objects.filter(
        status=Route.Status.IN_PROGRESS, service_date__gte=timezone.localdate(now) - timedelta(days=1)
    ).select_related("forecast")
    for route in routes:
        forecast = getattr(route, "forecast", None)
        if forecast is None or now - forecast.computed_at >= quiet_after:
            try:
                eta_route_refresh(route_id=route.pk, now=now, source=EtaRecord.Source.SWEEP)
                refreshed += 1
            except Exception:  # noqa: BLE001 - one bad route must not stop the sweep
                logger.exception("ETA sweep failed for route %s", route.pk)
        if route.driver_id:
            position = driver_position(route.driver_id)
            started_at = route.updated_at
            last_seen = position.recorded_at if position else started_at
            if now - last_seen >= silent_after:
                driver_silent_raise(
                    driver_id=route.driver_id, route_id=route.pk, last_seen_at=last_seen, now=now
                )
                silent += 1
    return {"refreshed": refreshed, "silent": silent}
