"""A driver reads and writes only their own work; foreign ids look like missing ones.

Personas: ``driver`` owns the route; ``other`` is a second driver of the same
hub who must be refused; the dispatcher may see everything.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image
from rest_framework.test import APIClient

from dispatch.models import ProofOfDelivery
from dispatch.pod import PodInput, pod_create
from tests import factories
from tests.dispatch import builders

pytestmark = pytest.mark.django_db


def _client_for(driver) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {driver.user.auth_token.key}")
    return client


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "blue").save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def other_client(hubs):
    return _client_for(factories.driver_make(hubs[1]))


@pytest.fixture
def pod(last_mile_route, driver):
    stop = last_mile_route.stops.order_by("sequence").first()
    return pod_create(
        stop_id=stop.pk,
        driver_id=driver.pk,
        data=PodInput(
            photo=_jpeg_bytes(), signature=_jpeg_bytes(), recipient_name="C. M."
        ),
    )


def _reads(route, pod):
    stop = route.stops.order_by("sequence").first()
    shipment = route.shipments[0]
    return [
        f"/api/v1/driver/routes/{route.pk}/",
        f"/api/v1/driver/stops/{stop.pk}/",
        f"/api/v1/driver/stops/{stop.pk}/pod/",
        f"/api/v1/driver/shipments/{shipment.pk}/",
        f"/api/v1/pods/{pod.pk}/photo/",
        f"/api/v1/pods/{pod.pk}/signature/",
    ]


def _missing():
    big = 10**9
    return [
        f"/api/v1/driver/routes/{big}/",
        f"/api/v1/driver/stops/{big}/",
        f"/api/v1/driver/stops/{big}/pod/",
        f"/api/v1/driver/shipments/{big}/",
        f"/api/v1/pods/{big}/photo/",
        f"/api/v1/pods/{big}/signature/",
    ]


def test_the_owner_reads_every_piece_of_their_work(driver_client, last_mile_route, pod):
    for url in _reads(last_mile_route, pod):
        assert driver_client.get(url).status_code == 200, url


def test_another_driver_gets_404_exactly_as_for_ids_that_do_not_exist(
    other_client, last_mile_route, pod
):
    for foreign, missing in zip(_reads(last_mile_route, pod), _missing(), strict=True):
        refused = other_client.get(foreign)
        absent = other_client.get(missing)
        assert refused.status_code == 404, foreign
        assert (refused.status_code, refused.content) == (
            absent.status_code,
            absent.content,
        )


def test_another_driver_cannot_write_a_pod_on_a_foreign_stop(
    other_client, last_mile_route
):
    stop = last_mile_route.stops.order_by("sequence").first()
    photo = io.BytesIO(_jpeg_bytes())
    photo.name = "p.jpg"

    response = other_client.post(
        f"/api/v1/driver/stops/{stop.pk}/pod/",
        {"photo": photo, "recipient_name": "Mallory"},
        format="multipart",
        HTTP_IDEMPOTENCY_KEY=builders.key(),
    )

    assert response.status_code == 404
    assert not ProofOfDelivery.objects.exists()


def test_another_driver_cannot_move_a_foreign_stop(other_client, last_mile_route):
    stop = last_mile_route.stops.order_by("sequence").first()

    response = builders.post_events(
        other_client, [builders.event("arrived", 1, stop_id=stop.pk)]
    )

    assert response.json()["results"][0]["reason"] == "unknown_stop"
    stop.refresh_from_db()
    assert stop.status == "pending"


def test_another_driver_sees_no_route_today(other_client, last_mile_route):
    assert other_client.get("/api/v1/driver/route/").status_code == 404
    assert other_client.get("/api/v1/driver/routes/").json() == []


def test_a_draft_route_is_invisible_even_to_its_driver(hubs, driver, driver_client):
    shipment = builders.shipment_at_hub(hubs[1], builders.MONACO_POINTS[0])
    draft = builders.route_make(
        hub=hubs[1],
        driver=driver,
        stops=[
            {"kind": "delivery", "legs": [builders.first_open_leg(shipment, "last")]}
        ],
    )

    assert driver_client.get(f"/api/v1/driver/routes/{draft.pk}/").status_code == 404
    assert driver_client.get("/api/v1/driver/route/").status_code == 404


def test_a_dispatcher_reads_everything(dispatcher_client, last_mile_route, pod):
    for url in _reads(last_mile_route, pod):
        if "/driver/shipments/" in url:
            url = url.replace("/driver/shipments/", "/shipments/")
        assert dispatcher_client.get(url).status_code == 200, url
    assert (
        dispatcher_client.get(f"/api/v1/routes/{last_mile_route.pk}/").status_code
        == 200
    )


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/routes/",
        "/api/v1/dispatch/conflicts/",
        "/api/v1/shipments/",
        "/api/v1/trips/",
    ],
)
def test_drivers_are_refused_dispatcher_endpoints_whatever_the_id(driver_client, url):
    assert driver_client.get(url).status_code == 403


def test_dispatchers_do_not_post_as_drivers(dispatcher_client, last_mile_route):
    response = dispatcher_client.post(
        "/api/v1/driver/events/",
        {"device_id": "x", "events": [builders.event("route_started", 1)]},
        format="json",
        HTTP_IDEMPOTENCY_KEY=builders.key(),
    )
    assert response.status_code == 403


def test_anonymous_callers_are_refused(api_client, last_mile_route):
    for url in (
        "/api/v1/driver/route/",
        f"/api/v1/driver/routes/{last_mile_route.pk}/",
    ):
        assert api_client.get(url).status_code in (401, 403)


def test_pod_images_are_served_with_safe_headers(driver_client, pod):
    response = driver_client.get(f"/api/v1/pods/{pod.pk}/photo/")

    assert response["Content-Type"] == "image/jpeg"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Disposition"].startswith("inline;")
    assert "no-store" in response["Cache-Control"]
    assert b"".join(response.streaming_content)[:2] == b"\xff\xd8"
