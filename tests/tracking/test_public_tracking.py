"""The public tracking page and its JSON twin: allow-list, no leaks, 404s, limits."""

from __future__ import annotations

import re
import statistics
import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from routing.models import Route
from shipments.models import Shipment
from shipments.services import (
    leg_transition,
    shipment_tracking_token,
    tracking_link_reissue,
)
from tests import factories
from tests.tracking.builders import legs_of, local_at, position_set, route_make
from tracking.public import PUBLIC_KEYS

pytestmark = pytest.mark.django_db

PHONE = re.compile(r"\+\d[\d ]{7,}|\b0[1-9](?:[ .]?\d\d){4}\b")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


@pytest.fixture(autouse=True)
def _fresh_limits():
    cache.clear()
    yield
    cache.clear()


def _out_for_delivery(hubs):
    """A shipment on a Monaco last-mile route, with a driver whose surname and
    phone must never show, and a fresh fix."""
    dc, monaco = hubs
    driver = factories.driver_make(monaco, first_name="Lucie", last_name="Secretname", phone="+33611223344")
    shipment = factories.shipment_make().shipment
    legs = legs_of(shipment)
    for mile in ("first", "middle"):
        leg_transition(leg_id=legs[mile].pk, to="assigned", source="system")
        leg_transition(leg_id=legs[mile].pk, to="in_transit", source="system")
        leg_transition(leg_id=legs[mile].pk, to="completed", source="system")
    route = route_make(hub=monaco, mile="last", driver=driver, planned_start=timezone.now(),
                       stops=[("delivery", shipment.destination, [legs["last"]])])
    Route.objects.filter(pk=route.pk).update(status=Route.Status.IN_PROGRESS)
    leg_transition(leg_id=legs["last"].pk, to="in_transit", source="driver")
    position_set(driver, at=timezone.now(), lat_lng=(43.73456789, 7.41234567), route=route)
    return Shipment.objects.get(pk=shipment.pk), driver


def _keys(value) -> list[str]:
    if isinstance(value, dict):
        return [k for key, v in value.items() for k in [key, *_keys(v)]]
    if isinstance(value, list):
        return [k for v in value for k in _keys(v)]
    return []


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [str(value)]


def test_json_twin_reveals_only_allow_listed_fields(hubs):
    shipment, driver = _out_for_delivery(hubs)
    token = shipment_tracking_token(shipment)
    other = factories.shipment_make().shipment

    response = Client().get(f"/api/v1/track/{token}/")

    assert response.status_code == 200
    body = response.json()
    assert set(body) <= PUBLIC_KEYS
    assert body["status"] == "out_for_delivery"
    assert body["driver"]["first_name"] == "Lucie"
    assert body["driver"]["position"] == {
        "latitude": 43.7346, "longitude": 7.4123, "recorded_at": body["driver"]["position"]["recorded_at"]
    }
    assert set(body["driver"]) == {"first_name", "position"}
    everything = " ".join(_strings(body))
    for secret in (
        "Secretname", "+33611223344", "Camille", "+33600000000", "Destination street",
        "Origin street", driver.user.username, other.reference,
    ):
        assert secret not in everything
    assert not [k for k in _keys(body) if k == "id" or k.endswith("_id")]  # no internal ids
    assert not PHONE.search(everything.replace(token, ""))
    assert not EMAIL.search(everything)
    assert response["Cache-Control"] == "no-store"
    assert response["Referrer-Policy"] == "no-referrer"
    assert "noindex" in response["X-Robots-Tag"]


def test_page_reveals_none_of_the_private_fields(hubs):
    shipment, driver = _out_for_delivery(hubs)
    token = shipment_tracking_token(shipment)
    html = Client().get(f"/t/{token}").content.decode()
    assert shipment.reference in html
    for secret in ("Secretname", "+33611223344", "Camille", "+33600000000", "Destination street", "Origin street"):
        assert secret not in html
    assert "Lucie" in html


def test_driver_position_is_absent_off_the_last_mile(hubs):
    shipment = factories.shipment_make().shipment
    legs = legs_of(shipment)
    leg_transition(leg_id=legs["first"].pk, to="assigned", source="system")
    leg_transition(leg_id=legs["first"].pk, to="in_transit", source="system")
    body = Client().get(f"/api/v1/track/{shipment_tracking_token(shipment)}/").json()
    assert body["status"] == "picked_up"
    assert body["driver"] is None
    assert body["milestones"][0]["key"] == "picked_up" and body["milestones"][0]["done"] is True


def test_unknown_revoked_and_expired_tokens_look_the_same(hubs):
    shipment = factories.shipment_make().shipment
    old_token = shipment_tracking_token(shipment)
    tracking_link_reissue(shipment_id=shipment.pk)
    expired = factories.shipment_make().shipment
    Shipment.objects.filter(pk=expired.pk).update(
        status="delivered", completed_at=timezone.now() - timedelta(days=15)
    )
    expired_token = shipment_tracking_token(expired)
    client = Client()
    answers = [client.get(f"/api/v1/track/{t}/") for t in ("x" * 43, old_token, expired_token)]
    assert {r.status_code for r in answers} == {404}
    assert len({r.content for r in answers}) == 1
    assert Client().get(f"/t/{old_token}").status_code == 404


def test_unknown_token_timing_matches_a_revoked_one(hubs):
    """Median of 40 requests each: an outsider cannot tell the two apart by time."""
    shipment = factories.shipment_make().shipment
    revoked = shipment_tracking_token(shipment)
    tracking_link_reissue(shipment_id=shipment.pk)
    client = Client()

    samples: dict[str, list[float]] = {"unknown": [], "revoked": []}
    # Interleaved, so load from other processes hits both series alike.
    for _ in range(60):
        for name, token in (("unknown", "y" * 43), ("revoked", revoked)):
            cache.clear()
            started = time.perf_counter()
            assert client.get(f"/api/v1/track/{token}/").status_code == 404
            samples[name].append((time.perf_counter() - started) * 1000)
    unknown, revoked_ms = statistics.median(samples["unknown"]), statistics.median(samples["revoked"])
    assert abs(unknown - revoked_ms) < max(3.0, 0.5 * unknown)


def test_misses_are_rate_limited_per_client(hubs, settings):
    settings.TRACKING_MISS_LIMIT_PER_MINUTE = 5
    client = Client(REMOTE_ADDR="203.0.113.9")
    codes = [client.get(f"/api/v1/track/guess{i:04d}/").status_code for i in range(8)]
    assert codes[:5] == [404] * 5
    assert codes[5:] == [429] * 3
    # Another client is not affected.
    assert Client(REMOTE_ADDR="203.0.113.10").get("/api/v1/track/guess/").status_code == 404


def test_requests_are_rate_limited_per_client(hubs, settings):
    settings.TRACKING_RATE_LIMIT_PER_MINUTE = 10
    shipment = factories.shipment_make().shipment
    token = shipment_tracking_token(shipment)
    client = Client(REMOTE_ADDR="203.0.113.20")
    codes = [client.get(f"/api/v1/track/{token}/").status_code for _ in range(12)]
    assert codes.count(200) == 10 and codes[-2:] == [429, 429]


def test_delivered_shipment_shows_proof_and_no_driver(hubs):
    shipment, _driver = _out_for_delivery(hubs)
    leg_transition(leg_id=legs_of(shipment)["last"].pk, to="completed", source="driver")
    body = Client().get(f"/api/v1/track/{shipment_tracking_token(shipment)}/").json()
    assert body["status"] == "delivered"
    assert body["driver"] is None
    assert body["eta_window"] is None
    assert body["proof_of_delivery"]["delivered_at"]
    assert [m["key"] for m in body["milestones"] if m["done"]][-1] == "delivered"


def test_eta_window_is_rounded_to_quarter_hours(hubs):
    shipment = factories.shipment_make().shipment
    Shipment.objects.filter(pk=shipment.pk).update(eta=local_at(1, 14, 7))
    body = Client().get(f"/api/v1/track/{shipment_tracking_token(shipment)}/").json()
    start, end = body["eta_window"]["start"], body["eta_window"]["end"]
    assert start.startswith(local_at(1, 13, 30).isoformat()[:16])
    assert end.startswith(local_at(1, 14, 45).isoformat()[:16])
