"""The route log: one ``RouteEvent`` and one outbox message per route-level change.

Leg and shipment changes are shipment events (``shipments.events``); what
happens to a route as a whole (assigned, published, started, a stop moved,
finished) is written here, in the same transaction as the change, so the
dashboard and the driver's phone hear of it through the outbox relay.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from routing.models import Route
from shipments.outbox import DASHBOARD_GROUP, driver_group, outbox_enqueue

from .models import RouteEvent


def route_event_record(
    *,
    route: Route,
    type: str,
    source: str,
    actor=None,
    occurred_at: datetime | None = None,
    payload: dict[str, Any] | None = None,
    also_driver_ids: tuple[int, ...] = (),
) -> RouteEvent:
    """Append to the route log and queue the live message. Call inside the
    transaction that made the change."""
    event = RouteEvent.objects.create(
        route=route,
        type=type,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        source=source,
        occurred_at=occurred_at,
        payload=payload or {},
    )
    groups = [DASHBOARD_GROUP]
    for driver_id in (route.driver_id, *also_driver_ids):
        if driver_id and driver_group(driver_id) not in groups:
            groups.append(driver_group(driver_id))
    outbox_enqueue(
        type="route.event",
        groups=groups,
        payload={
            "route_event_id": event.pk,
            "event_type": type,
            "route_id": route.pk,
            "route_status": route.status,
            "route_version": route.version,
            "driver_id": route.driver_id,
            "vehicle_id": route.vehicle_id,
            "service_date": route.service_date.isoformat(),
            "hub_id": route.hub_id,
            "mile": route.mile,
            "recorded_at": event.recorded_at.isoformat(),
            "details": payload or {},
        },
    )
    return event
