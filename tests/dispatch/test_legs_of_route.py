"""A leg skipped on an earlier route still belongs to the route that carries it now."""

from __future__ import annotations

import pytest
from django.utils import timezone

from dispatch.services import _legs_of_route
from routing.models import RouteStop
from shipments.models import Leg
from tests import factories
from tests.tracking.builders import legs_of, route_make

pytestmark = pytest.mark.django_db


def test_a_leg_skipped_on_an_earlier_route_is_carried_by_the_new_one(hubs):
    monaco = hubs[1]
    given_back, other = (factories.shipment_make().shipment for _ in range(2))
    leg = legs_of(given_back)["last"]
    earlier = route_make(
        hub=monaco, mile="last", driver=None, planned_start=timezone.now(),
        stops=[("delivery", given_back.destination, [leg])], status="draft",
    )
    # The earlier route gave it back (e.g. route_finished before it was tried).
    RouteStop.objects.filter(route=earlier).update(status=RouteStop.Status.SKIPPED)
    Leg.objects.filter(pk=leg.pk).update(status="planned")
    new = route_make(
        hub=monaco, mile="last", driver=None, planned_start=timezone.now(),
        stops=[
            ("delivery", given_back.destination, [leg]),
            ("delivery", other.destination, [legs_of(other)["last"]]),
        ],
        status="draft",
    )

    assert [x.pk for x in _legs_of_route(new)] == sorted([leg.pk, legs_of(other)["last"].pk])
    assert _legs_of_route(earlier) == []
