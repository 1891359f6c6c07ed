"""CSV import and bulk JSON create: all rows or none, errors by row and column."""

import io

import pytest

from shipments.models import Shipment
from tests import factories

pytestmark = pytest.mark.django_db

HEADER = (
    "reference,shipper_id,consignee_name,consignee_email,origin_address,origin_latitude,"
    "origin_longitude,destination_address,destination_latitude,destination_longitude,"
    "service_level,parcel_count,weight_kg,volume_m3\n"
)


def row(
    shipper_id,
    reference,
    dest_lat="43.7396",
    weight="4",
    count="2",
    email="a@example.com",
):
    return (
        f"{reference},{shipper_id},Ana,{email},Grasse,43.6589,6.9236,Monaco,{dest_lat},7.4276,"
        f"next_day,{count},{weight},0.01\n"
    )


def upload(client, text: str):
    file = io.BytesIO(text.encode())
    file.name = "shipments.csv"
    return client.post("/api/v1/shipments/import/", {"file": file}, format="multipart")


def test_a_valid_csv_imports_every_row(hubs, dispatcher_client):
    shipper = factories.party_make()
    text = (
        HEADER
        + row(shipper.pk, "CSV-1")
        + row(shipper.pk, "CSV-2", count="1", weight="1.5")
    )

    response = upload(dispatcher_client, text)

    assert response.status_code == 201, response.content
    assert response.json()["created"] == 2
    one = Shipment.objects.get(reference="CSV-1")
    assert one.parcel_count == 2
    assert str(one.total_weight_kg) == "4.000"
    assert all(s["tracking_url"] for s in response.json()["shipments"])


def test_one_bad_row_imports_nothing_and_names_row_and_column(hubs, dispatcher_client):
    shipper = factories.party_make()
    text = (
        HEADER
        + row(shipper.pk, "CSV-OK")
        + row(shipper.pk, "CSV-BAD-LAT", dest_lat="91")
        + row(shipper.pk, "CSV-BAD-W", weight="-3")
        + row(shipper.pk, "CSV-OK")  # duplicate of row 1 in the same file
        + row(999999, "CSV-NO-SHIPPER")
        + row(shipper.pk, "CSV-MAIL", email="nope")
    )

    response = upload(dispatcher_client, text)

    # A CSV file is not described cell by cell by the schema: refusals are 422.
    assert response.status_code == 422
    errors = {(e["row"], e["column"]) for e in response.json()["errors"]}
    assert (2, "destination_latitude") in errors
    assert (3, "weight_kg") in errors
    assert (4, "reference") in errors
    assert (5, "shipper_id") in errors
    assert (6, "consignee_email") in errors
    assert (1, "reference") not in errors
    assert Shipment.objects.count() == 0


def test_a_row_whose_origin_no_hub_serves_is_reported(hubs, dispatcher_client):
    shipper = factories.party_make()
    paris = f"CSV-P,{shipper.pk},Ana,,Paris,48.85,2.35,Monaco,43.7396,7.4276,standard,1,1,0\n"

    response = upload(dispatcher_client, HEADER + row(shipper.pk, "CSV-A") + paris)

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "row": 2,
            "column": "origin",
            "message": response.json()["errors"][0]["message"],
        }
    ]
    assert Shipment.objects.count() == 0


@pytest.mark.parametrize(
    "text",
    [
        "",  # empty
        "just,a,header\n1,2,3\n",  # missing required columns
        HEADER,  # no rows
        HEADER.replace("\n", ",extra\n"),  # unknown column
        HEADER + '"unterminated,1,2\n',
        HEADER + "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p\n",  # more cells than headers
    ],
)
def test_a_malformed_csv_is_a_422_and_imports_nothing(hubs, dispatcher_client, text):
    response = upload(dispatcher_client, text)

    assert response.status_code == 422, response.content
    assert Shipment.objects.count() == 0


def test_a_non_utf8_file_is_a_422(hubs, dispatcher_client):
    file = io.BytesIO(b"\xff\xfe\x00\x00binary")
    file.name = "x.csv"
    response = dispatcher_client.post(
        "/api/v1/shipments/import/", {"file": file}, format="multipart"
    )
    assert response.status_code == 422
    assert response.json()["code"] == "malformed_csv"


def test_a_missing_file_is_a_400(hubs, dispatcher_client):
    response = dispatcher_client.post(
        "/api/v1/shipments/import/", {}, format="multipart"
    )
    assert response.status_code == 400
    assert "file" in response.json()


def test_bulk_json_creates_all_or_nothing(hubs, dispatcher_client):
    shipper = factories.party_make()

    def item(reference, lat=43.7396):
        return {
            "reference": reference,
            "shipper": shipper.pk,
            "consignee": {"name": "Zoé"},
            "origin": {"address": "Grasse", "latitude": 43.6589, "longitude": 6.9236},
            "destination": {"address": "Monaco", "latitude": lat, "longitude": 7.4276},
            "parcels": [{"weight_kg": "1"}],
        }

    bad = dispatcher_client.post(
        "/api/v1/shipments/bulk/", [item("B-1"), item("B-2", lat=123)], format="json"
    )
    assert bad.status_code == 400  # a latitude out of range: the schema's bounds
    assert bad.json()["errors"][0]["row"] == 2
    assert Shipment.objects.count() == 0

    refused = dispatcher_client.post(
        "/api/v1/shipments/bulk/", [item("B-1"), item("B-1")], format="json"
    )
    assert refused.status_code == 422  # well formed; a rule (one reference) refuses
    assert refused.json()["errors"][0]["row"] == 2
    assert Shipment.objects.count() == 0

    good = dispatcher_client.post(
        "/api/v1/shipments/bulk/", [item("B-1"), item("B-2")], format="json"
    )
    assert good.status_code == 201
    assert Shipment.objects.count() == 2

    assert (
        dispatcher_client.post(
            "/api/v1/shipments/bulk/", {"not": "a list"}, format="json"
        ).status_code
        == 400
    )
