"""The driver app's outbound queue (reliability.mobile_client): durable, frozen
batches, bounded backoff; and, through the fault proxy against a real server,
every event stored exactly once though responses are lost after commit (R2 in
small: the [FAULT] run is reliability/targets/r02_lost_response.py)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from django.db.models import Count
from django.utils import timezone

from dispatch.models import DriverEventReceipt
from reliability.faultproxy import FaultMix, FaultProxy
from reliability.mobile_client import (
    ClientStats,
    DeviceQueue,
    MobileClient,
    RetryPolicy,
)
from shipments.models import ShipmentEvent
from tests import factories
from tests.reliability import builders

ARRIVED = {"type": "arrived", "stop_id": 1, "occurred_at": "2026-11-26T09:00:00+00:00"}


def test_the_queue_keeps_events_and_a_frozen_batch_across_an_app_restart(tmp_path):
    queue = DeviceQueue.open(tmp_path / "phone.sqlite", device_id="phone-1")
    for _ in range(3):
        queue.enqueue(ARRIVED)
    batch = queue.head_batch(max_events=2)
    queue.attempt_begin(batch)
    queue.close()  # the app is killed with the batch in flight

    queue = DeviceQueue.open(tmp_path / "phone.sqlite", device_id="another-id")
    again = queue.head_batch(max_events=2)
    assert queue.device_id == "phone-1"  # the queue keeps the device it was made for
    assert (again.id, again.idempotency_key, again.body) == (batch.id, batch.idempotency_key, batch.body)
    assert again.attempts == 1
    assert queue.enqueue(ARRIVED)[0] == 4  # seq carries on where it was
    assert [seq for seq, _ in queue.events()] == [1, 2, 3, 4]
    queue.batch_done(batch, dict.fromkeys(batch.event_ids, "applied"))
    following = queue.head_batch(max_events=10)
    assert following.id != batch.id
    assert len(following.event_ids) == 2  # seq 3 and 4: nothing sent twice, nothing skipped
    assert queue.pending() == 2


def test_backoff_is_full_jitter_under_a_growing_cap():
    policy = RetryPolicy(base_seconds=0.5, cap_seconds=10.0)
    rng = random.Random(3)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (4, 4.0), (5, 8.0), (6, 10.0), (30, 10.0)]:
        waits = [policy.backoff(attempt, rng) for _ in range(500)]
        assert all(0 <= wait <= ceiling for wait in waits)
        assert max(waits) > 0.8 * ceiling  # spread over the whole range, not bunched


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_every_event_is_stored_once_though_responses_are_lost_after_commit(
    live_server_url, hubs, tmp_path
):
    monaco = hubs[1]
    days = []
    for n in range(3):
        driver = factories.driver_make(monaco)
        route = builders.published_route(hub=monaco, driver=driver, stops=3)
        items = [{"type": "route_started", "route_id": route.pk}]
        for stop in builders.delivery_stops(route):
            barcode = stop.legs.first().shipment.parcels.first().barcode
            items += [
                {"type": "arrived", "stop_id": stop.pk},
                {"type": "scanned", "stop_id": stop.pk, "barcode": barcode},
                {"type": "delivered", "stop_id": stop.pk},
                {"type": "departed", "stop_id": stop.pk},
            ]
        items.append({"type": "route_finished", "route_id": route.pk})
        days.append((f"phone-{n}", driver.user.auth_token.key, items))

    host, port = live_server_url.url.removeprefix("http://").rsplit(":", 1)
    # Harsher than R2: 40% cut after commit, 20% reset mid-body, 10% delayed.
    proxy = FaultProxy(
        host, int(port), seed=11, delay_seconds=0.3,
        mix=FaultMix(cut_response=0.4, reset_request_body=0.1, reset_response_body=0.1, delay=0.1),
    )
    stats = ClientStats()
    policy = RetryPolicy(base_seconds=0.05, cap_seconds=0.5, max_attempts=40)

    now = timezone.now().isoformat()

    async def phones():
        base_url = f"http://127.0.0.1:{proxy.listen_port}"
        everything_queued = asyncio.Event()
        everything_queued.set()  # the apps stop once their queue is empty
        queues, apps = [], []
        for index, (device_id, token, items) in enumerate(days):
            queue = DeviceQueue.open(tmp_path / f"{device_id}.sqlite", device_id=device_id)
            for item in items:
                queue.enqueue({**item, "occurred_at": now})
            client = MobileClient(
                queue=queue, base_url=base_url, token=token, rng=random.Random(index),
                policy=policy, max_batch_events=3, stats=stats,
            )
            queues.append(queue)
            apps.append(client.run(until=everything_queued, poll_seconds=0.02))
        await asyncio.wait_for(asyncio.gather(*apps), timeout=60)
        return queues

    with proxy.serving_in_thread():
        queues = asyncio.run(phones())

    queued = {(q.device_id, seq): event_id for q in queues for seq, event_id in q.events()}
    outcomes = Counter()
    for queue in queues:
        outcomes.update(queue.outcomes())
        queue.close()
    receipts = DriverEventReceipt.objects.filter(device_id__startswith="phone-")
    stored = {(r.device_id, r.seq): (str(r.event_id), r.status) for r in receipts}
    assert receipts.count() == len(queued) == 42
    assert stored == {key: (event_id, "applied") for key, event_id in queued.items()}
    assert outcomes == {"applied": 42}  # none given up, none left pending
    doubled = (
        ShipmentEvent.objects.filter(payload__has_key="driver_event_id")
        .values("payload__driver_event_id", "leg_id", "type", "payload__barcode")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert list(doubled) == []
    # The faults were there, and answers lost after commit came back as replays.
    assert proxy.counts["cut_response"] > 0
    assert stats.replays > 0
    assert stats.batches_given_up == 0
