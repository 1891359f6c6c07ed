"""Per-device limit on ping ingestion (RELIABILITY.md R16): an atomic counter,
429 with Retry-After over the limit, nothing stored for a refused batch."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from dispatch.models import LocationPing
from dispatch.pings import (
    PING_LIMIT_WINDOW_SECONDS,
    PingRateLimited,
    ping_rate_limit_check,
)
from tests.dispatch import builders


def _fresh_window(margin_seconds: float = 3.0) -> None:
    """Start after a window boundary if the current one is about to end, so the
    counts below all land in one fixed window."""
    left = PING_LIMIT_WINDOW_SECONDS - time.time() % PING_LIMIT_WINDOW_SECONDS
    if left < margin_seconds:
        time.sleep(left + 0.05)


def _batch(index: int) -> list[dict]:
    at = timezone.now() - timedelta(minutes=10) + timedelta(seconds=10 * index)
    return [
        {
            "latitude": 43.7311 + index * 1e-4,
            "longitude": 7.4167,
            "accuracy": 5.0,
            "recorded_at": at.isoformat(),
        }
    ]


def _post(client, pings, device_id: str):
    return client.post(
        "/api/v1/driver/pings/",
        {"device_id": device_id, "pings": pings},
        format="json",
        HTTP_IDEMPOTENCY_KEY=builders.key(),
    )


@pytest.mark.django_db
def test_a_device_over_its_limit_gets_429_with_retry_after_and_nothing_is_stored(
    driver, driver_client, settings
):
    settings.PING_BATCHES_PER_DEVICE_PER_MINUTE = 3
    _fresh_window()

    answers = [_post(driver_client, _batch(i), "phone-limited") for i in range(5)]
    other_device = _post(driver_client, _batch(9), "phone-other")

    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    retry_after = int(answers[3]["Retry-After"])
    assert 1 <= retry_after <= PING_LIMIT_WINDOW_SECONDS
    assert other_device.status_code == 200  # the limit is per device
    stored = LocationPing.objects.filter(driver=driver)
    assert stored.filter(device_id="phone-limited").count() == 3
    assert stored.filter(device_id="phone-other").count() == 1


@pytest.mark.django_db
def test_a_refused_batch_resent_with_its_key_once_there_is_room_is_stored(
    driver, driver_client, settings
):
    settings.PING_BATCHES_PER_DEVICE_PER_MINUTE = 1
    _fresh_window()
    assert _post(driver_client, _batch(0), "phone-1").status_code == 200
    key = builders.key()
    body = {"device_id": "phone-1", "pings": _batch(1)}

    refused = driver_client.post(
        "/api/v1/driver/pings/", body, format="json", HTTP_IDEMPOTENCY_KEY=key
    )
    # Room again (as in the next window): the refusal was not stored under the
    # key, so the phone's resend with the same key is served anew.
    settings.PING_BATCHES_PER_DEVICE_PER_MINUTE = 3
    resent = driver_client.post(
        "/api/v1/driver/pings/", body, format="json", HTTP_IDEMPOTENCY_KEY=key
    )

    assert refused.status_code == 429
    assert resent.status_code == 200
    assert resent.json()["accepted"] == 1
    assert LocationPing.objects.filter(driver=driver).count() == 2


@pytest.mark.django_db(transaction=True)
def test_fifty_batches_at_once_against_a_limit_of_twenty_admit_twenty(settings):
    """The counter is atomic across threads (each with its own Redis and
    PostgreSQL connection): no read-then-write race lets extra batches through."""
    settings.PING_BATCHES_PER_DEVICE_PER_MINUTE = 20
    _fresh_window()
    device = f"phone-race-{time.time_ns()}"
    start = threading.Barrier(50)
    outcomes: list[str] = []
    lock = threading.Lock()

    def send() -> None:
        start.wait(timeout=10)
        try:
            ping_rate_limit_check(driver_id=1, device_id=device)
            outcome = "admitted"
        except PingRateLimited:
            outcome = "limited"
        finally:
            connections.close_all()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=send) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert len(outcomes) == 50
    assert outcomes.count("admitted") == 20
    assert outcomes.count("limited") == 30
