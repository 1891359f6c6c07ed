"""Builders for dispatch tests: routes shaped as the optimizer saves them.

Shipments come from the real service (``shipment_make``); earlier miles are
moved through ``leg_transition`` so every leg and shipment state is one the
state machines allow.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime, time, timedelta

from django.utils import timezone

from routing.models import Route, RouteStop
from shipments.models import Hub, Leg, Location
from shipments.services import leg_transition
from shipments.states import LegStatus, Mile
from tests import factories

_seq = itertools.count(1)

# Around the Monaco hub (Fontvieille), all within its 6 km radius.
MONACO_POINTS = [
    (43.7396, 7.4276),  # Casino
    (43.7347, 7.4206),  # Port Hercule
    (43.7308, 7.4230),  # Rocher
    (43.7440, 7.4310),  # Larvotto
    (43.7265, 7.4145),  # Fontvieille
    (43.7380, 7.4180),  # Moneghetti
]


def local(day, hh: int, mm: int = 0) -> datetime:
    return timezone.make_aware(datetime.combine(day, time(hh, mm)))


def leg_walk(leg: Leg, *statuses: str, at: datetime | None = None) -> None:
    for status in statuses:
        leg_transition(leg_id=leg.pk, to=status, source="system", occurred_at=at)


def shipment_at_hub(hub: Hub, destination, **kwargs):
    """A shipment from inside ``hub``'s area to ``destination``, its first leg
    already handed in at the hub: only the last-mile leg is open."""
    created = factories.shipment_make(
        origin=hub_point(hub), destination=destination, **kwargs
    )
    shipment = created.shipment
    for leg in shipment.legs.order_by("sequence"):
        if leg.mile == Mile.LAST:
            break
        leg_walk(leg, LegStatus.ASSIGNED, LegStatus.IN_TRANSIT, LegStatus.COMPLETED)
    return shipment


def hub_point(hub: Hub):
    return (hub.location.latitude + 0.002, hub.location.longitude + 0.002)


def shipment_to_pick_up(origin, hub: Hub, **kwargs):
    """A shipment whose first-mile leg (origin → hub) is open."""
    return factories.shipment_make(
        origin=origin, destination=hub_point(hub), **kwargs
    ).shipment


def first_open_leg(shipment, mile: str) -> Leg:
    return shipment.legs.filter(mile=mile).order_by("sequence").first()


def route_make(
    *,
    hub: Hub,
    mile: str = Mile.LAST,
    stops: list[dict],
    day=None,
    driver=None,
    vehicle=None,
    start_hour: int = 9,
    minutes_between: int = 20,
) -> Route:
    """A draft route; each stop dict has kind, legs, and optionally location,
    hub, requires, window (start, end), notes."""
    day = day or timezone.localdate()
    start = local(day, start_hour)
    route = Route.objects.create(
        service_date=day,
        hub=hub,
        mile=mile,
        driver=driver,
        vehicle=vehicle,
        planned_start=start,
        planned_end=start + timedelta(minutes=minutes_between * (len(stops) + 1)),
    )
    for index, spec in enumerate(stops, start=1):
        legs = spec.get("legs", [])
        location = spec.get("location")
        if location is None:
            if spec["kind"] == RouteStop.Kind.HUB:
                location = spec["hub"].location
            elif spec["kind"] == RouteStop.Kind.PICKUP:
                location = legs[0].from_location
            else:
                location = legs[0].to_location
        arrival = start + timedelta(minutes=minutes_between * index)
        window = spec.get("window")
        stop = RouteStop.objects.create(
            route=route,
            sequence=index,
            kind=spec["kind"],
            location=location,
            hub=spec.get("hub"),
            window_start=window[0] if window else None,
            window_end=window[1] if window else None,
            planned_arrival=arrival,
            planned_departure=arrival + timedelta(minutes=3),
            eta=arrival,
            requires=spec.get("requires", []),
            notes=spec.get("notes", ""),
        )
        stop.legs.set(legs)
    return route


def event(type_: str, seq: int, **fields) -> dict:
    body = {
        "event_id": str(fields.pop("event_id", uuid.uuid4())),
        "seq": seq,
        "type": type_,
        "occurred_at": fields.pop("occurred_at", timezone.now().isoformat()),
    }
    body.update(fields)
    return body


def key() -> str:
    return f"test-{next(_seq)}-{uuid.uuid4()}"


def post_events(
    client, events: list[dict], *, device_id: str = "device-A", idem: str | None = None
):
    return client.post(
        "/api/v1/driver/events/",
        {"device_id": device_id, "events": events},
        format="json",
        HTTP_IDEMPOTENCY_KEY=idem or key(),
    )


def location_near(point) -> Location:
    return factories.location_make(point)
