"""Outgoing webhooks: status changes of a shipper's shipments, signed and retried.

    relay publishes a shipment.event ──▶ one WebhookDelivery per active endpoint
    of the shipper (unique per endpoint and event) ──▶ webhook_delivery_send_task
    ──▶ POST, signed ──▶ 2xx: delivered │ else: retry with back-off, then failed

Signature header ``Allmile-Signature: t=<unix seconds>,v1=<hex>`` where ``v1`` is
HMAC-SHA256 of ``"<t>.<raw body>"`` with the endpoint's secret; receivers check
it and reject timestamps older than a few minutes (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import datetime, timedelta

import httpx
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from shipments.models import OutboxMessage, Shipment

from .models import WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "Allmile-Signature"
# The events a shipper's system hears about: status changes, not internal chatter.
WEBHOOK_EVENT_TYPES = frozenset(
    {
        "shipment.created",
        "shipment.cancelled",
        "shipment.replanned",
        "leg.departed",
        "leg.arrived",
        "leg.completed",
        "leg.failed",
        "shipment.at_risk",
        "shipment.recovered",
    }
)
MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 30
# Below the broker's visibility timeout (3600 s), so a countdown is never re-delivered early.
BACKOFF_MAX_SECONDS = 1800
REQUEST_TIMEOUT_SECONDS = 5.0


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def webhook_signature_valid(
    *, secret: str, header: str, body: bytes, now: float | None = None, tolerance_seconds: int = 300
) -> bool:
    """What a receiver runs; kept here so tests and integrators share one definition."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance_seconds:
        return False
    expected = webhook_signature(secret=secret, timestamp=timestamp, body=body)
    return hmac.compare_digest(expected, header)


def backoff_seconds(attempts: int) -> int:
    """30 s, 60 s, 120 s … capped at 30 min."""
    return min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1))


def webhook_payload(message: OutboxMessage) -> dict:
    """What the shipper receives: its own shipment's status, no personal data."""
    payload = message.payload
    return {
        "id": str(message.message_id),
        "event": payload.get("event_type"),
        "shipment": {
            "id": payload.get("shipment_id"),
            "reference": payload.get("reference"),
            "status": payload.get("status"),
            "current_mile": payload.get("current_mile"),
            "is_at_risk": payload.get("is_at_risk"),
            "eta": payload.get("eta"),
        },
        "occurred_at": payload.get("recorded_at"),
        "sequence": message.stream_seq,
    }


def webhook_deliveries_create(*, messages: list[OutboxMessage]) -> list[int]:
    """Queue one delivery per (active endpoint of the shipper, status event)."""
    relevant = [
        m
        for m in messages
        if m.type == "shipment.event"
        and m.payload.get("event_type") in WEBHOOK_EVENT_TYPES
        and m.shipment_id_ref
    ]
    if not relevant:
        return []
    shippers = dict(
        Shipment.objects.filter(pk__in={m.shipment_id_ref for m in relevant}).values_list(
            "pk", "shipper_id"
        )
    )
    endpoints: dict[int, list[WebhookEndpoint]] = {}
    for endpoint in WebhookEndpoint.objects.filter(
        is_active=True, shipper_id__in=set(shippers.values())
    ):
        endpoints.setdefault(endpoint.shipper_id, []).append(endpoint)
    if not endpoints:
        return []
    from .tasks import webhook_delivery_send_task

    created: list[int] = []
    for message in relevant:
        event_type = message.payload["event_type"]
        for endpoint in endpoints.get(shippers.get(message.shipment_id_ref), []):
            if endpoint.event_types and event_type not in endpoint.event_types:
                continue
            try:
                with transaction.atomic():
                    delivery = WebhookDelivery.objects.create(
                        endpoint=endpoint,
                        event_id=message.payload.get("event_id") or message.pk,
                        event_type=event_type,
                        payload=webhook_payload(message),
                        next_attempt_at=timezone.now(),
                    )
            except IntegrityError:
                continue  # already queued by an earlier pass (re-published message)
            created.append(delivery.pk)
            webhook_delivery_send_task.apply_async((delivery.pk,), retry=False)
    return created


def _claim_attempt(delivery_id: int, now: datetime) -> WebhookDelivery | None:
    """Conditional update: only one worker makes a given attempt."""
    delivery = WebhookDelivery.objects.filter(pk=delivery_id).first()
    if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
        return None
    if delivery.next_attempt_at and delivery.next_attempt_at > now + timedelta(seconds=1):
        return None  # not due yet (an early duplicate of the retry task)
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, status=WebhookDelivery.Status.PENDING, attempts=delivery.attempts
    ).update(attempts=delivery.attempts + 1, next_attempt_at=now + timedelta(minutes=10))
    if claimed != 1:
        return None
    delivery.attempts += 1
    return delivery


def webhook_delivery_attempt(
    *, delivery_id: int, now: datetime | None = None, client: httpx.Client | None = None
) -> WebhookDelivery | None:
    """Make one attempt if it is due; on failure schedule the next one (or give up)."""
    now = now or timezone.now()
    delivery = _claim_attempt(delivery_id, now)
    if delivery is None:
        return None
    endpoint = delivery.endpoint
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Allmile-Webhooks/1",
        SIGNATURE_HEADER: webhook_signature(
            secret=endpoint.secret, timestamp=int(time.time()), body=body
        ),
        "Allmile-Delivery": str(delivery.pk),
    }
    started = time.perf_counter()
    status_code: int | None = None
    error = ""
    try:
        if client is None:
            with httpx.Client(timeout=REQUEST_TIMEOUT_SECONDS, follow_redirects=False) as own:
                response = own.post(endpoint.url, content=body, headers=headers)
        else:
            response = client.post(endpoint.url, content=body, headers=headers)
        status_code = response.status_code
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    delivery.last_duration_ms = int((time.perf_counter() - started) * 1000)
    delivery.last_status_code = status_code
    delivery.last_error = error
    if not error:
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.delivered_at = timezone.now()
        delivery.next_attempt_at = None
    elif delivery.attempts >= MAX_ATTEMPTS:
        delivery.status = WebhookDelivery.Status.FAILED
        delivery.next_attempt_at = None
    else:
        delivery.next_attempt_at = now + timedelta(seconds=backoff_seconds(delivery.attempts))
    delivery.save(
        update_fields=[
            "status",
            "delivered_at",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "last_duration_ms",
        ]
    )
    # Eager tasks would ignore the countdown and retry at once: in the embedded
    # default the periodic loop retries due deliveries instead.
    if delivery.status == WebhookDelivery.Status.PENDING and not settings.CELERY_TASK_ALWAYS_EAGER:
        from .tasks import webhook_delivery_send_task

        try:
            webhook_delivery_send_task.apply_async(
                (delivery.pk,), countdown=backoff_seconds(delivery.attempts), retry=False
            )
        except Exception:  # noqa: BLE001 - the retry sweep finds due deliveries
            logger.warning("could not queue retry of webhook delivery %s", delivery.pk)
    return delivery


def webhook_deliveries_retry_due(*, now: datetime | None = None, limit: int = 200) -> int:
    """Safety net for lost retry tasks: attempt every due pending delivery."""
    now = now or timezone.now()
    due = list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    for delivery_id in due:
        webhook_delivery_attempt(delivery_id=delivery_id, now=now)
    return len(due)
