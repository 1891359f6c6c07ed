"""Middle mile: legs consolidated onto timetabled trips; one scan moves them all."""

from __future__ import annotations

from datetime import time
from decimal import Decimal

import pytest
from django.utils import timezone

from dispatch.linehaul import trips_plan_day
from dispatch.models import LineHaulTrip
from dispatch.services import route_assign, route_publish
from routing.models import Route
from shipments.models import Leg, Shipment
from shipments.states import LegStatus, Mile, ShipmentStatus
from tests import factories
from tests.dispatch import builders

pytestmark = pytest.mark.django_db


@pytest.fixture
def at_dc(hubs):
    """Five shipments Grasse → Monaco whose first leg reached the Nice DC at 07:00."""
    today = timezone.localdate()
    shipments = []
    for _ in range(5):
        shipment = factories.shipment_make().shipment
        first = builders.first_open_leg(shipment, Mile.FIRST)
        builders.leg_walk(
            first,
            LegStatus.ASSIGNED,
            LegStatus.IN_TRANSIT,
            LegStatus.COMPLETED,
            at=builders.local(today, 7),
        )
        shipments.append(shipment)
    return shipments


@pytest.fixture
def small_truck(hubs):
    return factories.vehicle_make(
        hubs[0],
        code="truck-dc-1",
        type="truck",
        capacity_kg=Decimal("1000"),
        capacity_parcels=3,
    )


def _middle(shipment) -> Leg:
    return builders.first_open_leg(shipment, Mile.MIDDLE)


def test_legs_are_consolidated_by_cut_off_and_capacity(hubs, at_dc, small_truck):
    today = timezone.localdate()

    result = trips_plan_day(service_date=today)

    trips = list(LineHaulTrip.objects.order_by("departs_at"))
    # The DC leaves for Monaco at 12:00 and 20:00; three parcels fit a trip.
    assert [timezone.localtime(t.departs_at).time() for t in trips] == [
        time(12),
        time(20),
    ]
    assert {(t.origin_hub.code, t.destination_hub.code) for t in trips} == {
        ("nce-dc", "mco-hub")
    }
    noon, evening = trips
    assert sorted(result.consolidated[noon.route_id]) == sorted(
        _middle(s).pk for s in at_dc[:3]
    )
    assert sorted(result.consolidated[evening.route_id]) == sorted(
        _middle(s).pk for s in at_dc[3:]
    )
    for trip in trips:
        first, last = trip.route.stops.order_by("sequence")
        assert (first.kind, first.hub_id, last.kind, last.hub_id) == (
            "hub",
            hubs[0].pk,
            "hub",
            hubs[1].pk,
        )
        assert set(first.legs.all()) == set(last.legs.all())
        assert trip.route.mile == Mile.MIDDLE
        assert trip.arrives_at > trip.departs_at
    assert result.waiting == []


def test_planning_again_adds_nothing_twice(hubs, at_dc, small_truck):
    today = timezone.localdate()
    trips_plan_day(service_date=today)

    again = trips_plan_day(service_date=today)

    assert again.trips == []
    assert again.consolidated == {}
    assert LineHaulTrip.objects.count() == 2


def test_a_trip_is_driven_like_a_route_and_its_scans_move_every_leg(
    hubs, at_dc, small_truck, dispatcher_client
):
    today = timezone.localdate()
    trips_plan_day(service_date=today)
    trip = LineHaulTrip.objects.order_by("departs_at").first()
    trucker = factories.driver_make(
        hubs[0], shift_start=time(6, 0), shift_end=time(18, 0)
    )
    route_assign(
        route_id=trip.route_id, driver_id=trucker.pk, vehicle_id=small_truck.pk
    )
    route_publish(route_id=trip.route_id)
    client = factories_client(trucker)
    origin, destination = trip.route.stops.order_by("sequence")
    carried = at_dc[:3]

    route = client.get("/api/v1/driver/route/").json()
    assert route["trip"]["origin_hub"] == "nce-dc"
    assert [t["action"] for t in route["stops"][0]["tasks"]] == ["load"] * 3
    assert [t["action"] for t in route["stops"][1]["tasks"]] == ["unload"] * 3

    out = builders.post_events(
        client, [builders.event("hub_scan_out", 1, stop_id=origin.pk)]
    )
    assert out.json()["results"][0]["current_state"]["legs_moved"] == 3
    assert {Shipment.objects.get(pk=s.pk).status for s in carried} == {
        ShipmentStatus.IN_TRANSIT
    }

    arrive = builders.post_events(
        client,
        [
            builders.event("departed", 2, stop_id=origin.pk),
            builders.event("arrived", 3, stop_id=destination.pk),
            builders.event("hub_scan_in", 4, stop_id=destination.pk),
            builders.event("route_finished", 5),
        ],
    )
    assert [r["status"] for r in arrive.json()["results"]] == ["applied"] * 4
    assert {_middle(s).status for s in carried} == {LegStatus.COMPLETED}
    assert {Shipment.objects.get(pk=s.pk).status for s in carried} == {
        ShipmentStatus.AT_HUB
    }
    # The evening trip's freight has not moved.
    assert {_middle(s).status for s in at_dc[3:]} == {LegStatus.PLANNED}
    assert Route.objects.get(pk=trip.route_id).status == Route.Status.COMPLETED

    listed = dispatcher_client.get(
        "/api/v1/trips/", {"date": today.isoformat()}
    ).json()["results"]
    assert [(t["leg_count"], t["status"]) for t in listed] == [
        (3, "completed"),
        (2, "draft"),
    ]


def test_trips_plan_api(dispatcher_client, at_dc, small_truck):
    response = dispatcher_client.post(
        "/api/v1/trips/plan/", {"date": timezone.localdate().isoformat()}, format="json"
    )

    assert response.status_code == 200
    assert sum(len(v) for v in response.json()["consolidated"].values()) == 5
    assert (
        dispatcher_client.post(
            "/api/v1/trips/plan/", {"date": "nope"}, format="json"
        ).status_code
        == 400
    )


def test_a_bike_cannot_take_a_trip(hubs, at_dc, small_truck):
    trips_plan_day(service_date=timezone.localdate())
    trip = LineHaulTrip.objects.order_by("departs_at").first()
    bike = factories.vehicle_make(hubs[0], type="cargo_bike")
    trucker = factories.driver_make(
        hubs[0], shift_start=time(6, 0), shift_end=time(18, 0)
    )

    from shipments.errors import Conflict

    with pytest.raises(Conflict, match="van or a truck"):
        route_assign(route_id=trip.route_id, driver_id=trucker.pk, vehicle_id=bike.pk)


def factories_client(driver):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {driver.user.auth_token.key}")
    return client
