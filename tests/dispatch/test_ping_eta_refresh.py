"""Pings ask the ETA engine to re-time a route when the fixes enter a new
30-s slot, not on every batch (phones send every few seconds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatch.pings import PING_ETA_REFRESH_SECONDS, PingInput, driver_pings_record
from dispatch.signals import route_activity

pytestmark = pytest.mark.django_db


def _batch(start: datetime, seconds: list[int]) -> list[PingInput]:
    return [
        PingInput(
            latitude=43.7311 + s * 1e-5,
            longitude=7.4167,
            accuracy_meters=5.0,
            recorded_at=start + timedelta(seconds=s),
        )
        for s in seconds
    ]


def test_batches_re_time_the_route_once_per_slot_and_on_the_first_fix(
    driver, last_mile_route, django_capture_on_commit_callbacks
):
    heard: list[int] = []

    def receiver(sender, route_id, **kwargs):
        heard.append(route_id)

    # A slot boundary a minute ago, so the batches below fall in known slots.
    now = datetime.now(UTC)
    slot_start = datetime.fromtimestamp(
        (now.timestamp() // PING_ETA_REFRESH_SECONDS - 3) * PING_ETA_REFRESH_SECONDS,
        UTC,
    )
    batches = [
        [0, 2, 4],  # the first fixes: re-time
        [6, 8],  # same slot: no
        [10, 12],  # same slot: no
        [PING_ETA_REFRESH_SECONDS + 1],  # next slot: re-time
        [5],  # older than the position (does not move it): no
    ]
    route_activity.connect(receiver, weak=False)
    try:
        for seconds in batches:
            with django_capture_on_commit_callbacks(execute=True):
                driver_pings_record(
                    driver_id=driver.pk,
                    device_id="phone-1",
                    pings=_batch(slot_start, seconds),
                )
    finally:
        route_activity.disconnect(receiver)

    assert heard == [last_mile_route.pk, last_mile_route.pk]
