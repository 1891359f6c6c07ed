"""Location pings: stored once each, in fix-time order; implausible fixes refused."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.utils import timezone

from dispatch.models import DriverPosition, LocationPing
from shipments.models import OutboxMessage
from tests.dispatch import builders

pytestmark = pytest.mark.django_db

START = (43.7311, 7.4167)  # Monaco hub


def _track(
    count: int, *, start_at, step_seconds: float = 1.0, step_meters: float = 8.0
):
    """A plausible drive north-east: ``step_meters`` every ``step_seconds``."""
    lat, lng = START
    dlat = step_meters / 111_320 / math.sqrt(2)
    dlng = step_meters / (111_320 * math.cos(math.radians(lat))) / math.sqrt(2)
    return [
        {
            "latitude": lat + i * dlat,
            "longitude": lng + i * dlng,
            "accuracy": 5.0,
            "speed": step_meters / step_seconds,
            "heading": 45.0,
            "recorded_at": (start_at + timedelta(seconds=i * step_seconds)).isoformat(),
        }
        for i in range(count)
    ]


def _post(client, pings, device_id="phone-1"):
    return client.post(
        "/api/v1/driver/pings/",
        {"device_id": device_id, "pings": pings},
        format="json",
        HTTP_IDEMPOTENCY_KEY=builders.key(),
    )


def test_ten_thousand_pings_in_batches_are_all_stored_in_order_none_twice(
    driver, driver_client, last_mile_route
):
    start_at = timezone.now() - timedelta(hours=3)
    track = _track(10_000, start_at=start_at)
    batches = [track[i : i + 500] for i in range(0, len(track), 500)]

    answers = [_post(driver_client, batch) for batch in batches]
    # The phone lost two answers and sends those batches again (new requests).
    resent = [_post(driver_client, batches[3]), _post(driver_client, batches[17])]

    assert all(a.status_code == 200 for a in answers + resent)
    assert sum(a.json()["accepted"] for a in answers) == 10_000
    assert all(a.json()["rejected"] == [] for a in answers)
    assert [a.json()["duplicates"] for a in resent] == [500, 500]
    stored = list(
        LocationPing.objects.filter(driver=driver)
        .order_by("id")
        .values_list("recorded_at", "route_id")
    )
    assert len(stored) == 10_000
    times = [t for t, _ in stored]
    assert times == sorted(times)
    assert len(set(times)) == 10_000
    assert {route for _, route in stored} == {last_mile_route.pk}
    position = DriverPosition.objects.get(driver=driver)
    assert position.recorded_at == start_at + timedelta(seconds=9_999)


def test_implausible_pings_are_rejected_one_by_one_with_reasons(driver, driver_client):
    now = timezone.now()
    good = _track(
        3, start_at=now - timedelta(minutes=1), step_seconds=10, step_meters=80
    )
    jump = dict(good[2], latitude=43.30, longitude=5.37)  # Marseille, one second later
    jump["recorded_at"] = (
        now - timedelta(minutes=1) + timedelta(seconds=21)
    ).isoformat()
    pings = [
        good[0],
        dict(good[1], latitude=95.0),  # out of range
        dict(
            good[1], recorded_at=(now + timedelta(hours=2)).isoformat()
        ),  # in the future
        good[1],
        dict(good[2], speed=300.0),  # faster than any vehicle
        good[2],
        jump,
        dict(good[2], accuracy=-1),
        {
            "latitude": "north",
            "longitude": 7.0,
            "accuracy": 5,
            "recorded_at": now.isoformat(),
        },
        dict(good[2], recorded_at=(now - timedelta(days=30)).isoformat()),
    ]

    response = _post(driver_client, pings)

    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 3
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [
        (1, "out_of_range"),
        (2, "in_the_future"),
        (4, "implausible_speed"),
        (6, "implausible_jump"),
        (7, "inaccurate"),
        (8, "invalid"),
        (9, "too_old"),
    ]
    assert LocationPing.objects.filter(driver=driver).count() == 3


def test_the_latest_position_is_the_latest_fix_whatever_the_arrival_order(
    driver, driver_client
):
    now = timezone.now()
    newer = _track(5, start_at=now - timedelta(minutes=5))
    older = _track(5, start_at=now - timedelta(minutes=30))

    _post(driver_client, newer)
    messages = OutboxMessage.objects.filter(type="driver.position").count()
    _post(driver_client, older)  # an offline queue drains late

    position = DriverPosition.objects.get(driver=driver)
    assert position.recorded_at == now - timedelta(minutes=5) + timedelta(seconds=4)
    assert LocationPing.objects.filter(driver=driver).count() == 10
    # The late batch did not move the driver on the dashboard either.
    assert OutboxMessage.objects.filter(type="driver.position").count() == messages


def test_a_ping_batch_over_500_is_refused_whole(driver_client):
    response = _post(
        driver_client, _track(501, start_at=timezone.now() - timedelta(hours=1))
    )

    assert response.status_code == 400
    assert "pings" in response.json()
    assert not LocationPing.objects.exists()


def test_pings_signal_the_eta_engine_after_commit(
    driver, driver_client, last_mile_route, django_capture_on_commit_callbacks
):
    from dispatch.signals import route_activity

    heard = []

    def receiver(sender, route_id, **kwargs):
        heard.append(route_id)

    route_activity.connect(receiver, weak=False)
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            _post(
                driver_client, _track(3, start_at=timezone.now() - timedelta(minutes=1))
            )
        assert heard == []  # not before the commit
        for callback in callbacks:
            callback()
    finally:
        route_activity.disconnect(receiver)

    assert heard == [last_mile_route.pk]
