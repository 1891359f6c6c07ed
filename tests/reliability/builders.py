"""Builders for the reliability tests: published routes of real shipments.

Shipments come from the real service; routes are saved as the optimizer saves
them (tests.dispatch.builders) and then assigned and published through the
dispatch services, so every state is one production reaches.
"""

from __future__ import annotations

import uuid

from dispatch.models import Driver
from dispatch.services import route_assign, route_publish
from routing.models import Route, RouteStop
from shipments.models import Hub
from shipments.states import Mile
from tests import factories
from tests.dispatch import builders as dispatch_builders

MONACO_POINTS = dispatch_builders.MONACO_POINTS


def published_route(
    *, hub: Hub, driver: Driver, stops: int = 3, requires: list[list[str]] | None = None
) -> Route:
    """A published last-mile route at ``hub`` for ``driver``: ``stops`` deliveries
    (``requires[i]`` is the proof stop i needs; none by default)."""
    shipments = [
        dispatch_builders.shipment_at_hub(hub, MONACO_POINTS[i % len(MONACO_POINTS)])
        for i in range(stops)
    ]
    specs = [
        {
            "kind": RouteStop.Kind.DELIVERY,
            "legs": [dispatch_builders.first_open_leg(s, Mile.LAST)],
            "requires": (requires[i] if requires and i < len(requires) else []),
        }
        for i, s in enumerate(shipments)
    ]
    route = dispatch_builders.route_make(hub=hub, stops=specs)
    vehicle = factories.vehicle_make(hub)
    route_assign(route_id=route.pk, driver_id=driver.pk, vehicle_id=vehicle.pk)
    route_publish(route_id=route.pk)
    route.refresh_from_db()
    return route


def delivery_stops(route: Route) -> list[RouteStop]:
    return list(route.stops.filter(kind=RouteStop.Kind.DELIVERY).order_by("sequence"))


def token_header(user) -> dict[str, str]:
    return {"Authorization": f"Token {user.auth_token.key}"}


def new_key(prefix: str = "rel") -> str:
    return f"{prefix}-{uuid.uuid4()}"


def driver_event(type_: str, seq: int, occurred_at: str, **fields) -> dict:
    return {
        "event_id": str(fields.pop("event_id", uuid.uuid4())),
        "seq": seq,
        "type": type_,
        "occurred_at": occurred_at,
        **fields,
    }
