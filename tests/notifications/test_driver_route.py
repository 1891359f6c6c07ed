"""The customer's instructions reach the driver's stop."""

from __future__ import annotations

import pytest
from django.utils import timezone

from notifications.selectors import delivery_instructions_for_shipments
from shipments.models import Shipment
from tests import factories
from tests.notifications.journey import leg_of, step
from tests.tracking.builders import route_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def at_monaco_hub(hubs, fresh_limits):
    created = factories.shipment_make()
    shipment = created.shipment
    for mile in ("first", "middle"):
        for status in ("assigned", "in_transit", "completed"):
            step(shipment, mile, status)
    return Shipment.objects.get(pk=shipment.pk), created.tracking_token


def test_the_selector_gives_one_line_per_shipment_in_two_queries(
    at_monaco_hub, api_client, django_assert_num_queries
):
    shipment, token = at_monaco_hub
    other = factories.shipment_make().shipment
    api_client.post(
        f"/api/v1/track/{token}/instructions/",
        {"door_code": "12A", "note": "3rd floor"},
        format="json",
    )

    # 1: open pickup-at-hub requests, 2: instructions.
    with django_assert_num_queries(2):
        lines = delivery_instructions_for_shipments([shipment.pk, other.pk])

    assert lines == {shipment.pk: "Door code: 12A · Note: 3rd floor"}




def test_instructions_left_on_the_tracking_page_show_on_the_drivers_stop(
    at_monaco_hub, api_client, driver, driver_client
):
    shipment, token = at_monaco_hub
    monaco = shipment.destination_hub
    route_make(
        hub=monaco,
        mile="last",
        driver=driver,
        planned_start=timezone.now(),
        stops=[("delivery", shipment.destination, [leg_of(shipment, "last")])],
    )
    answer = api_client.post(
        f"/api/v1/track/{token}/instructions/",
        {"safe_place": "Behind the blue gate", "door_code": "4721B"},
        format="json",
    )
    assert answer.status_code == 200

    route = driver_client.get("/api/v1/driver/route/")

    assert route.status_code == 200
    (stop,) = [s for s in route.json()["stops"] if s["kind"] == "delivery"]
    assert "Safe place: Behind the blue gate" in stop["notes"]
    assert "Door code: 4721B" in stop["notes"]


def test_new_instructions_change_the_route_etag(
    at_monaco_hub, api_client, driver, driver_client
):
    shipment, token = at_monaco_hub
    route_make(
        hub=shipment.destination_hub,
        mile="last",
        driver=driver,
        planned_start=timezone.now(),
        stops=[("delivery", shipment.destination, [leg_of(shipment, "last")])],
    )
    before = driver_client.get("/api/v1/driver/route/")
    assert before.status_code == 200

    api_client.post(
        f"/api/v1/track/{token}/instructions/", {"note": "Ring twice"}, format="json"
    )
    after = driver_client.get(
        "/api/v1/driver/route/", HTTP_IF_NONE_MATCH=before["ETag"]
    )

    assert after.status_code == 200
    assert (
        "Note: Ring twice"
        in [s for s in after.json()["stops"] if s["kind"] == "delivery"][0]["notes"]
    )
