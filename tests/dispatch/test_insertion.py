"""Same-day insertion into routes under way: done stops and windows kept, the
independent checker agrees with the result."""

from __future__ import annotations

from datetime import time, timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from dispatch.insertion import shipment_insert_same_day
from dispatch.services import route_assign, route_publish
from routing.models import Route, RouteStop
from routing.solver.checker import check_solution
from shipments.models import Leg
from shipments.states import LegStatus, Mile
from tests import factories
from tests.dispatch import builders

pytestmark = pytest.mark.django_db


@pytest.fixture
def night_and_day_driver(hubs):
    return factories.driver_make(
        hubs[1], shift_start=time(0, 0), shift_end=time(23, 59)
    )


@pytest.fixture
def driver_client(night_and_day_driver):
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Token {night_and_day_driver.user.auth_token.key}"
    )
    return client


@pytest.fixture
def under_way(hubs, night_and_day_driver, vehicle, driver_client):
    """A routing-style route at the Monaco hub (hub, five deliveries, hub), the
    first two delivered, the driver's latest fix at the second. Its driver works
    around the clock, so the test holds at any hour."""
    hub = hubs[1]
    driver = night_and_day_driver
    now = timezone.now()
    window = (now - timedelta(hours=1), now + timedelta(hours=4))
    shipments = [builders.shipment_at_hub(hub, p) for p in builders.MONACO_POINTS[:5]]
    stops = (
        [{"kind": "hub", "hub": hub}]
        + [
            {
                "kind": "delivery",
                "legs": [builders.first_open_leg(s, Mile.LAST)],
                "window": window,
            }
            for s in shipments
        ]
        + [{"kind": "hub", "hub": hub}]
    )
    route = builders.route_make(
        hub=hub, stops=stops, start_hour=timezone.localtime(now).hour, minutes_between=5
    )
    route_assign(route_id=route.pk, driver_id=driver.pk, vehicle_id=vehicle.pk)
    route_publish(route_id=route.pk)
    delivery_stops = list(route.stops.filter(kind="delivery").order_by("sequence"))
    done = builders.post_events(
        driver_client,
        [
            builders.event("route_started", 1),
            builders.event("delivered", 2, stop_id=delivery_stops[0].pk),
            builders.event("delivered", 3, stop_id=delivery_stops[1].pk),
        ],
    )
    assert {r["status"] for r in done.json()["results"]} == {"applied"}
    at = delivery_stops[1].location
    driver_client.post(
        "/api/v1/driver/pings/",
        {
            "device_id": "p",
            "pings": [
                {
                    "latitude": at.latitude,
                    "longitude": at.longitude,
                    "accuracy": 5,
                    "recorded_at": (now - timedelta(seconds=20)).isoformat(),
                }
            ],
        },
        format="json",
        HTTP_IDEMPOTENCY_KEY=builders.key(),
    )
    route.refresh_from_db()
    return route


def _urgent(hubs, *, window_hours=3, point=(43.7420, 7.4240)):
    now = timezone.now()
    return builders.shipment_to_pick_up(
        point,
        hubs[0],
        service_level="same_day",
        pickup_window_start=now,
        pickup_window_end=now + timedelta(hours=window_hours),
    )


def _snapshot(route):
    return {
        s.pk: (s.sequence, s.status, s.planned_arrival)
        for s in route.stops.exclude(status__in=("pending", "arrived"))
    }


@pytest.mark.parametrize("method", ["auto", "cheapest_insertion"])
def test_an_urgent_pickup_joins_the_route_under_way(
    hubs, under_way, driver_client, method
):
    done_before = _snapshot(under_way)
    shipment = _urgent(hubs)

    result = shipment_insert_same_day(
        shipment_id=shipment.pk, time_budget_seconds=2, method=method
    )

    # The independent checker agrees with the plan that was saved.
    assert check_solution(result.problem, result.solution) == []
    assert result.route_id == under_way.pk
    if method == "auto":
        assert result.method == "optimizer", result.optimizer_note
    assert result.search_seconds < 2 + 1
    under_way.refresh_from_db()
    # Done stops are exactly where they were.
    assert _snapshot(under_way) == done_before
    stops = list(under_way.stops.order_by("sequence"))
    new = RouteStop.objects.get(pk=result.stop_id)
    assert new.kind == "pickup"
    assert new.legs.get().shipment_id == shipment.pk
    done_sequences = [s.sequence for s in stops if s.status == "completed"]
    assert new.sequence > max(done_sequences)
    assert stops[-1].kind == "hub"
    # Every open stop still keeps its window, the new one included.
    for stop in stops:
        if stop.status == "pending" and stop.window_end is not None:
            assert stop.planned_arrival <= stop.window_end, stop.pk
    assert stops[0].kind == "hub"
    assert stops[0].status == "completed"  # left the depot when the route started
    times = [s.planned_arrival for s in stops if s.status == "pending"]
    assert times == sorted(times)
    leg = Leg.objects.get(pk=builders.first_open_leg(shipment, Mile.FIRST).pk)
    assert leg.status == LegStatus.ASSIGNED
    assert under_way.version > 1
    # The driver sees it and can pick it up.
    route_view = driver_client.get("/api/v1/driver/route/").json()
    assert new.pk in [s["id"] for s in route_view["stops"]]
    picked = builders.post_events(
        driver_client, [builders.event("picked_up", 10, stop_id=new.pk)]
    )
    assert picked.json()["results"][0]["status"] == "applied"


def test_a_pickup_whose_window_has_closed_is_refused_and_nothing_changes(
    hubs, under_way
):
    now = timezone.now()
    shipment = builders.shipment_to_pick_up(
        (43.7420, 7.4240),
        hubs[0],
        pickup_window_start=now - timedelta(hours=3),
        pickup_window_end=now - timedelta(hours=2),
    )
    stops_before = list(
        under_way.stops.order_by("sequence").values_list(
            "pk", "sequence", "planned_arrival"
        )
    )

    from shipments.errors import Conflict

    with pytest.raises(Conflict):
        shipment_insert_same_day(shipment_id=shipment.pk, time_budget_seconds=1)

    assert (
        list(
            under_way.stops.order_by("sequence").values_list(
                "pk", "sequence", "planned_arrival"
            )
        )
        == stops_before
    )
    assert builders.first_open_leg(shipment, Mile.FIRST).status == LegStatus.PLANNED


def test_the_insertion_api(dispatcher_client, hubs, under_way):
    shipment = _urgent(hubs)

    response = dispatcher_client.post(
        "/api/v1/routes/insertions/",
        {"shipment_id": shipment.pk, "time_budget_seconds": 1},
        format="json",
    )

    assert response.status_code == 201, response.content
    assert response.json()["route_id"] == under_way.pk
    assert (
        dispatcher_client.post(
            "/api/v1/routes/insertions/", {"shipment_id": shipment.pk}, format="json"
        ).status_code
        == 422
    )  # its pickup is planned now: well formed, refused by a rule
    assert (
        dispatcher_client.post(
            "/api/v1/routes/insertions/", {"shipment_id": 10**9}, format="json"
        ).status_code
        == 422
    )  # no such shipment: a field error, not a missing URL
    assert (
        dispatcher_client.post(
            "/api/v1/routes/insertions/",
            {"shipment_id": 1, "time_budget_seconds": 999},
            format="json",
        ).status_code
        == 400
    )


def test_no_route_under_way_is_a_conflict(hubs, dispatcher_client):
    shipment = _urgent(hubs)

    response = dispatcher_client.post(
        "/api/v1/routes/insertions/", {"shipment_id": shipment.pk}, format="json"
    )

    assert response.status_code == 409
    assert not Route.objects.exists()
