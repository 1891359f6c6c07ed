"""Event batches from the driver's phone: idempotent, ordered by device sequence,
answered per item."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from dispatch.models import DispatchConflict, DriverEventReceipt
from dispatch.services import stop_reassign
from routing.models import Route, RouteStop
from shipments.models import Leg, Shipment, ShipmentEvent
from shipments.states import LegStatus, Mile, ShipmentStatus
from tests import factories
from tests.dispatch import builders

pytestmark = pytest.mark.django_db


def _stops(route):
    return list(route.stops.order_by("sequence"))


def _barcode(shipment):
    return shipment.parcels.order_by("id").first().barcode


def _day_batch(route):
    """A morning on the route: start, two deliveries (no POD needed), one failure."""
    s1, s2, s3 = _stops(route)
    return [
        builders.event("route_started", 1),
        builders.event("arrived", 2, stop_id=s2.pk),
        builders.event(
            "scanned", 3, stop_id=s2.pk, barcode=_barcode(route.shipments[1])
        ),
        builders.event("delivered", 4, stop_id=s2.pk),
        builders.event("departed", 5, stop_id=s2.pk),
        builders.event("arrived", 6, stop_id=s3.pk),
        builders.event("delivery_failed", 7, stop_id=s3.pk, reason="not_home"),
        builders.event("departed", 8, stop_id=s3.pk),
    ]


def _state(route):
    route.refresh_from_db()
    return {
        "route": route.status,
        "stops": [s.status for s in _stops(route)],
        "legs": [
            list(s.legs.order_by("id").values_list("status", "attempt_count"))
            for s in _stops(route)
        ],
        "shipments": [Shipment.objects.get(pk=s.pk).status for s in route.shipments],
    }


def test_the_same_batch_posted_three_times_applies_once(driver_client, last_mile_route):
    batch = _day_batch(last_mile_route)

    first = builders.post_events(driver_client, batch)
    events_after_first = ShipmentEvent.objects.count()
    state_after_first = _state(last_mile_route)
    second = builders.post_events(driver_client, batch)
    third = builders.post_events(driver_client, batch)

    assert first.status_code == second.status_code == third.status_code == 200
    assert [r["status"] for r in first.json()["results"]] == ["applied"] * len(batch)
    for answer in (second.json(), third.json()):
        assert [r["status"] for r in answer["results"]] == ["duplicate"] * len(batch)
        assert all(r["original"]["status"] == "applied" for r in answer["results"])
    assert ShipmentEvent.objects.count() == events_after_first
    assert DriverEventReceipt.objects.count() == len(batch)
    assert _state(last_mile_route) == state_after_first
    assert state_after_first["stops"] == ["pending", "completed", "failed"]


def test_a_retry_with_the_same_key_replays_the_first_answer_byte_for_byte(
    driver_client, last_mile_route
):
    batch = _day_batch(last_mile_route)[:2]
    idem = builders.key()

    first = builders.post_events(driver_client, batch, idem=idem)
    again = builders.post_events(driver_client, batch, idem=idem)

    assert first.content == again.content
    assert again["Idempotent-Replayed"] == "true"
    assert DriverEventReceipt.objects.count() == 2


def test_a_driver_write_without_an_idempotency_key_is_refused(
    driver_client, last_mile_route
):
    response = driver_client.post(
        "/api/v1/driver/events/",
        {"device_id": "d", "events": [builders.event("route_started", 1)]},
        format="json",
    )
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()
    assert not DriverEventReceipt.objects.exists()


def test_a_reversed_batch_ends_in_the_same_state_as_in_order(hubs, vehicle):
    from rest_framework.test import APIClient

    from dispatch.services import route_assign, route_publish

    states = []
    for reverse in (False, True):
        driver = factories.driver_make(hubs[1])
        van = factories.vehicle_make(hubs[1])
        shipments = [
            builders.shipment_at_hub(hubs[1], point)
            for point in builders.MONACO_POINTS[:3]
        ]
        route = builders.route_make(
            hub=hubs[1],
            stops=[
                {
                    "kind": RouteStop.Kind.DELIVERY,
                    "legs": [builders.first_open_leg(s, Mile.LAST)],
                }
                for s in shipments
            ],
        )
        route_assign(route_id=route.pk, driver_id=driver.pk, vehicle_id=van.pk)
        route_publish(route_id=route.pk)
        route.shipments = shipments
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {driver.user.auth_token.key}")
        batch = _day_batch(route)
        if reverse:
            batch = batch[::-1]

        response = builders.post_events(client, batch)

        assert response.status_code == 200
        assert {r["status"] for r in response.json()["results"]} == {"applied"}
        # Answers come back in the order the items were sent.
        assert [r["event_id"] for r in response.json()["results"]] == [
            e["event_id"] for e in batch
        ]
        states.append(_state(route))
    assert states[0] == states[1]
    assert states[0]["stops"] == ["pending", "completed", "failed"]


def test_a_mixed_batch_applies_the_valid_items_and_answers_each(
    hubs, driver_client, last_mile_route
):
    s1, s2, s3 = _stops(last_mile_route)
    already = builders.event("route_started", 1)
    assert builders.post_events(driver_client, [already]).status_code == 200
    other_driver = factories.driver_make(hubs[1])
    foreign_shipment = builders.shipment_at_hub(hubs[1], builders.MONACO_POINTS[4])
    foreign_route = builders.route_make(
        hub=hubs[1],
        driver=other_driver,
        stops=[
            {
                "kind": "delivery",
                "legs": [builders.first_open_leg(foreign_shipment, Mile.LAST)],
            }
        ],
    )
    foreign_stop = foreign_route.stops.get()
    batch = [
        already,  # duplicate of an applied item
        builders.event("arrived", 2, stop_id=s2.pk),  # valid
        builders.event(
            "scanned", 3, stop_id=s2.pk, barcode="NOPE-0000"
        ),  # unknown barcode
        builders.event(
            "scanned", 4, stop_id=s2.pk, barcode=_barcode(foreign_shipment)
        ),  # foreign
        builders.event(
            "scanned", 5, stop_id=s2.pk, barcode=_barcode(last_mile_route.shipments[0])
        ),
        builders.event("arrived", 6, stop_id=foreign_stop.pk),  # another driver's stop
        builders.event(
            "delivery_failed", 7, stop_id=s3.pk, reason="bored"
        ),  # bad reason
        builders.event(
            "delivered", 8, stop_id=s1.pk
        ),  # needs photo and signature first
        builders.event("teleported", 9),  # unknown type
        builders.event("delivered", 10, stop_id=s2.pk),  # valid
    ]

    response = builders.post_events(driver_client, batch)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["status"], r.get("reason")) for r in results] == [
        ("duplicate", None),
        ("applied", None),
        ("rejected", "unknown_barcode"),
        ("rejected", "barcode_not_on_route"),
        ("rejected", "barcode_not_on_stop"),
        ("rejected", "unknown_stop"),
        ("rejected", "invalid_failure_reason"),
        ("rejected", "pod_missing"),
        ("rejected", "unknown_type"),
        ("applied", None),
    ]
    assert results[7]["current_state"]["missing"] == ["photo", "signature"]
    assert results[7]["current_state"]["stop"] == {"id": s1.pk, "status": "pending"}
    # Every new item is stored, the rejected ones with their reason.
    stored = {r.seq: r for r in DriverEventReceipt.objects.all()}
    assert sorted(stored) == list(range(1, 11))
    assert stored[6].status == "rejected"
    assert stored[6].rejection_reason == "unknown_stop"
    assert stored[6].stop_id is None  # nothing links the item to the foreign stop
    s2.refresh_from_db()
    assert s2.status == "completed"
    foreign_stop.refresh_from_db()
    assert foreign_stop.status == "pending"
    # The foreign answer looks exactly like the answer for a stop that does not exist.
    ghost = builders.post_events(
        driver_client, [builders.event("arrived", 11, stop_id=10**9)]
    )
    ghost_result = ghost.json()["results"][0]
    assert ghost_result["reason"] == results[5]["reason"]
    assert ghost_result["detail"] == results[5]["detail"]


def test_a_late_item_that_conflicts_is_stored_as_rejected_with_its_reason(
    driver_client, last_mile_route
):
    s1, s2, s3 = _stops(last_mile_route)
    builders.post_events(
        driver_client,
        [builders.event("delivered", 10, stop_id=s2.pk)],
    )
    # An older item, queued offline on the phone, arrives after the delivery.
    late = builders.post_events(
        driver_client,
        [builders.event("delivery_failed", 7, stop_id=s2.pk, reason="not_home")],
    )

    result = late.json()["results"][0]
    assert result["status"] == "rejected"
    assert result["reason"] == "stop_already_completed"
    assert result["current_state"]["stop"]["status"] == "completed"
    receipt = DriverEventReceipt.objects.get(seq=7)
    assert receipt.status == "rejected"
    assert receipt.rejection_reason == "stop_already_completed"
    assert (
        Leg.objects.get(
            pk=builders.first_open_leg(last_mile_route.shipments[1], Mile.LAST).pk
        ).status
        == "completed"
    )


def test_the_same_seq_under_a_new_event_id_is_a_duplicate(
    driver_client, last_mile_route
):
    builders.post_events(driver_client, [builders.event("route_started", 1)])

    again = builders.post_events(driver_client, [builders.event("route_finished", 1)])

    result = again.json()["results"][0]
    assert result["status"] == "duplicate"
    assert result["reason"] == "device_seq_already_used"
    last_mile_route.refresh_from_db()
    assert last_mile_route.status == "in_progress"


def test_a_new_device_starts_its_own_sequence(driver_client, last_mile_route):
    builders.post_events(
        driver_client, [builders.event("route_started", 1)], device_id="old"
    )

    response = builders.post_events(
        driver_client,
        [builders.event("arrived", 1, stop_id=_stops(last_mile_route)[0].pk)],
        device_id="reinstalled",
    )

    assert response.json()["results"][0]["status"] == "applied"


def test_a_batch_over_500_items_is_refused_whole(driver_client, last_mile_route):
    batch = [builders.event("scanned", i, barcode="X") for i in range(501)]

    response = builders.post_events(driver_client, batch)

    assert response.status_code == 400
    assert "events" in response.json()
    assert not DriverEventReceipt.objects.exists()


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (
            {
                "event_id": "not-a-uuid",
                "seq": 1,
                "type": "arrived",
                "occurred_at": "2026-01-01T00:00:00Z",
            },
            "events",
        ),
        (
            {
                "event_id": str(uuid.uuid4()),
                "seq": -1,
                "type": "arrived",
                "occurred_at": "2026-01-01T00:00:00Z",
            },
            "events",
        ),
        (
            {
                "event_id": str(uuid.uuid4()),
                "seq": 1,
                "type": "arrived",
                "occurred_at": "yesterday",
            },
            "events",
        ),
        (
            {
                "event_id": str(uuid.uuid4()),
                "seq": 10**30,
                "type": "arrived",
                "occurred_at": "2026-01-01T00:00:00Z",
            },
            "events",
        ),
    ],
)
def test_an_item_without_a_storable_identity_is_a_400(
    driver_client, last_mile_route, item, field
):
    response = builders.post_events(driver_client, [item])

    assert response.status_code == 400
    assert field in response.json()


def test_not_home_reschedules_the_leg_and_refused_plans_a_return(
    driver_client, last_mile_route
):
    s1, s2, s3 = _stops(last_mile_route)
    response = builders.post_events(
        driver_client,
        [
            builders.event("delivery_failed", 1, stop_id=s2.pk, reason="not_home"),
            builders.event("delivery_failed", 2, stop_id=s3.pk, reason="refused"),
        ],
    )

    results = response.json()["results"]
    assert results[0]["current_state"]["policy"][0]["policy"] == "rescheduled"
    assert results[1]["current_state"]["policy"][0]["policy"] == "return"
    rescheduled = builders.first_open_leg(last_mile_route.shipments[1], Mile.LAST)
    assert (rescheduled.status, rescheduled.attempt_count) == (LegStatus.PLANNED, 1)
    assert (
        Shipment.objects.get(pk=last_mile_route.shipments[1].pk).status
        == ShipmentStatus.AT_HUB
    )
    refused = Shipment.objects.get(pk=last_mile_route.shipments[2].pk)
    assert refused.status == ShipmentStatus.DELIVERY_FAILED
    returned = refused.returns.get()
    assert returned.is_return
    assert returned.status == ShipmentStatus.PLANNED
    assert returned.origin_hub_id == last_mile_route.hub_id
    assert returned.parcel_count == refused.parcel_count


def test_the_third_failed_attempt_returns_the_shipment(driver_client, last_mile_route):
    leg = builders.first_open_leg(last_mile_route.shipments[1], Mile.LAST)
    Leg.objects.filter(pk=leg.pk).update(attempt_count=2)  # two earlier days failed
    s2 = _stops(last_mile_route)[1]

    response = builders.post_events(
        driver_client,
        [builders.event("delivery_failed", 1, stop_id=s2.pk, reason="not_home")],
    )

    decision = response.json()["results"][0]["current_state"]["policy"][0]
    assert decision["policy"] == "return"
    assert decision["attempts"] == 3


def test_a_pod_backed_delivery_beats_a_reassignment_and_flags_a_conflict(
    hubs, driver_client, last_mile_route
):
    s1, s2, s3 = _stops(last_mile_route)
    other = builders.route_make(hub=hubs[1], stops=[])
    moved = stop_reassign(stop_id=s2.pk, route_id=other.pk)
    s2.refresh_from_db()
    assert s2.status == "skipped"

    # The phone was offline: its driver delivered the parcel before hearing of the move.
    response = builders.post_events(
        driver_client,
        [
            builders.event(
                "delivered",
                1,
                stop_id=s2.pk,
                occurred_at=(timezone.now() - timedelta(minutes=5)).isoformat(),
            )
        ],
    )

    assert response.json()["results"][0]["status"] == "applied"
    s2.refresh_from_db()
    moved.refresh_from_db()
    assert s2.status == "completed"
    assert moved.status == "skipped"
    assert (
        Leg.objects.get(
            pk=builders.first_open_leg(last_mile_route.shipments[1], Mile.LAST).pk
        ).status
        == "completed"
    )
    conflict = DispatchConflict.objects.get()
    assert conflict.kind == DispatchConflict.Kind.DELIVERED_AFTER_REASSIGNMENT
    assert conflict.stop_id == s2.pk


def test_route_finished_gives_back_the_stops_not_served(driver_client, last_mile_route):
    s1, s2, s3 = _stops(last_mile_route)
    builders.post_events(
        driver_client,
        [
            builders.event("route_started", 1),
            builders.event("delivered", 2, stop_id=s2.pk),
            builders.event("route_finished", 3),
        ],
    )

    last_mile_route.refresh_from_db()
    assert last_mile_route.status == Route.Status.COMPLETED
    assert [s.status for s in _stops(last_mile_route)] == [
        "skipped",
        "completed",
        "skipped",
    ]
    for shipment in (last_mile_route.shipments[0], last_mile_route.shipments[2]):
        leg = builders.first_open_leg(shipment, Mile.LAST)
        # Loaded, never attempted: back to the hub and re-planned, no attempt counted
        # towards a return.
        assert leg.status == LegStatus.PLANNED
        assert Shipment.objects.get(pk=shipment.pk).status == ShipmentStatus.AT_HUB


def test_every_applied_item_is_in_the_shipment_event_log(
    driver_client, last_mile_route
):
    s1, s2, s3 = _stops(last_mile_route)
    response = builders.post_events(
        driver_client,
        [
            builders.event("route_started", 1),
            builders.event("delivered", 2, stop_id=s2.pk),
        ],
    )

    delivered_id = response.json()["results"][1]["event_id"]
    leg = builders.first_open_leg(last_mile_route.shipments[1], Mile.LAST)
    types = list(
        leg.events.order_by("id").values_list("type", "payload__driver_event_id")
    )
    assert ("leg.completed", delivered_id) in types
    assert types[-2][0] == "leg.departed"  # route_started: out for delivery


def test_an_item_repeated_inside_one_batch_is_answered_as_a_duplicate(
    driver_client, last_mile_route
):
    stop = _stops(last_mile_route)[1]
    item = builders.event("delivered", 1, stop_id=stop.pk)

    response = builders.post_events(driver_client, [item, item])

    assert response.status_code == 200
    assert [r["status"] for r in response.json()["results"]] == ["applied", "duplicate"]
    assert DriverEventReceipt.objects.count() == 1


def test_the_dispatcher_sees_and_resolves_the_conflict(
    hubs, driver_client, dispatcher_client, last_mile_route
):
    s2 = _stops(last_mile_route)[1]
    other = builders.route_make(hub=hubs[1], stops=[])
    stop_reassign(stop_id=s2.pk, route_id=other.pk)
    builders.post_events(driver_client, [builders.event("delivered", 1, stop_id=s2.pk)])

    listed = dispatcher_client.get(
        "/api/v1/dispatch/conflicts/", {"open": "true"}
    ).json()
    (conflict,) = listed["results"]
    assert conflict["kind"] == "delivered_after_reassignment"
    resolved = dispatcher_client.post(
        f"/api/v1/dispatch/conflicts/{conflict['id']}/resolve/"
    )
    again = dispatcher_client.post(
        f"/api/v1/dispatch/conflicts/{conflict['id']}/resolve/"
    )

    assert resolved.status_code == again.status_code == 200
    assert resolved.json()["resolved_at"] == again.json()["resolved_at"]
    assert (
        dispatcher_client.get("/api/v1/dispatch/conflicts/", {"open": "true"}).json()[
            "results"
        ]
        == []
    )
    assert driver_client.get("/api/v1/dispatch/conflicts/").status_code == 403
