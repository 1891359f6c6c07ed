"""Dispatchers assign, publish, unassign and re-shape routes; the phone polls cheaply."""

from __future__ import annotations

from datetime import time
from decimal import Decimal

import pytest

from dispatch.models import RouteEvent
from dispatch.services import route_assign, route_publish
from routing.models import RouteStop
from shipments.models import Leg, OutboxMessage, ShipmentEvent
from shipments.states import LegStatus, Mile
from tests import factories
from tests.dispatch import builders

pytestmark = pytest.mark.django_db


@pytest.fixture
def draft(hubs):
    """A draft last-mile route at the Monaco hub, 09:00–10:00, two deliveries."""
    shipments = [
        builders.shipment_at_hub(hubs[1], p, weight_kg="30")
        for p in builders.MONACO_POINTS[:2]
    ]
    route = builders.route_make(
        hub=hubs[1],
        stops=[
            {"kind": "delivery", "legs": [builders.first_open_leg(s, Mile.LAST)]}
            for s in shipments
        ],
    )
    route.shipments = shipments
    return route


def _assign(client, route, driver, vehicle):
    return client.post(
        f"/api/v1/routes/{route.pk}/assign/",
        {"driver_id": driver.pk, "vehicle_id": vehicle.pk},
        format="json",
    )


def test_assign_then_publish_hands_the_route_and_its_legs_to_the_driver(
    dispatcher_client, draft, driver, vehicle
):
    assigned = _assign(dispatcher_client, draft, driver, vehicle)
    assert assigned.status_code == 200
    assert assigned.json()["driver"]["id"] == driver.pk
    assert assigned.json()["status"] == "draft"

    published = dispatcher_client.post(f"/api/v1/routes/{draft.pk}/publish/")

    assert published.status_code == 200
    assert published.json()["status"] == "published"
    legs = Leg.objects.filter(route_stops__route=draft)
    assert set(legs.values_list("status", flat=True)) == {LegStatus.ASSIGNED}
    assert ShipmentEvent.objects.filter(leg__in=legs, type="leg.assigned").count() == 2
    assert list(
        RouteEvent.objects.filter(route=draft).values_list("type", flat=True)
    ) == [
        "route.assigned",
        "route.published",
    ]
    # The dashboard and the driver's phone hear of it.
    published_msg = (
        OutboxMessage.objects.filter(type="route.event").order_by("-id").first()
    )
    assert published_msg.payload["event_type"] == "route.published"
    assert f"driver.{driver.pk}" in published_msg.groups
    assert "dashboard" in published_msg.groups


def test_assigning_a_vehicle_too_small_is_refused_with_the_reason(
    dispatcher_client, draft, driver, hubs
):
    bike = factories.vehicle_make(
        hubs[1],
        type="cargo_bike",
        capacity_kg=Decimal("50"),
        capacity_m3=Decimal("0.5"),
    )

    response = _assign(dispatcher_client, draft, driver, bike)

    assert response.status_code == 409
    assert "60.000 kg > 50.00 kg" in response.json()["vehicle_id"][0]
    draft.refresh_from_db()
    assert draft.driver_id is None


def test_assigning_a_driver_whose_shift_does_not_cover_the_route_is_refused(
    dispatcher_client, draft, hubs, vehicle
):
    late = factories.driver_make(
        hubs[1], shift_start=time(13, 0), shift_end=time(21, 0)
    )

    response = _assign(dispatcher_client, draft, late, vehicle)

    assert response.status_code == 409
    assert "shift" in response.json()["driver_id"][0]


def test_a_driver_or_vehicle_already_booked_at_that_time_is_refused(
    dispatcher_client, draft, hubs, driver, vehicle
):
    shipment = builders.shipment_at_hub(hubs[1], builders.MONACO_POINTS[3])
    overlapping = builders.route_make(
        hub=hubs[1],
        start_hour=9,
        stops=[
            {"kind": "delivery", "legs": [builders.first_open_leg(shipment, Mile.LAST)]}
        ],
    )
    route_assign(route_id=overlapping.pk, driver_id=driver.pk, vehicle_id=vehicle.pk)
    other_van = factories.vehicle_make(hubs[1])
    other_driver = factories.driver_make(hubs[1])

    by_driver = _assign(dispatcher_client, draft, driver, other_van)
    by_vehicle = _assign(dispatcher_client, draft, other_driver, vehicle)

    assert by_driver.status_code == by_vehicle.status_code == 409
    assert (
        f"already booked on route {overlapping.pk}" in by_driver.json()["driver_id"][0]
    )
    assert (
        f"already booked on route {overlapping.pk}"
        in by_vehicle.json()["vehicle_id"][0]
    )


def test_a_route_later_that_day_does_not_book_the_driver(
    dispatcher_client, draft, hubs, driver, vehicle
):
    shipment = builders.shipment_at_hub(hubs[1], builders.MONACO_POINTS[3])
    afternoon = builders.route_make(
        hub=hubs[1],
        start_hour=14,
        stops=[
            {"kind": "delivery", "legs": [builders.first_open_leg(shipment, Mile.LAST)]}
        ],
    )
    route_assign(route_id=afternoon.pk, driver_id=driver.pk, vehicle_id=vehicle.pk)

    assert _assign(dispatcher_client, draft, driver, vehicle).status_code == 200


def test_unknown_ids_are_field_errors_and_a_missing_route_is_404(
    dispatcher_client, draft
):
    response = dispatcher_client.post(
        f"/api/v1/routes/{draft.pk}/assign/",
        {"driver_id": 10**9, "vehicle_id": 10**9},
        format="json",
    )
    assert response.status_code == 422  # well formed; no such driver or vehicle
    assert set(response.json()) >= {"driver_id", "vehicle_id"}
    bad = dispatcher_client.post(
        f"/api/v1/routes/{draft.pk}/assign/", {"driver_id": "x"}, format="json"
    )
    assert bad.status_code == 400
    missing = dispatcher_client.post(
        "/api/v1/routes/999999/assign/",
        {"driver_id": 1, "vehicle_id": 1},
        format="json",
    )
    assert missing.status_code == 404


def test_publishing_an_unassigned_route_is_a_conflict(dispatcher_client, draft):
    response = dispatcher_client.post(f"/api/v1/routes/{draft.pk}/publish/")

    assert response.status_code == 409
    assert Leg.objects.filter(route_stops__route=draft, status="assigned").count() == 0


def test_publishing_twice_is_a_conflict_and_changes_nothing(
    dispatcher_client, draft, driver, vehicle
):
    route_assign(route_id=draft.pk, driver_id=driver.pk, vehicle_id=vehicle.pk)
    assert (
        dispatcher_client.post(f"/api/v1/routes/{draft.pk}/publish/").status_code == 200
    )
    events = ShipmentEvent.objects.count()

    again = dispatcher_client.post(f"/api/v1/routes/{draft.pk}/publish/")

    assert again.status_code == 409
    assert ShipmentEvent.objects.count() == events


def test_publish_the_day_publishes_assigned_drafts_and_lists_the_rest(
    dispatcher_client, draft, hubs, driver, vehicle
):
    route_assign(route_id=draft.pk, driver_id=driver.pk, vehicle_id=vehicle.pk)
    shipment = builders.shipment_at_hub(hubs[1], builders.MONACO_POINTS[4])
    lonely = builders.route_make(
        hub=hubs[1],
        stops=[
            {"kind": "delivery", "legs": [builders.first_open_leg(shipment, Mile.LAST)]}
        ],
    )

    response = dispatcher_client.post(
        "/api/v1/routes/publish/",
        {"date": draft.service_date.isoformat(), "hub": "mco-hub"},
        format="json",
    )

    assert response.status_code == 200
    assert response.json() == {
        "published": [draft.pk],
        "failed": [],
        "unassigned": [lonely.pk],
    }


def test_unassigning_a_published_route_returns_its_legs_to_planning(
    dispatcher_client, draft, driver, vehicle
):
    route_assign(route_id=draft.pk, driver_id=driver.pk, vehicle_id=vehicle.pk)
    route_publish(route_id=draft.pk)

    response = dispatcher_client.post(f"/api/v1/routes/{draft.pk}/unassign/")

    assert response.status_code == 200
    assert response.json()["status"] == "draft"
    assert response.json()["driver"] is None
    assert set(
        Leg.objects.filter(route_stops__route=draft).values_list("status", flat=True)
    ) == {LegStatus.PLANNED}
    message = OutboxMessage.objects.filter(type="route.event").order_by("-id").first()
    assert (
        f"driver.{driver.pk}" in message.groups
    )  # the driver hears their route went away


def test_moving_a_stop_to_another_route(
    dispatcher_client, draft, hubs, driver, vehicle
):
    route_assign(route_id=draft.pk, driver_id=driver.pk, vehicle_id=vehicle.pk)
    route_publish(route_id=draft.pk)
    target = builders.route_make(hub=hubs[1], stops=[])
    stop = draft.stops.order_by("sequence").first()

    response = dispatcher_client.post(
        f"/api/v1/routes/stops/{stop.pk}/reassign/",
        {"route_id": target.pk},
        format="json",
    )

    assert response.status_code == 201
    moved = RouteStop.objects.get(pk=response.json()["id"])
    assert moved.route_id == target.pk
    stop.refresh_from_db()
    assert stop.status == "skipped"
    # The target is a draft: the leg waits for it to be published.
    assert moved.legs.get().status == LegStatus.PLANNED
    again = dispatcher_client.post(
        f"/api/v1/routes/stops/{stop.pk}/reassign/",
        {"route_id": target.pk},
        format="json",
    )
    assert again.status_code == 409


def test_route_list_filters_and_counts(dispatcher_client, draft, driver, vehicle):
    route_assign(route_id=draft.pk, driver_id=driver.pk, vehicle_id=vehicle.pk)

    response = dispatcher_client.get(
        "/api/v1/routes/",
        {"date": draft.service_date.isoformat(), "hub": "mco-hub", "status": "draft"},
    )

    assert response.status_code == 200
    rows = response.json()["results"]
    assert [(r["id"], r["stop_count"], r["driver"]["id"]) for r in rows] == [
        (draft.pk, 2, driver.pk)
    ]
    assert (
        dispatcher_client.get("/api/v1/routes/", {"status": "completed"}).json()[
            "results"
        ]
        == []
    )


def test_the_driver_route_answers_304_until_something_changes(
    driver_client, dispatcher_client, last_mile_route
):
    first = driver_client.get("/api/v1/driver/route/")
    etag = first["ETag"]

    unchanged = driver_client.get("/api/v1/driver/route/", HTTP_IF_NONE_MATCH=etag)
    assert unchanged.status_code == 304
    assert unchanged.content == b""

    RouteStop.objects.filter(route=last_mile_route, sequence=2).update(
        notes="Gate code 1234"
    )
    changed = driver_client.get("/api/v1/driver/route/", HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200
    assert changed["ETag"] != etag
    stop = builders.post_events(driver_client, [builders.event("route_started", 1)])
    assert stop.status_code == 200
    assert (
        driver_client.get(
            "/api/v1/driver/route/", HTTP_IF_NONE_MATCH=changed["ETag"]
        ).status_code
        == 200
    )


def test_the_driver_route_is_a_fixed_number_of_queries(
    driver_client, last_mile_route, django_assert_max_num_queries
):
    # auth (token with user and driver, groups), current route, ETag (stops, legs,
    # customer instructions), then the route, its stops, their legs (with
    # shipment), parcels, instructions: no query per stop.
    with django_assert_max_num_queries(13):
        response = driver_client.get("/api/v1/driver/route/")
    assert len(response.json()["stops"]) == 3


def test_route_log_and_trace_for_dispatchers(
    dispatcher_client, driver_client, last_mile_route
):
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    driver_client.post(
        "/api/v1/driver/pings/",
        {
            "device_id": "p",
            "pings": [
                {
                    "latitude": 43.73,
                    "longitude": 7.42,
                    "accuracy": 5,
                    "recorded_at": (now - timedelta(seconds=s)).isoformat(),
                }
                for s in (30, 20, 10)
            ],
        },
        format="json",
        HTTP_IDEMPOTENCY_KEY=builders.key(),
    )

    trace = dispatcher_client.get(f"/api/v1/routes/{last_mile_route.pk}/trace/").json()
    log = dispatcher_client.get(f"/api/v1/routes/{last_mile_route.pk}/events/").json()

    assert [p["recorded_at"] for p in trace] == sorted(p["recorded_at"] for p in trace)
    assert len(trace) == 3
    assert [e["type"] for e in log] == ["route.assigned", "route.published"]


def test_duty_status_is_the_drivers_own(driver, driver_client):
    response = driver_client.post(
        "/api/v1/driver/duty/",
        {"status": "on_duty"},
        format="json",
        HTTP_IDEMPOTENCY_KEY=builders.key(),
    )
    assert response.status_code == 200
    assert response.json()["duty_status"] == "on_duty"
    bad = driver_client.post(
        "/api/v1/driver/duty/",
        {"status": "asleep"},
        format="json",
        HTTP_IDEMPOTENCY_KEY=builders.key(),
    )
    assert bad.status_code == 400
    assert "status" in bad.json()
    driver.refresh_from_db()
    assert driver.duty_status == "on_duty"
    assert driver.duty_changes.get().to_status == "on_duty"
    assert driver_client.get("/api/v1/driver/me/").json()["duty_status"] == "on_duty"
