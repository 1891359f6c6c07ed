"""The shipments API: creation, bad input (400 with field errors, nothing written), search."""

import json

import pytest

from shipments.models import Location, Parcel, Shipment, ShipmentEvent
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def shipper(db):
    return factories.party_make(name="Domaine des Oliviers")


def valid_body(shipper, **overrides):
    body = {
        "reference": "OLIVE-0001",
        "shipper": shipper.pk,
        "consignee": {
            "name": "Camille Martin",
            "email": "camille@example.com",
            "language": "fr",
        },
        "origin": {
            "address": "Route de Grasse",
            "latitude": factories.GRASSE[0],
            "longitude": factories.GRASSE[1],
        },
        "destination": {
            "address": "Place du Casino, Monaco",
            "latitude": factories.MONACO_CASINO[0],
            "longitude": factories.MONACO_CASINO[1],
            "contact_phone": "+37799999999",
        },
        "service_level": "next_day",
        "delivery_window_start": "2030-05-02T09:00:00+02:00",
        "delivery_window_end": "2030-05-02T12:00:00+02:00",
        "parcels": [
            {"weight_kg": "3.2", "volume_m3": "0.02"},
            {"weight_kg": "1.1", "barcode": "OLV-000001"},
        ],
    }
    body.update(overrides)
    return body


def written_rows():
    return (
        Shipment.objects.count(),
        Parcel.objects.count(),
        Location.objects.count(),
        ShipmentEvent.objects.count(),
    )


def test_creating_a_shipment_plans_its_legs_and_returns_a_tracking_url(
    hubs, dispatcher_client, shipper
):
    response = dispatcher_client.post(
        "/api/v1/shipments/", valid_body(shipper), format="json"
    )

    assert response.status_code == 201, response.content
    data = response.json()
    assert [leg["mile"] for leg in data["legs"]] == ["first", "middle", "last"]
    assert data["parcel_count"] == 2
    assert data["total_weight_kg"] == "4.300"
    assert data["status"] == "planned"
    token = data["tracking_url"].rsplit("/t/", 1)[1]
    assert len(token) >= 22  # ≥128 bits, URL-safe
    shipment = Shipment.objects.get(pk=data["id"])
    assert shipment.tracking_token_hash != token  # only the hash is stored
    assert shipment.events.get().type == "shipment.created"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda b: b["origin"].update(latitude=91), "origin"),
        (lambda b: b["destination"].update(longitude=-181), "destination"),
        (lambda b: b["parcels"][0].update(weight_kg="-1"), "parcels"),
        (lambda b: b["parcels"][0].update(weight_kg="0"), "parcels"),
        (lambda b: b["parcels"][0].update(weight_kg="250000"), "parcels"),
        (lambda b: b["parcels"][0].update(weight_kg=2.5e9), "parcels"),
        (lambda b: b["parcels"][0].update(volume_m3="900"), "parcels"),
        (lambda b: b.update(parcels=[]), "parcels"),
        (lambda b: b.update(service_level="yesterday"), "service_level"),
        (lambda b: b.update(shipper="12"), "shipper"),
        (lambda b: b.update(is_return="yes"), "is_return"),
        (lambda b: b.update(reference=""), "reference"),
        (lambda b: b.update(reference="x" * 65), "reference"),
        (lambda b: b.update(reference="REF-1\n"), "reference"),
        (lambda b: b.update(promised_by="2030-05-02T08:00:00"), "promised_by"),
        (lambda b: b["consignee"].update(email="not-an-email"), "consignee"),
        (lambda b: b["consignee"].update(name=7), "consignee"),
        (lambda b: b.pop("destination"), "destination"),
    ],
)
def test_input_that_does_not_fit_the_schema_is_a_400_naming_the_field(
    hubs, dispatcher_client, shipper, change, field
):
    body = valid_body(shipper)
    change(body)
    before = written_rows()

    response = dispatcher_client.post("/api/v1/shipments/", body, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()
    assert written_rows() == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda b: b.update(delivery_window_end="2030-05-02T08:00:00+02:00"),
            "delivery_window_end",
        ),
        (lambda b: b.update(origin_hub="no-such-hub"), "origin_hub"),
        (lambda b: b.update(destination_hub="nope"), "destination_hub"),
        (lambda b: b.update(shipper=999999), "shipper"),
        (lambda b: b.update(promised_by="1999-12-31T23:00:00Z"), "promised_by"),
        (
            lambda b: b["parcels"].append({"weight_kg": "1", "barcode": "OLV-000001"}),
            "parcels",
        ),
    ],
)
def test_well_formed_input_a_rule_refuses_is_a_422_naming_the_field(
    hubs, dispatcher_client, shipper, change, field
):
    """A request that fits the schema but names no such object, or breaks a
    rule across fields, answers 422 (not 400: its shape is right)."""
    body = valid_body(shipper)
    change(body)
    before = written_rows()

    response = dispatcher_client.post("/api/v1/shipments/", body, format="json")

    assert response.status_code == 422, response.content
    assert field in response.json()
    assert written_rows() == before


def test_a_duplicate_reference_for_the_same_shipper_is_refused(
    hubs, dispatcher_client, shipper
):
    assert (
        dispatcher_client.post(
            "/api/v1/shipments/", valid_body(shipper), format="json"
        ).status_code
        == 201
    )
    before = written_rows()

    response = dispatcher_client.post(
        "/api/v1/shipments/",
        valid_body(shipper, parcels=[{"weight_kg": "1"}]),
        format="json",
    )

    assert response.status_code == 409  # a value that must be unique
    assert "reference" in response.json()
    assert written_rows() == before


def test_the_same_reference_for_another_shipper_is_fine(
    hubs, dispatcher_client, shipper
):
    other = factories.party_make()
    assert (
        dispatcher_client.post(
            "/api/v1/shipments/", valid_body(shipper), format="json"
        ).status_code
        == 201
    )
    response = dispatcher_client.post(
        "/api/v1/shipments/",
        valid_body(other, parcels=[{"weight_kg": "1"}]),
        format="json",
    )
    assert response.status_code == 201


def test_malformed_json_is_a_400(hubs, dispatcher_client):
    response = dispatcher_client.post(
        "/api/v1/shipments/", data="{not json", content_type="application/json"
    )
    assert response.status_code == 400


def test_a_20_mb_body_is_refused_before_parsing(hubs, dispatcher_client, shipper):
    body = json.dumps(valid_body(shipper, notes="x" * (20 * 1024 * 1024)))
    before = written_rows()

    response = dispatcher_client.post(
        "/api/v1/shipments/", data=body, content_type="application/json"
    )

    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    assert written_rows() == before


def test_list_filters_and_search(hubs, dispatcher_client):
    a = factories.shipment_make(
        destination=factories.MONACO_CASINO, service_level="same_day"
    ).shipment
    b = factories.shipment_make(
        destination=factories.NICE_CENTER, service_level="standard"
    ).shipment
    barcode = b.parcels.first().barcode

    def refs(query):
        response = dispatcher_client.get(f"/api/v1/shipments/?{query}")
        assert response.status_code == 200
        return {row["reference"] for row in response.json()["results"]}

    assert refs("service_level=same_day") == {a.reference}
    assert refs("hub=mco-hub") == {a.reference}
    assert refs(f"q={barcode}") == {b.reference}
    assert refs(f"q={a.reference}") == {a.reference}
    assert refs("mile=first") == {a.reference, b.reference}
    assert refs("at_risk=true") == set()
    assert refs("status=planned") == {a.reference, b.reference}
    assert dispatcher_client.get("/api/v1/shipments/?status=flying").status_code == 400


def test_list_is_paginated_with_a_bounded_number_of_queries(
    hubs, dispatcher_client, django_assert_max_num_queries
):
    for _ in range(5):
        factories.shipment_make()
    # auth + count + page + parcels + legs (prefetch) + group lookups
    with django_assert_max_num_queries(9):
        response = dispatcher_client.get("/api/v1/shipments/?page_size=3")
    data = response.json()
    assert data["count"] == 5
    assert len(data["results"]) == 3
    assert data["next"]


def test_the_timeline_lists_events_in_order(hubs, dispatcher_client):
    from shipments.services import leg_transition

    shipment = factories.shipment_make().shipment
    leg = shipment.legs.get(sequence=1)
    leg_transition(leg_id=leg.pk, to="assigned", source="dashboard")

    response = dispatcher_client.get(f"/api/v1/shipments/{shipment.pk}/events/")

    assert [e["type"] for e in response.json()] == ["shipment.created", "leg.assigned"]
    assert dispatcher_client.get("/api/v1/shipments/999999/events/").status_code == 404


def test_a_forbidden_leg_transition_is_a_409_naming_the_states(hubs, dispatcher_client):
    shipment = factories.shipment_make().shipment
    leg = shipment.legs.get(sequence=1)

    response = dispatcher_client.post(
        f"/api/v1/legs/{leg.pk}/transition/", {"to": "completed"}, format="json"
    )

    assert response.status_code == 409
    body = response.json()
    assert body["current_state"] == "planned"
    assert body["allowed_states"] == ["assigned", "cancelled"]
    leg.refresh_from_db()
    assert leg.status == "planned"


def test_reissuing_the_tracking_link_revokes_the_old_one(hubs, dispatcher_client):
    from shipments.selectors import shipment_get_by_tracking_token

    created = factories.shipment_make()
    response = dispatcher_client.post(
        f"/api/v1/shipments/{created.shipment.pk}/tracking-link/"
    )

    assert response.status_code == 200
    new_token = response.json()["tracking_url"].rsplit("/t/", 1)[1]
    assert new_token != created.tracking_token
    assert shipment_get_by_tracking_token(created.tracking_token) is None
    assert shipment_get_by_tracking_token(new_token).pk == created.shipment.pk


def test_cancel_writes_one_event_and_cancels_open_legs(hubs, dispatcher_client):
    shipment = factories.shipment_make().shipment

    response = dispatcher_client.post(
        f"/api/v1/shipments/{shipment.pk}/cancel/",
        {"reason": "customer"},
        format="json",
    )

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert {leg["status"] for leg in response.json()["legs"]} == {"cancelled"}
    assert shipment.events.filter(type="shipment.cancelled").count() == 1
    again = dispatcher_client.post(
        f"/api/v1/shipments/{shipment.pk}/cancel/", {}, format="json"
    )
    assert again.status_code == 200
    assert shipment.events.filter(type="shipment.cancelled").count() == 1


def test_required_skills_are_kept_and_validated(hubs, dispatcher_client, shipper):
    good = dispatcher_client.post(
        "/api/v1/shipments/", valid_body(shipper, required_skills=["refrigerated"]), format="json"
    )
    bad = dispatcher_client.post(
        "/api/v1/shipments/",
        valid_body(shipper, reference="SK-2", parcels=[{"weight_kg": "1"}], required_skills=["teleport"]),
        format="json",
    )

    assert good.status_code == 201
    assert good.json()["required_skills"] == ["refrigerated"]
    assert bad.status_code == 400
    assert "required_skills" in bad.json()


def test_hubs_are_created_and_updated_with_their_location(dispatcher_client):
    body = {
        "code": "cnn-hub",
        "name": "Cannes hub",
        "kind": "depot",
        "location": {"address": "Rue d'Antibes, Cannes", "latitude": 43.5528, "longitude": 7.0174},
        "cutoff_times": ["11:00"],
    }
    created = dispatcher_client.post("/api/v1/hubs/", body, format="json")
    assert created.status_code == 201, created.content
    hub_id = created.json()["id"]

    bad = dispatcher_client.patch(
        f"/api/v1/hubs/{hub_id}/", {"location": {"latitude": 91}}, format="json"
    )
    moved = dispatcher_client.patch(
        f"/api/v1/hubs/{hub_id}/",
        {"name": "Cannes La Bocca", "location": {"latitude": 43.5500}},
        format="json",
    )

    assert bad.status_code == 400
    assert moved.status_code == 200
    assert moved.json()["name"] == "Cannes La Bocca"
    assert moved.json()["location"]["latitude"] == 43.55
    assert moved.json()["location"]["longitude"] == 7.0174
