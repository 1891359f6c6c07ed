"""A full day for one driver, through the API only."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from dispatch.models import DriverEventReceipt, ProofOfDelivery
from routing.models import RouteStop
from shipments.models import Shipment, ShipmentEvent
from shipments.states import LegStatus, Mile, ShipmentStatus
from tests import factories
from tests.dispatch import builders

pytestmark = pytest.mark.django_db


def _jpeg(color="red", size=(64, 48)) -> io.BytesIO:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    buffer.seek(0)
    buffer.name = "photo.jpg"
    return buffer


def _png_signature() -> io.BytesIO:
    buffer = io.BytesIO()
    Image.new("RGBA", (200, 80), (0, 0, 0, 0)).save(buffer, "PNG")
    buffer.seek(0)
    buffer.name = "signature.png"
    return buffer


@pytest.fixture
def day_route(hubs, driver, dispatcher_client):
    """Pickup A, delivery B (photo, signature, name), delivery C, pickup D, then
    back at the Monaco hub: built as the optimizer would, assigned and
    published by a dispatcher over the API."""
    hub = hubs[1]
    vehicle = factories.vehicle_make(hub)
    pickup_a = builders.shipment_to_pick_up(
        builders.MONACO_POINTS[3], hubs[0], reference="A"
    )
    deliver_b = builders.shipment_at_hub(hub, builders.MONACO_POINTS[0], reference="B")
    deliver_c = builders.shipment_at_hub(hub, builders.MONACO_POINTS[1], reference="C")
    pickup_d = builders.shipment_to_pick_up(
        builders.MONACO_POINTS[2], hubs[0], reference="D"
    )
    first_a = builders.first_open_leg(pickup_a, Mile.FIRST)
    first_d = builders.first_open_leg(pickup_d, Mile.FIRST)
    route = builders.route_make(
        hub=hub,
        mile=Mile.LAST,
        stops=[
            {"kind": RouteStop.Kind.PICKUP, "legs": [first_a]},
            {
                "kind": RouteStop.Kind.DELIVERY,
                "legs": [builders.first_open_leg(deliver_b, Mile.LAST)],
                "requires": ["photo", "signature", "recipient_name"],
            },
            {
                "kind": RouteStop.Kind.DELIVERY,
                "legs": [builders.first_open_leg(deliver_c, Mile.LAST)],
            },
            {"kind": RouteStop.Kind.PICKUP, "legs": [first_d]},
            {"kind": RouteStop.Kind.HUB, "hub": hub, "legs": [first_a, first_d]},
        ],
    )
    assign = dispatcher_client.post(
        f"/api/v1/routes/{route.pk}/assign/",
        {"driver_id": driver.pk, "vehicle_id": vehicle.pk},
        format="json",
    )
    assert assign.status_code == 200, assign.content
    publish = dispatcher_client.post(f"/api/v1/routes/{route.pk}/publish/")
    assert publish.status_code == 200, publish.content
    route.refresh_from_db()
    route.named = {"A": pickup_a, "B": deliver_b, "C": deliver_c, "D": pickup_d}
    return route


def test_a_full_day_through_the_api(driver_client, day_route):
    # Morning: the phone fetches the day.
    today = driver_client.get("/api/v1/driver/route/")
    assert today.status_code == 200
    body = today.json()
    assert body["id"] == day_route.pk
    assert [s["kind"] for s in body["stops"]] == [
        "pickup",
        "delivery",
        "delivery",
        "pickup",
        "hub",
    ]
    a, b, c, d, hub = body["stops"]
    assert [p["action"] for p in a["parcels"]] == ["pick_up"]
    assert [t["action"] for t in hub["tasks"]] == ["unload", "unload"]
    assert b["requires"] == ["photo", "signature", "recipient_name"]
    barcode = {
        s["parcels"][0]["reference"]: s["parcels"][0]["barcode"] for s in (a, b, c, d)
    }

    seq = iter(range(1, 100))

    def send(*events):
        response = builders.post_events(driver_client, list(events))
        assert response.status_code == 200, response.content
        return response.json()["results"]

    def ev(type_, **fields):
        return builders.event(type_, next(seq), **fields)

    assert {
        r["status"]
        for r in send(
            ev("route_started"),
            ev("arrived", stop_id=a["id"]),
            ev("scanned", stop_id=a["id"], barcode=barcode["A"]),
            ev("picked_up", stop_id=a["id"]),
            ev("departed", stop_id=a["id"]),
            ev("arrived", stop_id=b["id"]),
            ev("scanned", stop_id=b["id"], barcode=barcode["B"]),
        )
    } == {"applied"}

    # Delivering B before its proof is refused, with what is missing.
    early = send(ev("delivered", stop_id=b["id"]))[0]
    assert early["status"] == "rejected"
    assert early["reason"] == "pod_missing"
    pod = driver_client.post(
        f"/api/v1/driver/stops/{b['id']}/pod/",
        {
            "photo": _jpeg(),
            "signature": _png_signature(),
            "recipient_name": "Camille Martin",
            "latitude": 43.7396,
            "longitude": 7.4276,
        },
        format="multipart",
        HTTP_IDEMPOTENCY_KEY=builders.key(),
    )
    assert pod.status_code == 201, pod.content

    results = send(
        ev("delivered", stop_id=b["id"], latitude=43.7396, longitude=7.4276),
        ev("departed", stop_id=b["id"]),
        ev("arrived", stop_id=c["id"]),
        ev("delivery_failed", stop_id=c["id"], reason="not_home"),
        ev("departed", stop_id=c["id"]),
        ev("arrived", stop_id=d["id"]),
        ev("picked_up", stop_id=d["id"], barcode=barcode["D"]),
        ev("arrived", stop_id=hub["id"]),
        ev("hub_scan_in", stop_id=hub["id"]),
        ev("route_finished"),
    )
    assert [r["status"] for r in results] == ["applied"] * 10
    assert results[8]["current_state"]["legs_moved"] == 2

    # The driver's view of the day after it.
    after = driver_client.get(f"/api/v1/driver/routes/{day_route.pk}/").json()
    assert after["status"] == "completed"
    assert [s["status"] for s in after["stops"]] == [
        "completed",
        "completed",
        "failed",
        "completed",
        "completed",
    ]
    # Every leg and shipment where the day put it.
    named = {k: Shipment.objects.get(pk=s.pk) for k, s in day_route.named.items()}
    assert builders.first_open_leg(named["A"], Mile.FIRST).status == LegStatus.COMPLETED
    assert builders.first_open_leg(named["D"], Mile.FIRST).status == LegStatus.COMPLETED
    assert builders.first_open_leg(named["B"], Mile.LAST).status == LegStatus.COMPLETED
    c_leg = builders.first_open_leg(named["C"], Mile.LAST)
    assert (c_leg.status, c_leg.attempt_count) == (LegStatus.PLANNED, 1)
    assert {k: s.status for k, s in named.items()} == {
        "A": ShipmentStatus.AT_HUB,
        "B": ShipmentStatus.DELIVERED,
        "C": ShipmentStatus.AT_HUB,
        "D": ShipmentStatus.AT_HUB,
    }
    # The event log tells the same story, in order, with the driver as the source.
    b_log = list(
        ShipmentEvent.objects.filter(shipment=named["B"], source="driver")
        .order_by("id")
        .values_list("type", flat=True)
    )
    assert b_log == [
        "leg.departed",
        "leg.arrived",
        "parcel.scanned",
        "pod.captured",
        "leg.completed",
    ]
    c_log = list(
        ShipmentEvent.objects.filter(shipment=named["C"])
        .order_by("id")
        .values_list("type", flat=True)
    )
    assert c_log[-3:] == ["leg.arrived", "leg.failed", "leg.rescheduled"]
    failed = ShipmentEvent.objects.get(shipment=named["C"], type="leg.failed")
    assert failed.payload["reason"] == "not_home"
    a_log = list(
        ShipmentEvent.objects.filter(shipment=named["A"], source="driver")
        .order_by("id")
        .values_list("type", flat=True)
    )
    assert a_log == ["parcel.scanned", "leg.departed", "leg.completed"]
    # Every item the phone sent is on record, including the refused early delivery.
    receipts = DriverEventReceipt.objects.order_by("seq")
    assert receipts.count() == 18
    assert list(
        receipts.filter(status="rejected").values_list("rejection_reason", flat=True)
    ) == ["pod_missing"]
    assert ProofOfDelivery.objects.get().recipient_name == "Camille Martin"
    # The dispatcher sees the whole route log.
    # (route.assigned, route.published, route.started, route.finished)
    from dispatch.models import RouteEvent

    assert list(
        RouteEvent.objects.filter(route=day_route)
        .order_by("id")
        .values_list("type", flat=True)
    ) == ["route.assigned", "route.published", "route.started", "route.finished"]
