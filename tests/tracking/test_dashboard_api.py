"""Dashboard APIs and pages: permissions, after_seq, exceptions, KPIs, snapshot."""

from __future__ import annotations

import pytest
from django.test import Client

from shipments.models import ShipmentEvent
from tests import factories
from tests.tracking.builders import (
    chain_plan,
    fixed_travel,
    legs_of,
    local_at,
    position_set,
    route_make,
)
from tracking.eta import eta_route_refresh
from tracking.models import DeliveryException

pytestmark = pytest.mark.django_db


@pytest.fixture
def at_risk(hubs):
    """One missed-cut-off exception on one shipment (see test_eta for the arithmetic)."""
    dc, _ = hubs
    driver = factories.driver_make(dc)
    shipment = factories.shipment_make().shipment
    chain_plan(shipment, day=1, first=((8, 0), (9, 0)), middle=((12, 0), (13, 0)),
               last=((14, 0), (15, 0)), promised=(16, 0))
    route = route_make(hub=dc, mile="first", driver=driver, planned_start=local_at(1, 8),
                       stops=[("pickup", shipment.origin, [legs_of(shipment)["first"]])])
    position_set(driver, at=local_at(1, 11), lat_lng=(dc.location.latitude, dc.location.longitude), route=route)
    eta_route_refresh(route_id=route.pk, now=local_at(1, 11), travel=fixed_travel(1800))
    return DeliveryException.objects.get(status="open"), shipment


@pytest.mark.parametrize(
    "url",
    ["/api/v1/live/?after_seq=0", "/api/v1/dashboard/snapshot/", "/api/v1/kpis/", "/api/v1/exceptions/",
     "/api/v1/webhooks/endpoints/"],
)
def test_dashboard_apis_refuse_drivers_and_anonymous(url, api_client, driver_client, dispatcher_client):
    assert api_client.get(url).status_code in (401, 403)
    assert driver_client.get(url).status_code == 403
    assert dispatcher_client.get(url).status_code == 200


def test_dashboard_pages_need_a_dispatcher(dispatcher, driver):
    anonymous = Client()
    assert anonymous.get("/dashboard/").status_code == 302
    as_driver = Client()
    as_driver.force_login(driver.user)
    assert as_driver.get("/dashboard/").status_code == 403
    as_dispatcher = Client()
    as_dispatcher.force_login(dispatcher)
    for url in ("/dashboard/", "/dashboard/shipments/", "/dashboard/shipments/?q=REF&at_risk=1&mile=first"):
        response = as_dispatcher.get(url)
        assert response.status_code == 200, url
    assert as_dispatcher.get("/dashboard/shipments/999999/").status_code == 404


def test_after_seq_rejects_bad_input(dispatcher_client):
    assert dispatcher_client.get("/api/v1/live/").status_code == 400
    assert dispatcher_client.get("/api/v1/live/?after_seq=-1").status_code == 400
    assert dispatcher_client.get("/api/v1/live/?after_seq=abc").status_code == 400
    assert dispatcher_client.get("/api/v1/live/?after_seq=0&limit=100000").status_code == 400


def test_acknowledge_then_resolve_writes_events_and_refuses_repeats(at_risk, dispatcher_client):
    exception, shipment = at_risk
    listed = dispatcher_client.get("/api/v1/exceptions/?status=open").json()["results"]
    assert [e["id"] for e in listed] == [exception.pk]
    assert listed[0]["shipment_ids"] == [shipment.pk]

    ack = dispatcher_client.post(f"/api/v1/exceptions/{exception.pk}/acknowledge/", {"note": "calling the driver"})
    assert ack.status_code == 200 and ack.json()["status"] == "acknowledged"
    assert dispatcher_client.post(f"/api/v1/exceptions/{exception.pk}/acknowledge/", {}).status_code == 409
    resolved = dispatcher_client.post(f"/api/v1/exceptions/{exception.pk}/resolve/", {})
    assert resolved.status_code == 200 and resolved.json()["resolution"] == "manual"
    assert dispatcher_client.post(f"/api/v1/exceptions/{exception.pk}/resolve/", {}).status_code == 409
    assert dispatcher_client.post("/api/v1/exceptions/999999/resolve/", {}).status_code == 404
    types = list(ShipmentEvent.objects.filter(shipment=shipment).values_list("type", flat=True))
    assert "exception.acknowledged" in types and "exception.resolved" in types
    note = dispatcher_client.post(f"/api/v1/exceptions/{exception.pk}/resolve/", {"note": "x" * 600})
    assert note.status_code == 400 and "note" in note.json()


def test_a_manually_resolved_cause_is_not_raised_again(at_risk, dispatcher_client):
    exception, shipment = at_risk
    dispatcher_client.post(f"/api/v1/exceptions/{exception.pk}/resolve/", {})
    route_id = shipment.legs.get(mile="first").route_stops.get().route_id
    eta_route_refresh(route_id=route_id, now=local_at(1, 11, 5), travel=fixed_travel(1800))
    assert not DeliveryException.objects.exclude(status="resolved").exists()


def test_snapshot_and_kpis_describe_the_day(at_risk, dispatcher_client):
    snapshot = dispatcher_client.get("/api/v1/dashboard/snapshot/?date=" + local_at(1, 8).date().isoformat()).json()
    assert {h["code"] for h in snapshot["hubs"]} == {"nce-dc", "mco-hub"}
    assert len(snapshot["routes"]) == 1 and snapshot["routes"][0]["mile"] == "first"
    assert snapshot["routes"][0]["stops"][0]["eta"]
    assert len(snapshot["drivers"]) == 1
    assert [e["type"] for e in snapshot["exceptions"]] == ["missed_cutoff"]
    kpis = snapshot["kpis"]
    assert kpis["exceptions_open"] == 1 and kpis["at_risk"] == 1
    assert kpis["shipments_by_mile_status"]["first"]["planned"] == 1
    assert dispatcher_client.get("/api/v1/kpis/?date=not-a-date").status_code == 400


def test_webhook_endpoint_validation(dispatcher_client):
    shipper = factories.party_make()
    created = dispatcher_client.post(
        "/api/v1/webhooks/endpoints/", {"shipper": shipper.pk, "url": "https://example.com/hook"}
    )
    assert created.status_code == 201 and len(created.json()["secret"]) >= 32
    assert dispatcher_client.post("/api/v1/webhooks/endpoints/", {"shipper": shipper.pk, "url": "ftp://x"}).status_code == 400
    # Well formed, naming no such shipper: 422.
    assert dispatcher_client.post("/api/v1/webhooks/endpoints/", {"shipper": 999999, "url": "https://e.com"}).status_code == 422


def test_eta_accuracy_uses_the_last_estimate_made_before_the_horizon(hubs):
    """Stop A: estimate 40 min ahead said 10:00, arrived 10:10 (within 15 min).
    Stop B: estimate 40 min ahead said 10:00, arrived 10:30 (outside); a later
    estimate (10 min ahead) is too close to count."""
    from routing.models import RouteStop
    from tracking.kpis import eta_accuracy
    from tracking.models import EtaRecord

    dc, _ = hubs
    a, b = (factories.shipment_make().shipment for _ in range(2))
    route = route_make(hub=dc, mile="first", driver=None, planned_start=local_at(1, 9),
                       stops=[("pickup", s.origin, [legs_of(s)["first"]]) for s in (a, b)])
    stop_a, stop_b = route.stops.order_by("sequence")
    RouteStop.objects.filter(pk=stop_a.pk).update(actual_arrival=local_at(1, 10, 10), status="completed")
    RouteStop.objects.filter(pk=stop_b.pk).update(actual_arrival=local_at(1, 10, 30), status="completed")
    EtaRecord.objects.create(stop=stop_a, eta=local_at(1, 10), computed_at=local_at(1, 9, 20))
    EtaRecord.objects.create(stop=stop_b, eta=local_at(1, 10), computed_at=local_at(1, 9, 40))
    EtaRecord.objects.create(stop=stop_b, eta=local_at(1, 10, 30), computed_at=local_at(1, 10, 20))

    figures = eta_accuracy(start=local_at(1, 0), end=local_at(2, 0))

    assert figures["stops_measured"] == 2
    assert figures["within_15_min_rate"] == 0.5
    assert figures["mean_absolute_error_minutes"] == 20.0
    assert figures["mean_error_minutes"] == 20.0  # arrivals later than estimated
