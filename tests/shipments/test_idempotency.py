"""Idempotency-Key on POST: one effect per key and principal, replays identical."""

import threading

import pytest
from django.db import connections
from rest_framework.test import APIClient

from shipments.models import IdempotencyRecord, Shipment
from tests import factories


def body_for(shipper, reference="IDEM-1"):
    return {
        "reference": reference,
        "shipper": shipper.pk,
        "consignee": {"name": "Lou"},
        "origin": {
            "address": "Grasse",
            "latitude": factories.GRASSE[0],
            "longitude": factories.GRASSE[1],
        },
        "destination": {"address": "Monaco", "latitude": 43.7396, "longitude": 7.4276},
        "parcels": [{"weight_kg": "2"}],
    }


@pytest.mark.django_db
def test_a_retried_request_creates_one_shipment_and_replays_the_first_answer(
    hubs, dispatcher_client
):
    shipper = factories.party_make()
    headers = {"HTTP_IDEMPOTENCY_KEY": "create-idem-1"}

    answers = [
        dispatcher_client.post(
            "/api/v1/shipments/", body_for(shipper), format="json", **headers
        )
        for _ in range(3)
    ]

    assert [a.status_code for a in answers] == [201, 201, 201]
    assert answers[0].content == answers[1].content == answers[2].content
    assert answers[1]["Idempotent-Replayed"] == "true"
    assert Shipment.objects.filter(reference="IDEM-1").count() == 1


@pytest.mark.django_db
def test_the_same_key_with_a_different_body_is_422(hubs, dispatcher_client):
    shipper = factories.party_make()
    headers = {"HTTP_IDEMPOTENCY_KEY": "create-idem-2"}
    first = dispatcher_client.post(
        "/api/v1/shipments/", body_for(shipper), format="json", **headers
    )

    second = dispatcher_client.post(
        "/api/v1/shipments/",
        body_for(shipper, reference="IDEM-OTHER"),
        format="json",
        **headers,
    )

    assert first.status_code == 201
    assert second.status_code == 422
    assert second.json()["code"] == "idempotency_key_reused"
    assert not Shipment.objects.filter(reference="IDEM-OTHER").exists()


@pytest.mark.django_db
def test_keys_are_scoped_per_principal(hubs, dispatcher_client):
    shipper = factories.party_make()
    other = APIClient()
    other.credentials(
        HTTP_AUTHORIZATION=f"Token {factories.dispatcher_make().auth_token.key}"
    )
    headers = {"HTTP_IDEMPOTENCY_KEY": "shared-key"}

    first = dispatcher_client.post(
        "/api/v1/shipments/", body_for(shipper, "SCOPE-1"), format="json", **headers
    )
    second = other.post(
        "/api/v1/shipments/", body_for(shipper, "SCOPE-2"), format="json", **headers
    )

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]


@pytest.mark.django_db
def test_a_refused_request_stores_nothing_and_can_be_corrected(hubs, dispatcher_client):
    shipper = factories.party_make()
    bad = body_for(shipper)
    bad["origin"]["latitude"] = 95
    headers = {"HTTP_IDEMPOTENCY_KEY": "fix-me"}

    assert (
        dispatcher_client.post(
            "/api/v1/shipments/", bad, format="json", **headers
        ).status_code
        == 400
    )
    assert not IdempotencyRecord.objects.filter(key="fix-me").exists()


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_sends_of_one_key_have_one_effect(hubs, dispatcher):
    shipper = factories.party_make()
    barrier = threading.Barrier(10)
    results = []

    def send():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {dispatcher.auth_token.key}")
        try:
            barrier.wait(timeout=10)
            response = client.post(
                "/api/v1/shipments/",
                body_for(shipper, "RACE-1"),
                format="json",
                HTTP_IDEMPOTENCY_KEY="race-key",
            )
            results.append((response.status_code, response.content))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert Shipment.objects.filter(reference="RACE-1").count() == 1
    statuses = [status for status, _ in results]
    assert len(statuses) == 10
    assert all(status in (201, 409) for status in statuses), statuses
    bodies = {content for status, content in results if status == 201}
    assert len(bodies) == 1  # every success is the same answer


class _ResetMidUpload:
    """A request body whose client hangs up before sending it all."""

    def read(self, *args):
        raise ConnectionResetError(104, "Connection reset by peer")

    readline = read


@pytest.mark.django_db
def test_a_client_that_hangs_up_mid_upload_gets_a_400_and_nothing_is_stored(
    hubs, dispatcher_client
):
    shipper = factories.party_make()
    before = Shipment.objects.count()

    response = dispatcher_client.post(
        "/api/v1/shipments/", body_for(shipper), format="json",
        HTTP_IDEMPOTENCY_KEY="reset-mid-upload", **{"wsgi.input": _ResetMidUpload()},
    )

    assert response.status_code == 400, response.content
    assert Shipment.objects.count() == before
    assert not IdempotencyRecord.objects.filter(key="reset-mid-upload").exists()
