"""The relay from the outbox to Channels groups.

    business transaction ──▶ OutboxMessage (stream_seq NULL)
                                   │  1. number: lock RelayState, take unnumbered rows
                                   │     (FOR UPDATE SKIP LOCKED), give them the next
                                   │     stream_seq values, commit
                                   ▼
                             2. publish every numbered, unpublished row to its
                                groups (plus "dashboard"), in seq order
                                   ▼
                             3. mark published_at

Numbers are handed out under the RelayState row lock, so committed numbers are
always a gap-free prefix: a reader that asks for ``stream_seq > n`` never skips
a message whose business transaction committed late. A crash between 2 and 3
publishes those rows again with the same numbers; readers drop what they have.

Only one relay pass runs at a time (a PostgreSQL advisory lock across
processes, a thread lock within one); a pass that finds the lock taken returns,
and the holder looks for new rows once more after it lets go.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from shipments.models import OutboxMessage
from shipments.outbox import DASHBOARD_GROUP

from .models import RelayState, write_lock_take

logger = logging.getLogger(__name__)

RELAY_ADVISORY_LOCK_KEY = 0x616C6D6C  # "alml"; one relay pass at a time, cluster-wide
LIVE_MESSAGE_TYPE = "live.message"  # one message; the consumers' handler is ``live_message``
LIVE_BATCH_TYPE = "live.batch"  # several, in order; handler ``live_batch``
PUBLISH_CHUNK = 100

_process_lock = threading.Lock()


@dataclass
class RelayResult:
    numbered: int = 0
    published: int = 0
    failed: int = 0
    skipped_locked: bool = False
    last_seq: int | None = None
    seqs: list[int] = field(default_factory=list)


def live_message(message: OutboxMessage, *, with_text: bool = False) -> dict:
    """The channel-layer message for one outbox row (what consumers receive).

    ``text`` is the dashboard frame, encoded once here rather than once per
    connected dashboard.
    """
    body = {
        "type": LIVE_MESSAGE_TYPE,
        "seq": message.stream_seq,
        "kind": message.type,
        "message_id": str(message.message_id),
        "shipment_id": message.shipment_id_ref,
        "payload": message.payload,
        "created_at": message.created_at.isoformat(),
    }
    if with_text:
        frame = {**body, "type": "message"}
        body["text"] = json.dumps(frame, cls=DjangoJSONEncoder)
    return body


def publish_groups(message: OutboxMessage) -> list[str]:
    # Every message also goes to the dashboard, so the dashboard's stream has no
    # gaps in stream_seq and a missing number always means a lost message.
    return list(dict.fromkeys([*message.groups, DASHBOARD_GROUP]))


def _number_new_messages(*, batch_size: int) -> int:
    """Step 1: give unnumbered rows the next stream numbers, in one transaction."""
    with transaction.atomic():
        write_lock_take()
        state, _ = RelayState.objects.select_for_update().get_or_create(pk=1)
        rows = list(
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .filter(stream_seq__isnull=True)
            .order_by("id")
            .values_list("id", flat=True)[:batch_size]
        )
        if not rows:
            return 0
        numbered = [
            OutboxMessage(pk=row_id, stream_seq=state.last_seq + offset)
            for offset, row_id in enumerate(rows, start=1)
        ]
        OutboxMessage.objects.bulk_update(numbered, ["stream_seq"])  # one statement
        RelayState.objects.filter(pk=1).update(
            last_seq=numbered[-1].stream_seq, updated_at=timezone.now()
        )
        return len(rows)


def _publish(messages: list[OutboxMessage]) -> list[int]:
    """Step 2: send the messages to their groups; returns the ids that went out.

    One channel-layer message per group and chunk (``live.batch``), not per
    outbox row: the layer's cost is per message and per member, so a pass of
    fifty rows to a group of fifty dashboards costs fifty deliveries, not 2,500.
    """
    layer = get_channel_layer()
    if layer is None:
        return []

    async def send_all() -> list[int]:
        sent: list[int] = []
        for start in range(0, len(messages), PUBLISH_CHUNK):
            chunk = messages[start : start + PUBLISH_CHUNK]
            per_group: dict[str, list[dict]] = {}
            for message in chunk:
                body = live_message(message, with_text=True)
                for group in publish_groups(message):
                    per_group.setdefault(group, []).append(body)
            try:
                for group, bodies in per_group.items():
                    await layer.group_send(group, {"type": LIVE_BATCH_TYPE, "messages": bodies})
            except Exception:  # noqa: BLE001 - Redis down: keep the rest for the next pass
                logger.warning("relay could not publish from seq %s", chunk[0].stream_seq, exc_info=True)
                break
            sent.extend(m.pk for m in chunk)
        return sent

    return async_to_sync(send_all)()


def _advisory_lock() -> bool:
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [RELAY_ADVISORY_LOCK_KEY])
        return bool(cursor.fetchone()[0])


def _advisory_unlock() -> None:
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s)", [RELAY_ADVISORY_LOCK_KEY])


def _pending_exists() -> bool:
    return OutboxMessage.objects.filter(published_at__isnull=True).exists()


def outbox_relay_run(*, batch_size: int = 500, max_batches: int = 20) -> RelayResult:
    """Number, publish and mark outbox messages until none are left (bounded).

    Returns what it did; ``skipped_locked`` is set when another pass held the
    lock (that pass will pick up anything new before it stops).
    """
    result = RelayResult()
    if connection.in_atomic_block:
        raise RuntimeError("the relay runs outside any transaction (it commits per step)")
    if not _process_lock.acquire(blocking=False):
        result.skipped_locked = True
        return result
    try:
        for _attempt in range(3):
            if not _advisory_lock():
                result.skipped_locked = True
                return result
            try:
                _relay_batches(result, batch_size=batch_size, max_batches=max_batches)
            finally:
                _advisory_unlock()
            # A writer that committed while we held the lock found it taken and
            # left; look once more now that it is free.
            if result.failed or not _pending_exists():
                break
    finally:
        _process_lock.release()
    return result


def _relay_batches(result: RelayResult, *, batch_size: int, max_batches: int) -> None:
    for _batch in range(max_batches):
        result.numbered += _number_new_messages(batch_size=batch_size)
        messages = list(
            OutboxMessage.objects.filter(stream_seq__isnull=False, published_at__isnull=True)
            .order_by("stream_seq")[:batch_size]
        )
        if not messages:
            return
        sent_ids = _publish(messages)
        if sent_ids:
            OutboxMessage.objects.filter(pk__in=sent_ids).update(published_at=timezone.now())
            _after_publish([m for m in messages if m.pk in set(sent_ids)])
        result.published += len(sent_ids)
        result.seqs.extend(m.stream_seq for m in messages if m.pk in set(sent_ids))
        result.last_seq = messages[-1].stream_seq if sent_ids else result.last_seq
        if len(sent_ids) < len(messages):
            result.failed += len(messages) - len(sent_ids)
            return


def _after_publish(messages: list[OutboxMessage]) -> None:
    """Work that follows a publication: queue the webhooks of status changes."""
    from .webhooks import webhook_deliveries_create

    try:
        webhook_deliveries_create(messages=messages)
    except Exception:  # noqa: BLE001 - webhooks must never hold up the live stream
        logger.exception("could not queue webhook deliveries")


def relay_lag_seconds() -> float:
    """Age of the oldest unpublished message (0 when none): a health figure."""
    oldest = (
        OutboxMessage.objects.filter(published_at__isnull=True)
        .order_by("id")
        .values_list("created_at", flat=True)
        .first()
    )
    if oldest is None:
        return 0.0
    return (timezone.now() - oldest).total_seconds()


def stream_last_seq() -> int:
    state = RelayState.objects.filter(pk=1).values_list("last_seq", flat=True).first()
    return state or 0

