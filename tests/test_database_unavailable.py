"""A request that meets an unavailable database answers 503 + Retry-After at
once (config.middleware), and connecting to a silent server gives up quickly."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from datetime import timedelta

import psycopg2
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from dispatch.models import LocationPing
from tests.dispatch import builders


def _terminate_django_connection() -> None:
    """Kill this process's PostgreSQL session from another session, as a
    restart of the server does."""
    pid = connection.connection.info.backend_pid
    admin = connection.get_new_connection(connection.get_connection_params())
    try:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        admin.close()


@pytest.mark.django_db(transaction=True)
def test_a_batch_that_meets_a_lost_database_answers_503_and_its_resend_stores_it_once(
    driver, driver_client
):
    key = builders.key()
    body = {
        "device_id": "phone-1",
        "pings": [
            {
                "latitude": 43.7311,
                "longitude": 7.4167,
                "accuracy": 5.0,
                "recorded_at": (timezone.now() - timedelta(seconds=5)).isoformat(),
            }
        ],
    }
    # A first request loads the URLconf and views (seconds on a busy machine),
    # so the timing below is the failure alone.
    earlier = {
        **body["pings"][0],
        "recorded_at": (timezone.now() - timedelta(seconds=9)).isoformat(),
    }
    warm = driver_client.post(
        "/api/v1/driver/pings/",
        {"device_id": "phone-1", "pings": [earlier]},
        format="json",
        HTTP_IDEMPOTENCY_KEY=builders.key(),
    )
    assert warm.status_code == 200
    _terminate_django_connection()

    started = time.monotonic()
    lost = driver_client.post(
        "/api/v1/driver/pings/", body, format="json", HTTP_IDEMPOTENCY_KEY=key
    )
    seconds = time.monotonic() - started
    connection.close()  # the server's request_finished does this; the test client does not
    resent = driver_client.post(
        "/api/v1/driver/pings/", body, format="json", HTTP_IDEMPOTENCY_KEY=key
    )

    assert lost.status_code == 503
    assert lost["Retry-After"] == str(settings.DATABASE_UNAVAILABLE_RETRY_AFTER_SECONDS)
    assert lost.json()["code"] == "database_unavailable"
    assert seconds < 2
    assert resent.status_code == 200
    assert resent.json()["accepted"] == 1
    assert LocationPing.objects.filter(driver=driver).count() == 2  # warm-up + this one


def test_connecting_to_a_server_that_never_answers_gives_up_within_the_timeout():
    """A listener that accepts and stays silent (a stuck or half-started server):
    without ``connect_timeout`` libpq would wait for ever and hold the worker."""
    options = settings.DATABASES["default"]["OPTIONS"]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []

    def accept_and_say_nothing() -> None:
        listener.settimeout(10)
        with contextlib.suppress(OSError):
            accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept_and_say_nothing)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(
                host="127.0.0.1",
                port=listener.getsockname()[1],
                user="postgres",
                dbname="allmile",
                **options,
            )
        seconds = time.monotonic() - started
    finally:
        thread.join(timeout=15)
        for sock in accepted:
            sock.close()
        listener.close()

    assert accepted, "the client never reached the silent server"
    assert seconds <= options["connect_timeout"] + 1
