"""Abuse limits: sign-in failures, an atomic counter, page size clamp, body caps."""

import json
import threading

import pytest
from django.db import connections
from rest_framework.test import APIClient

from shipments import ratelimit
from shipments.models import RateCounter
from tests import factories


@pytest.mark.django_db
def test_ten_failed_sign_ins_lock_the_token_endpoint_for_that_user_and_address(dispatcher):
    client = APIClient()
    url = "/api/v1/auth/token/"
    failures = [
        client.post(url, {"username": dispatcher.username, "password": f"wrong{i}"}, format="json").status_code
        for i in range(10)
    ]

    blocked = client.post(url, {"username": dispatcher.username, "password": "pass-1234-word"}, format="json")
    other_user = factories.dispatcher_make()
    unaffected = client.post(url, {"username": other_user.username, "password": "pass-1234-word"}, format="json")

    assert failures == [400] * 10
    assert blocked.status_code == 429
    assert unaffected.status_code == 200


@pytest.mark.django_db
def test_dashboard_sign_in_is_limited_too(dispatcher):
    client = APIClient()
    for i in range(10):
        assert client.post("/accounts/login/", {"username": dispatcher.username, "password": f"x{i}"}).status_code == 200
    assert client.post("/accounts/login/", {"username": dispatcher.username, "password": "pass-1234-word"}).status_code == 429


@pytest.mark.django_db(transaction=True)
def test_fifty_parallel_hits_against_a_limit_of_twenty_admit_twenty():
    barrier = threading.Barrier(50)
    admitted = []

    def hit():
        try:
            barrier.wait(timeout=10)
            if not ratelimit.rate_limit_exceeded(key="parallel-test", limit=20, window_seconds=60):
                admitted.append(1)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=hit) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(admitted) == 20


@pytest.mark.django_db(transaction=True)
def test_the_database_fallback_counts_atomically_too():
    barrier = threading.Barrier(30)
    counts = []

    def hit():
        try:
            barrier.wait(timeout=10)
            counts.append(ratelimit._db_count(key="fallback-test"))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=hit) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(counts) == list(range(1, 31))
    assert RateCounter.objects.get(key="fallback-test").count == 30


@pytest.mark.django_db
def test_page_size_is_clamped_to_100(dispatcher_client):
    from shipments.models import Hub, Location

    locations = Location.objects.bulk_create(
        [Location(address=f"Dock {i}", latitude=43.7, longitude=7.2) for i in range(105)]
    )
    Hub.objects.bulk_create(
        [Hub(code=f"h{i:03d}", name=f"Hub {i}", kind="depot", location=loc) for i, loc in enumerate(locations)]
    )

    response = dispatcher_client.get("/api/v1/hubs/?page_size=100000")

    assert response.status_code == 200
    assert response.json()["count"] == 105
    assert len(response.json()["results"]) == 100


@pytest.mark.django_db
def test_a_json_body_over_one_megabyte_is_413(hubs, dispatcher_client):
    body = json.dumps({"reference": "BIG", "notes": "x" * (1024 * 1024 + 10)})
    response = dispatcher_client.post("/api/v1/shipments/", data=body, content_type="application/json")
    assert response.status_code == 413


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {"reference": "\u0000\ud7ff" * 3},
        {"reference": "A", "pickup_window_start": "99999-99-99"},
        {"reference": "A", "parcels": [{"weight_kg": "1e999"}]},
        {"reference": "A", "parcels": [{"weight_kg": "NaN"}]},
        {"reference": "A", "origin": {"latitude": "1e308", "longitude": None, "address": "x"}},
        {"reference": ["not", "a", "string"]},
        [1, 2, 3],
        "just a string",
    ],
)
def test_absurd_values_are_400_never_500(hubs, dispatcher_client, body):
    response = dispatcher_client.post("/api/v1/shipments/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400
