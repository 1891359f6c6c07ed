"""A failed attempt that reaches the server after ``route_finished``.

The phone uploads its queue in pieces, so the finish can overtake an attempt
made before it. The outcome must not depend on the arrival order: the same
items give the same stops, legs, attempts and shipments as in device order.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from dispatch.services import route_assign, route_publish, stop_reassign
from routing.models import RouteStop
from shipments.models import Leg, Shipment
from shipments.states import LegStatus, Mile
from tests import factories
from tests.dispatch import builders
from tests.dispatch.test_driver_events import _state as route_state
from tests.dispatch.test_driver_events import _stops

pytestmark = pytest.mark.django_db


def _route_with_client(hub):
    """A published route of three deliveries and its driver's client."""
    driver = factories.driver_make(hub)
    shipments = [builders.shipment_at_hub(hub, p) for p in builders.MONACO_POINTS[:3]]
    route = builders.route_make(
        hub=hub,
        stops=[
            {
                "kind": RouteStop.Kind.DELIVERY,
                "legs": [builders.first_open_leg(s, Mile.LAST)],
            }
            for s in shipments
        ],
    )
    route_assign(
        route_id=route.pk,
        driver_id=driver.pk,
        vehicle_id=factories.vehicle_make(hub).pk,
    )
    route_publish(route_id=route.pk)
    route.shipments = shipments
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {driver.user.auth_token.key}")
    return route, client


def _state(route):
    """The route's state as test_driver_events sees it, plus the returns made."""
    return {
        **route_state(route),
        "returns": [
            Shipment.objects.get(pk=s.pk).returns.count() for s in route.shipments
        ],
    }


def _day(route, *, loaded: bool, reason: str) -> list[dict]:
    """In device order: (start,) arrive and fail at the second stop, finish."""
    s2 = _stops(route)[1]
    at = timezone.now() - timedelta(minutes=30)
    items = [
        builders.event("arrived", 2, stop_id=s2.pk, occurred_at=at.isoformat()),
        builders.event(
            "delivery_failed",
            3,
            stop_id=s2.pk,
            reason=reason,
            occurred_at=(at + timedelta(minutes=2)).isoformat(),
        ),
        builders.event("route_finished", 4, route_id=route.pk),
    ]
    if loaded:
        items.insert(0, builders.event("route_started", 1, route_id=route.pk))
    return items


@pytest.mark.parametrize("loaded", [False, True], ids=["not-loaded", "loaded"])
@pytest.mark.parametrize("reason", ["not_home", "refused"])
def test_a_failure_overtaken_by_route_finished_ends_as_in_device_order(
    hubs, loaded, reason
):
    in_order, in_order_client = _route_with_client(hubs[1])
    overtaken, overtaken_client = _route_with_client(hubs[1])

    builders.post_events(in_order_client, _day(in_order, loaded=loaded, reason=reason))
    items = _day(overtaken, loaded=loaded, reason=reason)
    finish_first = [
        e for e in items if e["type"] in ("route_started", "route_finished")
    ]
    late = [e for e in items if e not in finish_first]
    builders.post_events(overtaken_client, finish_first)
    answer = builders.post_events(overtaken_client, late).json()["results"]

    failure = next(
        r for r, e in zip(answer, late, strict=True) if e["type"] == "delivery_failed"
    )
    assert failure["status"] == "applied", failure
    expected_policy = "return" if reason == "refused" else "rescheduled"
    assert [d["policy"] for d in failure["current_state"]["policy"]] == [
        expected_policy
    ]
    assert _state(overtaken) == _state(in_order)
    assert _state(overtaken)["stops"] == ["skipped", "failed", "skipped"]


def test_route_finished_counts_no_attempt_for_a_loaded_stop_never_tried(hubs):
    route, client = _route_with_client(hubs[1])

    builders.post_events(
        client,
        [
            builders.event("route_started", 1, route_id=route.pk),
            builders.event("route_finished", 2, route_id=route.pk),
        ],
    )

    legs = [leg for stop in _stops(route) for leg in stop.legs.all()]
    assert [(leg.status, leg.attempt_count) for leg in legs] == [
        (LegStatus.PLANNED, 0)
    ] * 3


def test_a_late_failure_on_a_stop_moved_by_the_dispatcher_is_still_refused(hubs):
    route, client = _route_with_client(hubs[1])
    s2 = _stops(route)[1]
    other = builders.route_make(hub=hubs[1], stops=[])
    stop_reassign(stop_id=s2.pk, route_id=other.pk)
    builders.post_events(
        client, [builders.event("route_finished", 2, route_id=route.pk)]
    )

    answer = builders.post_events(
        client,
        [builders.event("delivery_failed", 1, stop_id=s2.pk, reason="not_home")],
    ).json()["results"][0]

    assert (answer["status"], answer["reason"]) == ("rejected", "stop_already_skipped")
    s2.refresh_from_db()
    assert s2.status == RouteStop.Status.SKIPPED
    assert s2.legs.get().attempt_count == 0


def test_a_late_failure_leaves_a_leg_planned_onto_another_route_to_that_plan(hubs):
    route, client = _route_with_client(hubs[1])
    s2 = _stops(route)[1]
    builders.post_events(
        client, [builders.event("route_finished", 2, route_id=route.pk)]
    )
    leg = s2.legs.get()
    # The dispatcher puts the parcel on a draft for tomorrow at once.
    again = builders.route_make(
        hub=hubs[1],
        day=timezone.localdate() + timedelta(days=1),
        stops=[{"kind": RouteStop.Kind.DELIVERY, "legs": [leg]}],
    )

    answer = builders.post_events(
        client,
        [builders.event("delivery_failed", 1, stop_id=s2.pk, reason="not_home")],
    ).json()["results"][0]

    # The attempt is the stop's outcome; the parcel follows its new plan.
    assert answer["status"] == "applied", answer
    assert answer["current_state"]["policy"] == []
    s2.refresh_from_db()
    assert s2.status == RouteStop.Status.FAILED
    leg.refresh_from_db()
    assert (leg.status, leg.attempt_count) == (LegStatus.PLANNED, 0)
    assert again.stops.get().status == RouteStop.Status.PENDING


def test_a_late_failure_after_the_parcel_was_delivered_is_refused(hubs):
    route, client = _route_with_client(hubs[1])
    s2 = _stops(route)[1]
    builders.post_events(
        client,
        [
            builders.event("delivered", 1, stop_id=s2.pk),
            builders.event("route_finished", 3, route_id=route.pk),
        ],
    )

    answer = builders.post_events(
        client,
        [builders.event("delivery_failed", 2, stop_id=s2.pk, reason="not_home")],
    ).json()["results"][0]

    assert (answer["status"], answer["reason"]) == (
        "rejected",
        "stop_already_completed",
    )
    assert Leg.objects.get(pk=s2.legs.get().pk).status == LegStatus.COMPLETED
