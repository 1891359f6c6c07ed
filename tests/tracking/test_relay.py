"""The outbox relay: numbering in commit order, publishing after commit, no loss."""

from __future__ import annotations

import threading
import time

import pytest
from asgiref.sync import async_to_sync
from django.db import connection, transaction

from shipments.models import OutboxMessage
from shipments.outbox import outbox_enqueue, shipment_group
from tests.tracking.conftest import events_emit
from tracking.relay import outbox_relay_run
from tracking.stream import outbox_list_after, stream_page

pytestmark = pytest.mark.django_db(transaction=True)


def _receive_all(layer, channel: str, *, expected: int, timeout_seconds: float = 5.0) -> list[dict]:
    async def collect():
        import asyncio

        got = []
        deadline = time.monotonic() + timeout_seconds
        while len(got) < expected and time.monotonic() < deadline:
            try:
                batch = await asyncio.wait_for(layer.receive(channel), timeout=0.5)
            except TimeoutError:
                continue
            assert batch["type"] == "live.batch"
            got.extend(batch["messages"])
        return got

    return async_to_sync(collect)()


def test_relay_numbers_publishes_and_marks_every_message(shipment, channel_layer):
    outbox_relay_run()  # the creation event, before anyone listens
    channel = async_to_sync(channel_layer.new_channel)()
    async_to_sync(channel_layer.group_add)(shipment_group(shipment.pk), channel)
    events_emit(shipment.pk, 5)

    result = outbox_relay_run()

    assert result.published == 5
    received = _receive_all(channel_layer, channel, expected=5)
    seqs = [m["seq"] for m in received]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert seqs == list(range(seqs[0], seqs[0] + 5))
    assert all(m["shipment_id"] == shipment.pk for m in received)
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()
    numbered = list(OutboxMessage.objects.order_by("stream_seq").values_list("stream_seq", flat=True))
    assert numbered == list(range(1, len(numbered) + 1))  # gap-free from 1


def test_a_transaction_that_commits_late_is_never_skipped(shipment):
    """Writer A takes a lower id but commits after writer B; readers by
    stream_seq still see A, while a naive reader by id high-water mark misses it."""
    outbox_relay_run()
    a_written = threading.Event()
    a_may_commit = threading.Event()

    def writer_a():
        try:
            with transaction.atomic():
                outbox_enqueue(type="test.late", groups=["dashboard"], payload={"w": "a"}, shipment_id=shipment.pk)
                a_written.set()
                assert a_may_commit.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=writer_a)
    thread.start()
    assert a_written.wait(10)
    with transaction.atomic():
        outbox_enqueue(type="test.early", groups=["dashboard"], payload={"w": "b"}, shipment_id=shipment.pk)
    outbox_relay_run()  # publishes B only: A is not committed yet

    seen = stream_page(after_seq=0)["messages"]
    high_water_seq = seen[-1]["seq"]
    high_water_id = OutboxMessage.objects.get(type="test.early").pk
    a_may_commit.set()
    thread.join(10)
    outbox_relay_run()

    late = OutboxMessage.objects.get(type="test.late")
    assert late.pk < high_water_id  # A's id is lower than what a reader already saw
    assert late.stream_seq > high_water_seq  # but its number comes after
    after = [m.type for m in outbox_list_after(after_seq=high_water_seq)]
    assert after == ["test.late"]
    naive = OutboxMessage.objects.filter(pk__gt=high_water_id, type__startswith="test.")
    assert not naive.exists()  # the naive id poller would have lost A


def test_messages_numbered_but_not_marked_are_published_again_with_the_same_numbers(
    shipment, channel_layer
):
    """A relay killed after publishing, before marking, re-publishes; numbers do not change."""
    outbox_relay_run()
    events_emit(shipment.pk, 3)
    outbox_relay_run()
    rows = list(OutboxMessage.objects.order_by("-stream_seq")[:3])
    OutboxMessage.objects.filter(pk__in=[r.pk for r in rows]).update(published_at=None)
    channel = async_to_sync(channel_layer.new_channel)()
    async_to_sync(channel_layer.group_add)(shipment_group(shipment.pk), channel)

    result = outbox_relay_run()

    assert result.numbered == 0 and result.published == 3
    received = _receive_all(channel_layer, channel, expected=3)
    assert sorted(m["seq"] for m in received) == sorted(r.stream_seq for r in rows)


def test_relay_with_redis_down_keeps_messages_until_it_is_back(shipment, settings):
    outbox_relay_run()
    events_emit(shipment.pk, 2)
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},  # nothing listens there
        }
    }
    down = outbox_relay_run()
    assert down.published == 0 and down.failed >= 1
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 2

    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [settings.REDIS_URL]},
        }
    }
    up = outbox_relay_run()
    assert up.published == 2
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()


def test_concurrent_writers_and_relays_lose_nothing(hubs):
    """8 writers, each holding its transaction open a random while, and 2 relays
    running throughout: every committed message ends up numbered exactly once."""
    import random

    shipments = [__import__("tests.factories", fromlist=["x"]).shipment_make().shipment.pk for _ in range(2)]
    stop = threading.Event()
    errors: list[BaseException] = []
    per_writer = 25

    def writer(index: int):
        rng = random.Random(index)
        try:
            for n in range(per_writer):
                with transaction.atomic():
                    outbox_enqueue(type="test.load", groups=["dashboard"], payload={"w": index, "n": n},
                                   shipment_id=shipments[index % 2])
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT pg_sleep(%s)", [rng.random() * 0.05])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    def relay():
        try:
            while not stop.is_set():
                outbox_relay_run()
                time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    relays = [threading.Thread(target=relay) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in relays + writers:
        t.start()
    for t in writers:
        t.join(60)
    stop.set()
    for t in relays:
        t.join(30)
    outbox_relay_run()

    assert not errors
    rows = OutboxMessage.objects.filter(type="test.load")
    assert rows.count() == 8 * per_writer
    assert not rows.filter(stream_seq__isnull=True).exists()
    assert not rows.filter(published_at__isnull=True).exists()
    all_seqs = list(OutboxMessage.objects.order_by("stream_seq").values_list("stream_seq", flat=True))
    assert all_seqs == list(range(1, len(all_seqs) + 1))
