from __future__ import annotations

import pytest

from dispatch.services import route_assign, route_publish
from routing.models import RouteStop
from shipments.states import Mile
from tests import factories
from tests.dispatch import builders


@pytest.fixture
def vehicle(hubs):
    return factories.vehicle_make(hubs[1])


@pytest.fixture
def last_mile_route(hubs, driver, vehicle):
    """A published last-mile route at the Monaco hub: three deliveries, the first
    requiring photo and signature."""
    hub = hubs[1]
    shipments = [
        builders.shipment_at_hub(hub, point, parcels=2 if i == 0 else 1)
        for i, point in enumerate(builders.MONACO_POINTS[:3])
    ]
    stops = [
        {
            "kind": RouteStop.Kind.DELIVERY,
            "legs": [builders.first_open_leg(s, Mile.LAST)],
            "requires": ["photo", "signature"] if i == 0 else [],
            "notes": "Ring twice" if i == 0 else "",
        }
        for i, s in enumerate(shipments)
    ]
    route = builders.route_make(hub=hub, stops=stops)
    route_assign(route_id=route.pk, driver_id=driver.pk, vehicle_id=vehicle.pk)
    route_publish(route_id=route.pk)
    route.refresh_from_db()
    route.shipments = shipments
    return route
