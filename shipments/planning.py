"""Leg planning: a shipment's chain of legs from the hub network.

    origin ──first──▶ origin hub ──middle──▶ destination hub ──last──▶ destination

The middle leg is skipped when both ends share a hub. A return runs the same
shape backwards (customer → hub … → shipper) with ``return`` miles at its ends.
Planned times are a first estimate (straight-line distance at a mode's average
speed, hub handling, the next middle-mile cut-off); the ETA engine refines them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from django.utils import timezone

from .errors import NoReachableHub
from .models import Hub, Location
from .states import Mile, TransportMode

EARTH_RADIUS_KM = 6371.0
ROAD_DETOUR_FACTOR = (
    1.3  # road distance over straight-line distance, typical for cities
)
AVERAGE_SPEED_KMH = {
    TransportMode.VAN: 35.0,
    TransportMode.CARGO_BIKE: 15.0,
    TransportMode.TRUCK: 60.0,
    TransportMode.RAIL: 80.0,
    TransportMode.AIR: 600.0,
    TransportMode.SEA: 30.0,
}


def distance_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def travel_time(a: Location, b: Location, mode: str) -> timedelta:
    km = (
        distance_km(a.latitude, a.longitude, b.latitude, b.longitude)
        * ROAD_DETOUR_FACTOR
    )
    return timedelta(hours=km / AVERAGE_SPEED_KMH[mode])


def hub_nearest(*, latitude: float, longitude: float) -> Hub | None:
    """The nearest active hub whose service radius covers the point."""
    best: tuple[float, Hub] | None = None
    for hub in Hub.objects.filter(is_active=True).select_related("location"):
        km = distance_km(
            latitude, longitude, hub.location.latitude, hub.location.longitude
        )
        if km <= hub.service_radius_km and (best is None or km < best[0]):
            best = (km, hub)
    return best[1] if best else None


@dataclass(frozen=True)
class LegPlan:
    mile: str
    mode: str
    from_location: Location
    to_location: Location
    from_hub: Hub | None
    to_hub: Hub | None
    planned_departure: datetime | None = None
    planned_arrival: datetime | None = None


def plan_chain(
    *,
    origin: Location,
    destination: Location,
    is_return: bool = False,
    origin_hub: Hub | None = None,
    destination_hub: Hub | None = None,
    start_at_hub: Hub | None = None,
) -> tuple[Hub | None, Hub, list[LegPlan]]:
    """The legs from ``origin`` (or from inside ``start_at_hub``) to ``destination``.

    Returns (origin hub, destination hub, legs). Raises NoReachableHub with the
    offending field when an end has no hub within reach.
    """
    if start_at_hub is None:
        origin_hub = origin_hub or hub_nearest(
            latitude=origin.latitude, longitude=origin.longitude
        )
        if origin_hub is None:
            raise NoReachableHub(
                "No active hub serves the origin; it is outside every hub's service radius.",
                field="origin",
            )
    destination_hub = destination_hub or hub_nearest(
        latitude=destination.latitude, longitude=destination.longitude
    )
    if destination_hub is None:
        raise NoReachableHub(
            "No active hub serves the destination; it is outside every hub's service radius.",
            field="destination",
        )
    end_mile_in = Mile.RETURN if is_return else Mile.FIRST
    end_mile_out = Mile.RETURN if is_return else Mile.LAST

    legs: list[LegPlan] = []
    current_hub = start_at_hub
    if start_at_hub is None:
        legs.append(
            LegPlan(
                end_mile_in,
                TransportMode.VAN,
                origin,
                origin_hub.location,
                None,
                origin_hub,
            )
        )
        current_hub = origin_hub
    if current_hub.pk != destination_hub.pk:
        legs.append(
            LegPlan(
                Mile.MIDDLE,
                TransportMode.TRUCK,
                current_hub.location,
                destination_hub.location,
                current_hub,
                destination_hub,
            )
        )
    legs.append(
        LegPlan(
            end_mile_out,
            TransportMode.VAN,
            destination_hub.location,
            destination,
            destination_hub,
            None,
        )
    )
    return (origin_hub if start_at_hub is None else start_at_hub), destination_hub, legs


def next_cutoff(hub: Hub, after: datetime) -> datetime:
    """The first middle-mile departure from ``hub`` at or after ``after``."""
    local = timezone.localtime(after)
    cutoffs = sorted(_parse_time(value) for value in hub.cutoff_times or [])
    if not cutoffs:
        return after
    for day_offset in range(0, 8):
        day = local.date() + timedelta(days=day_offset)
        for cutoff in cutoffs:
            candidate = timezone.make_aware(datetime.combine(day, cutoff))
            if candidate >= after:
                return candidate
    return after


def _parse_time(value: str) -> time:
    hours, minutes = value.split(":")[:2]
    return time(int(hours), int(minutes))


def estimate_times(
    legs: list[LegPlan],
    *,
    start: datetime,
    delivery_window_start: datetime | None,
) -> list[LegPlan]:
    """First estimate of each leg's departure and arrival, in order."""
    timed: list[LegPlan] = []
    ready = start
    for index, leg in enumerate(legs):
        departure = ready
        if leg.mile == Mile.MIDDLE and leg.from_hub is not None:
            departure = next_cutoff(leg.from_hub, ready)
        arrival = departure + travel_time(leg.from_location, leg.to_location, leg.mode)
        is_final = index == len(legs) - 1
        if is_final and delivery_window_start and arrival < delivery_window_start:
            arrival = delivery_window_start
            departure = arrival - travel_time(
                leg.from_location, leg.to_location, leg.mode
            )
        timed.append(
            LegPlan(
                leg.mile,
                leg.mode,
                leg.from_location,
                leg.to_location,
                leg.from_hub,
                leg.to_hub,
                planned_departure=departure,
                planned_arrival=arrival,
            )
        )
        handling = (
            timedelta(minutes=leg.to_hub.handling_minutes)
            if leg.to_hub
            else timedelta()
        )
        ready = arrival + handling
    return timed
