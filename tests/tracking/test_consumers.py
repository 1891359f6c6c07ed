"""Consumers against the real Redis channel layer and PostgreSQL."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from shipments.services import shipment_tracking_token
from tests import factories
from tests.tracking.conftest import events_emit
from tracking.relay import outbox_relay_run, stream_last_seq

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def _connect(app, path: str, user=None) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(app, path)
    communicator.scope["user"] = user or AnonymousUser()
    return communicator


async def _drain(communicator, *, quiet_seconds: float = 0.5, limit: int = 500) -> list[dict]:
    """Everything the socket sends until it stays quiet (a timeout inside
    receive_json_from would cancel the consumer, so ask receive_nothing first)."""
    got = []
    for _ in range(limit):
        if await communicator.receive_nothing(timeout=quiet_seconds):
            break
        got.append(await communicator.receive_json_from(timeout=5))
    return got


async def _emit_and_relay(shipment_id: int, count: int) -> None:
    await database_sync_to_async(events_emit)(shipment_id, count)
    await database_sync_to_async(outbox_relay_run)()


async def test_dashboard_refuses_anyone_but_a_dispatcher(ws_app, hubs):
    driver = await database_sync_to_async(factories.driver_make)(hubs[0])
    for user in (AnonymousUser(), driver.user):
        communicator = await _connect(ws_app, "/ws/dashboard/", user)
        connected, code = await communicator.connect()
        assert connected is False
        assert code == 4403


async def test_dashboard_receives_live_messages_in_order(ws_app, shipment, dispatcher):
    communicator = await _connect(ws_app, "/ws/dashboard/", dispatcher)
    connected, _ = await communicator.connect()
    assert connected
    await database_sync_to_async(outbox_relay_run)()
    await _drain(communicator)

    await _emit_and_relay(shipment.pk, 5)
    messages = await _drain(communicator)

    assert [m["type"] for m in messages] == ["message"] * 5
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(seqs[0], seqs[0] + 5))
    assert {m["payload"]["event_type"] for m in messages} == {"tracking_link.reissued"}
    await communicator.disconnect()


async def test_reconnecting_client_gets_exactly_the_50_it_missed_in_order(ws_app, shipment, dispatcher):
    first = await _connect(ws_app, "/ws/dashboard/", dispatcher)
    assert (await first.connect())[0]
    await _emit_and_relay(shipment.pk, 3)
    seen = await _drain(first)
    last_seq = seen[-1]["seq"]
    await first.disconnect()

    await _emit_and_relay(shipment.pk, 50)  # nobody listening
    second = await _connect(ws_app, f"/ws/dashboard/?after_seq={last_seq}", dispatcher)
    assert (await second.connect())[0]
    missed = await _drain(second)

    assert [m["seq"] for m in missed] == list(range(last_seq + 1, last_seq + 51))
    assert len({m["message_id"] for m in missed}) == 50
    await second.disconnect()


async def test_a_message_dropped_by_the_channel_layer_is_filled_from_the_database(
    ws_app, shipment, dispatcher, channel_layer
):
    communicator = await _connect(ws_app, "/ws/dashboard/", dispatcher)
    assert (await communicator.connect())[0]
    await _emit_and_relay(shipment.pk, 1)
    before = (await _drain(communicator))[-1]["seq"]
    # Three messages are numbered and committed but never published (as if the
    # layer dropped them), then a fourth arrives live.
    await database_sync_to_async(events_emit)(shipment.pk, 3)
    from tracking import relay

    await database_sync_to_async(relay._number_new_messages)(batch_size=100)
    from shipments.models import OutboxMessage

    await database_sync_to_async(
        lambda: OutboxMessage.objects.filter(published_at__isnull=True).update(
            published_at=__import__("django.utils.timezone", fromlist=["now"]).now()
        )
    )()
    await _emit_and_relay(shipment.pk, 1)

    got = await _drain(communicator)
    assert [m["seq"] for m in got] == [before + 1, before + 2, before + 3, before + 4]
    await communicator.disconnect()


async def test_resume_after_a_layer_restart_delivers_what_was_missed(ws_app, shipment, dispatcher):
    communicator = await _connect(ws_app, "/ws/dashboard/", dispatcher)
    assert (await communicator.connect())[0]
    await _emit_and_relay(shipment.pk, 2)
    last = (await _drain(communicator))[-1]["seq"]
    # Redis forgot the group memberships (as a restart without persistence does);
    # messages published now reach nobody.
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    lost = [key for key in client.scan_iter(match="*group:dashboard*")]
    assert lost
    client.delete(*lost)
    client.close()
    await _emit_and_relay(shipment.pk, 4)
    assert await _drain(communicator, quiet_seconds=0.3) == []
    await communicator.send_json_to({"type": "resume", "after_seq": last})
    got = await _drain(communicator)
    assert [m["seq"] for m in got] == list(range(last + 1, last + 5))
    await communicator.disconnect()


async def test_tracking_socket_needs_a_valid_token(ws_app, shipment):
    communicator = await _connect(ws_app, "/ws/track/not-a-real-token/")
    connected, code = await communicator.connect()
    assert connected is False and code == 4404


async def test_tracking_socket_of_a_never_receives_b(ws_app, hubs):
    a = (await database_sync_to_async(factories.shipment_make)()).shipment
    b = (await database_sync_to_async(factories.shipment_make)()).shipment
    await database_sync_to_async(outbox_relay_run)()
    token_a = await database_sync_to_async(shipment_tracking_token)(a)
    socket_a = await _connect(ws_app, f"/ws/track/{token_a}/")
    assert (await socket_a.connect())[0]
    hello = await socket_a.receive_json_from(timeout=2)
    assert hello["type"] == "shipment" and hello["shipment"]["reference"] == a.reference

    # B changes a lot; A's socket hears nothing.
    await database_sync_to_async(
        lambda: [__import__("shipments.services", fromlist=["x"]).shipment_cancel(shipment_id=b.pk)]
    )()
    await database_sync_to_async(outbox_relay_run)()
    assert await _drain(socket_a, quiet_seconds=0.7) == []

    # A changes once; A's socket hears it, about A only.
    await database_sync_to_async(
        lambda: __import__("shipments.services", fromlist=["x"]).shipment_cancel(shipment_id=a.pk)
    )()
    await database_sync_to_async(outbox_relay_run)()
    got = await _drain(socket_a)
    assert len(got) == 1
    assert got[0]["shipment"]["reference"] == a.reference
    assert got[0]["shipment"]["status"] == "cancelled"
    assert b.reference not in str(got)
    await socket_a.disconnect()


async def test_tracking_socket_sends_only_allow_listed_fields(ws_app, shipment):
    from tracking.public import PUBLIC_KEYS

    token = await database_sync_to_async(shipment_tracking_token)(shipment)
    socket = await _connect(ws_app, f"/ws/track/{token}/")
    assert (await socket.connect())[0]
    hello = await socket.receive_json_from(timeout=2)
    assert set(hello) == {"type", "seq", "reason", "shipment"}
    assert set(hello["shipment"]) <= PUBLIC_KEYS
    text = str(hello)
    for secret in ("Camille", "+33600000000", "Destination street", "Origin street"):
        assert secret not in text
    assert await database_sync_to_async(stream_last_seq)() >= 0
    await socket.disconnect()


async def test_tracking_socket_guessing_is_rate_limited(ws_app, hubs, settings):
    from django.core.cache import cache

    settings.TRACKING_MISS_LIMIT_PER_MINUTE = 3
    await database_sync_to_async(cache.clear)()
    codes = []
    for attempt in range(5):
        communicator = WebsocketCommunicator(ws_app, f"/ws/track/guess{attempt}/")
        communicator.scope["user"] = AnonymousUser()
        communicator.scope["client"] = ["198.51.100.7", 5000]
        connected, code = await communicator.connect()
        assert connected is False
        codes.append(code)
    assert codes == [4404, 4404, 4404, 4429, 4429]
    await database_sync_to_async(cache.clear)()
