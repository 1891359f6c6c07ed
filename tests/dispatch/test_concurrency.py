"""Retries racing each other on a real server (gunicorn, 2 workers, PostgreSQL)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from dispatch.models import DriverEventReceipt, LocationPing
from shipments.models import ShipmentEvent
from tests.dispatch import builders

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    """gunicorn on the test database (this test's rows are committed)."""
    port = _free_port()
    db = settings.DATABASES["default"]
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{connection.settings_dict['NAME']}",
            "REDIS_URL": settings.REDIS_URL,
        }
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/api/v1/driver/route/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("gunicorn did not start")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def _post_all(url, path, token, bodies_and_keys):
    def one(pair):
        body, key = pair
        return httpx.post(
            f"{url}{path}",
            json=body,
            headers={"Authorization": f"Token {token}", "Idempotency-Key": key},
            timeout=30,
        )

    with ThreadPoolExecutor(max_workers=10) as pool:
        return list(pool.map(one, bodies_and_keys))


def test_ten_concurrent_copies_of_a_batch_apply_once(server, driver, last_mile_route):
    stops = list(last_mile_route.stops.order_by("sequence"))
    batch = {
        "device_id": "racer",
        "events": [
            builders.event("route_started", 1),
            builders.event("delivered", 2, stop_id=stops[1].pk),
            builders.event(
                "delivery_failed", 3, stop_id=stops[2].pk, reason="not_home"
            ),
        ],
    }
    token = driver.user.auth_token.key

    distinct_keys = _post_all(
        server,
        "/api/v1/driver/events/",
        token,
        [(batch, builders.key()) for _ in range(10)],
    )
    same_key = builders.key()
    one_key = _post_all(
        server, "/api/v1/driver/events/", token, [(batch, same_key) for _ in range(10)]
    )

    assert [r.status_code for r in distinct_keys + one_key] == [200] * 20
    statuses = [tuple(i["status"] for i in r.json()["results"]) for r in distinct_keys]
    assert statuses.count(("applied",) * 3) == 1
    assert statuses.count(("duplicate",) * 3) == 9
    assert len({r.content for r in one_key}) == 1  # every copy got the same answer
    assert DriverEventReceipt.objects.count() == 3
    assert (
        ShipmentEvent.objects.filter(type="leg.completed", source="driver").count() == 1
    )
    assert ShipmentEvent.objects.filter(type="leg.failed").count() == 1


def test_ten_concurrent_copies_of_a_ping_batch_store_each_fix_once(server, driver):
    now = timezone.now()
    body = {
        "device_id": "racer",
        "pings": [
            {
                "latitude": 43.73 + i * 0.0001,
                "longitude": 7.42,
                "accuracy": 5,
                "recorded_at": (now - timedelta(seconds=60 - i * 10)).isoformat(),
            }
            for i in range(5)
        ],
    }

    answers = _post_all(
        server,
        "/api/v1/driver/pings/",
        driver.user.auth_token.key,
        [(body, builders.key()) for _ in range(10)],
    )

    assert [r.status_code for r in answers] == [200] * 10
    assert sum(5 - r.json()["duplicates"] for r in answers) == 5
    assert LocationPing.objects.filter(driver=driver).count() == 5
