"""Reading the message stream back from the database (the ``after_seq`` fetch).

Live messages are hints; this is the truth a client falls back on after a
reconnect or a gap. Only numbered messages are returned: numbers are handed out
in commit order, so ``stream_seq > n`` never skips one that commits later.
"""

from __future__ import annotations

from django.db.models import QuerySet

from shipments.models import OutboxMessage

from .relay import live_message

AFTER_SEQ_MAX_LIMIT = 500


def outbox_list_after(
    *, after_seq: int, limit: int = AFTER_SEQ_MAX_LIMIT, shipment_id: int | None = None
) -> list[OutboxMessage]:
    """Numbered messages after ``after_seq`` in order; the dashboard sees all of
    them (every message is also published to it), a shipment its own."""
    limit = max(1, min(limit, AFTER_SEQ_MAX_LIMIT))
    queryset: QuerySet[OutboxMessage] = OutboxMessage.objects.filter(
        stream_seq__gt=after_seq
    )
    if shipment_id is not None:
        queryset = queryset.filter(shipment_id_ref=shipment_id)
    return list(queryset.order_by("stream_seq")[:limit])


def shipment_last_seq(shipment_id: int) -> int:
    """The number of the latest published-or-numbered message about a shipment."""
    from django.db.models import Max

    latest = OutboxMessage.objects.filter(shipment_id_ref=shipment_id).aggregate(Max("stream_seq"))
    return latest["stream_seq__max"] or 0


def stream_page(*, after_seq: int, limit: int = AFTER_SEQ_MAX_LIMIT) -> dict:
    """The dashboard's catch-up page: messages as the socket would have sent them."""
    messages = outbox_list_after(after_seq=after_seq, limit=limit + 1)
    has_more = len(messages) > limit
    messages = messages[:limit]
    return {
        "messages": [_as_client_message(m) for m in messages],
        "last_seq": messages[-1].stream_seq if messages else after_seq,
        "has_more": has_more,
    }


def _as_client_message(message: OutboxMessage) -> dict:
    body = live_message(message)
    body.pop("type")
    return {"type": "message", **body}


def client_message(channel_message: dict) -> dict:
    """A channel-layer ``live.message`` as the dashboard client receives it."""
    body = dict(channel_message)
    body.pop("type", None)
    return {"type": "message", **body}
