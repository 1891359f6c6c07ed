"""Deciding, sending and sweeping customer messages.

    shipment_event_committed (after commit) ──▶ notification_event_process_task
        ──▶ notifications_decide_for_event: lock the shipment, mark the event
            reviewed, then per active rule of its trigger one Message row
            (unique per event, rule and recipient):
              no address / opted out / throttled ──▶ suppressed, with the reason
              inside quiet hours ──▶ scheduled until they end
              otherwise ──▶ queued ──▶ notification_send_task (after commit)
    notification_send_task ──▶ notification_send: claim (conditional UPDATE),
        send, then sent (+ ``notification.sent`` event) │ retrying with back-off │
        failed with the reason (+ ``notification.failed`` event)
    notification_sweep_task (every minute) ──▶ events of the last 15 minutes
        nobody reviewed, scheduled messages whose quiet hours ended, retries
        due, and messages whose task or worker was lost

Delivery is at least once: a worker killed between the provider's "accepted"
and the row's "sent" makes the sweep send that message again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.template import TemplateDoesNotExist, TemplateSyntaxError
from django.utils import timezone

from shipments.events import event_record
from shipments.models import Shipment, ShipmentEvent
from shipments.states import SHIPMENT_TERMINAL, LegStatus
from shipments.tracking_links import tracking_links_redact, tracking_links_restore

from .channels import DeliveryError, email_send, sms_send
from .models import (
    Channel,
    EventReview,
    Message,
    NotificationOptOut,
    NotificationRule,
    RecipientRole,
    Trigger,
)
from .recipients import (
    address_masked,
    address_normalise,
    recipient_for,
    recipient_opted_out,
)
from .rendering import TemplateMissing, message_context, message_render
from .triggers import (
    TRIGGER_EVENT_TYPES,
    eta_moved_enough,
    quiet_hours_end,
    trigger_for,
)

logger = logging.getLogger(__name__)

S = Message.Status
PENDING = (S.SCHEDULED, S.QUEUED, S.SENDING, S.RETRYING)
# Messages that count against a rule's interval (a scheduled one is replaced instead).
THROTTLING = (S.QUEUED, S.SENDING, S.RETRYING, S.SENT)
# Triggers whose message tells a precise ETA: the baseline for "ETA moved".
ETA_TELLING = (Trigger.OUT_FOR_DELIVERY, Trigger.ETA_MOVED, Trigger.AT_RISK)

MAX_ATTEMPTS = 5
BACKOFF_MAX_SECONDS = 1800  # below the broker's visibility timeout (3600 s)
SWEEP_LOOKBACK = timedelta(minutes=15)
SWEEP_BATCH = 500
STALE_QUEUED = timedelta(minutes=2)  # its task was probably lost
STALE_SENDING = timedelta(minutes=10)  # its worker probably died mid-send
# A send holds its claim this long at most (provider timeouts are 10 s): a row
# still "sending" after it belongs to a worker that died, and may be taken over.
SENDING_LEASE = timedelta(seconds=30)


def backoff_seconds(attempts: int) -> int:
    """base, 2×base, 4×base … (base 30 s by default), capped at 30 min."""
    base = int(getattr(settings, "NOTIFICATIONS_RETRY_BACKOFF_SECONDS", 30))
    return min(BACKOFF_MAX_SECONDS, base * 2 ** max(0, attempts - 1))


# ---------------------------------------------------------------------------
# Deciding
# ---------------------------------------------------------------------------


def notifications_decide_for_event(
    *, event_id: int, now: datetime | None = None
) -> list[Message]:
    """Apply every active rule to one event, once. Returns the rows written.

    Locks the shipment so two events of one shipment are decided one after the
    other (the throttle sees the first decision). Queues the sends after commit.
    """
    now = now or timezone.now()
    head = (
        ShipmentEvent.objects.filter(pk=event_id).values("type", "shipment_id").first()
    )
    if head is None or head["type"] not in TRIGGER_EVENT_TYPES:
        return []
    with transaction.atomic():
        shipment = (
            Shipment.objects.select_for_update(of=("self",))
            .select_related(
                "shipper",
                "consignee",
                "destination",
                "destination_hub",
                "original_shipment__consignee",
                "original_shipment__destination",
            )
            .get(pk=head["shipment_id"])
        )
        event = ShipmentEvent.objects.select_related(
            "leg__from_hub", "leg__to_hub"
        ).get(pk=event_id)
        _, created = EventReview.objects.get_or_create(event=event)
        if not created:
            return []  # decided already (signal and sweep, or a redelivered task)
        trigger = trigger_for(
            event_type=event.type, payload=event.payload, is_return=shipment.is_return
        )
        if trigger is None:
            return []
        rules = NotificationRule.objects.filter(
            is_active=True, trigger=trigger
        ).order_by("id")
        decided = [
            message
            for rule in rules
            if (message := _decide(rule=rule, shipment=shipment, event=event, now=now))
        ]
        to_send = [m.pk for m in decided if m.status == S.QUEUED]
        if to_send:
            transaction.on_commit(lambda: messages_queue(to_send))
    return decided


def _eta_told(shipment: Shipment, address: str) -> datetime | None:
    """The ETA last told to this recipient, else the one first planned."""
    told = (
        Message.objects.filter(
            shipment=shipment, recipient=address, facts__has_key="eta"
        )
        .exclude(status__in=[S.SUPPRESSED, S.FAILED])
        .order_by("-id")
        .values_list("facts", flat=True)
        .first()
    )
    if told and told.get("eta"):
        return datetime.fromisoformat(told["eta"])
    last = (
        shipment.legs.exclude(status=LegStatus.CANCELLED).order_by("-sequence").first()
    )
    return last.planned_arrival if last else None


def _eta_worth_telling(
    rule: NotificationRule, shipment: Shipment, address: str
) -> bool:
    if shipment.status in SHIPMENT_TERMINAL:
        return False
    return eta_moved_enough(
        told=_eta_told(shipment, address),
        current=shipment.eta,
        threshold=timedelta(minutes=rule.eta_threshold_minutes),
    )


def _decide(
    *, rule: NotificationRule, shipment: Shipment, event: ShipmentEvent, now: datetime
) -> Message | None:
    recipient = recipient_for(
        shipment=shipment, role=rule.recipient_role, channel=rule.channel
    )
    if rule.trigger == Trigger.ETA_MOVED and not _eta_worth_telling(
        rule, shipment, recipient.address
    ):
        return None  # no row: a later move is judged afresh
    row = Message(
        shipment=shipment,
        event=event,
        rule=rule,
        channel=rule.channel,
        recipient_role=rule.recipient_role,
        recipient=recipient.address,
        language=recipient.language,
        created_at=now,
    )
    if rule.trigger in ETA_TELLING and shipment.eta:
        row.facts = {"eta": shipment.eta.isoformat()}
    row.status, row.reason = _gate(
        rule=rule, shipment=shipment, address=recipient.address, now=now
    )
    if row.status != S.SUPPRESSED:
        try:
            context = message_context(
                shipment=shipment,
                trigger=rule.trigger,
                recipient=recipient,
                event=event,
            )
            row.subject, body, row.language = message_render(
                rule=rule, language=recipient.language, context=context
            )
            # No raw tracking token at rest: the link is put back when sending.
            row.body = tracking_links_redact(body)
        except (TemplateMissing, TemplateSyntaxError, TemplateDoesNotExist) as exc:
            row.status, row.reason = S.FAILED, f"template: {exc}"[:500]
    if row.status == S.QUEUED:
        until = quiet_hours_end(
            local_now=timezone.localtime(now),
            start=rule.quiet_hours_start,
            end=rule.quiet_hours_end,
        )
        if until is not None:
            row.status, row.send_after = S.SCHEDULED, until
            row.reason = f"quiet hours until {until:%H:%M}"
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError:
        return None  # the same decision exists (event, rule, recipient)
    if row.status == S.FAILED:
        _failure_record(row)
    return row


def _gate(
    *, rule: NotificationRule, shipment: Shipment, address: str, now: datetime
) -> tuple[str, str]:
    """(status, reason) before any wording: who and how often."""
    if not address:
        kind = "e-mail address" if rule.channel == Channel.EMAIL else "phone number"
        return (
            S.SUPPRESSED,
            f"no {kind} for the {rule.get_recipient_role_display().lower()}",
        )
    if recipient_opted_out(channel=rule.channel, address=address):
        return S.SUPPRESSED, "the recipient opted out"
    same = Message.objects.filter(shipment=shipment, rule=rule, recipient=address)
    # A message still waiting for quiet hours to end is replaced by the newer one.
    same.filter(status=S.SCHEDULED).update(
        status=S.SUPPRESSED, reason="replaced by a newer message", updated_at=now
    )
    if rule.min_interval_minutes:
        since = now - timedelta(minutes=rule.min_interval_minutes)
        if same.filter(status__in=THROTTLING, created_at__gte=since).exists():
            return (
                S.SUPPRESSED,
                f"throttled: at most one per {rule.min_interval_minutes} min",
            )
    return S.QUEUED, ""


def messages_queue(message_ids: list[int]) -> None:
    """Hand messages to the worker; if the broker is away the sweep retries."""
    from .tasks import notification_send_task

    for message_id in message_ids:
        try:
            notification_send_task.delay(message_id)
        except Exception:  # noqa: BLE001 - the sweep re-queues queued messages
            logger.warning("could not queue message %s; the sweep will", message_id)


# ---------------------------------------------------------------------------
# Sending
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SendOutcome:
    status: str
    retry_in_seconds: int | None = None


def _claim(message_id: int, now: datetime) -> bool:
    """Conditional update: only one worker attempts a given message at a time."""
    due = Q(status__in=[S.QUEUED, S.RETRYING]) & (
        Q(next_attempt_at__isnull=True)
        | Q(next_attempt_at__lte=now + timedelta(seconds=1))
    )
    abandoned = Q(status=S.SENDING, updated_at__lte=now - SENDING_LEASE)
    return (
        Message.objects.filter(due | abandoned, pk=message_id)
        .update(status=S.SENDING, attempts=F("attempts") + 1, updated_at=now)
        == 1
    )


def _deliver(message: Message) -> str:
    reference = f"msg{message.pk}"
    if message.channel == Channel.EMAIL:
        return email_send(
            to=message.recipient,
            subject=message.subject,
            body=tracking_links_restore(message.body, current_version=True),
            reference=reference,
        )
    body = tracking_links_restore(message.body, current_version=True)
    return sms_send(to=message.recipient, body=body, reference=reference)


def notification_send(
    *, message_id: int, now: datetime | None = None
) -> SendOutcome | None:
    """One attempt at one message. None when there was nothing to do (sent,
    not due, or another worker has it)."""
    now = now or timezone.now()
    if not _claim(message_id, now):
        claimed_at = (
            Message.objects.filter(pk=message_id, status=S.SENDING)
            .values_list("updated_at", flat=True)
            .first()
        )
        if claimed_at is None:
            return None
        # Another attempt holds it, or held it and died (a redelivery after a
        # worker was killed mid-send): look again when its lease is over.
        wait = (claimed_at + SENDING_LEASE - now).total_seconds()
        return SendOutcome(S.SENDING, retry_in_seconds=max(1, int(wait) + 1))
    message = Message.objects.select_related("shipment", "rule").get(pk=message_id)
    if recipient_opted_out(channel=message.channel, address=message.recipient):
        Message.objects.filter(pk=message.pk, status=S.SENDING).update(
            status=S.SUPPRESSED,
            reason="the recipient opted out",
            updated_at=timezone.now(),
        )
        return SendOutcome(S.SUPPRESSED)
    try:
        provider_id = _deliver(message)
    except DeliveryError as exc:
        return _attempt_failed(message, reason=exc.reason, permanent=exc.permanent)
    except Exception as exc:  # noqa: BLE001 - a bug must not strand the row in "sending"
        logger.exception("sending message %s crashed", message.pk)
        return _attempt_failed(
            message, reason=f"{type(exc).__name__}: {exc}", permanent=False
        )
    with transaction.atomic():
        Message.objects.filter(pk=message.pk).update(
            status=S.SENT,
            sent_at=timezone.now(),
            provider_message_id=provider_id[:200],
            reason="",
            next_attempt_at=None,
            updated_at=timezone.now(),
        )
        event_record(
            shipment=message.shipment,
            type="notification.sent",
            source="system",
            payload=_event_payload(message),
        )
    return SendOutcome(S.SENT)


def _attempt_failed(message: Message, *, reason: str, permanent: bool) -> SendOutcome:
    if permanent or message.attempts >= MAX_ATTEMPTS:
        message.status, message.reason = S.FAILED, reason[:500]
        with transaction.atomic():
            Message.objects.filter(pk=message.pk).update(
                status=S.FAILED,
                reason=message.reason,
                next_attempt_at=None,
                updated_at=timezone.now(),
            )
            _failure_record(message)
        return SendOutcome(S.FAILED)
    delay = backoff_seconds(message.attempts)
    Message.objects.filter(pk=message.pk, status=S.SENDING).update(
        status=S.RETRYING,
        reason=reason[:500],
        next_attempt_at=timezone.now() + timedelta(seconds=delay),
        updated_at=timezone.now(),
    )
    return SendOutcome(S.RETRYING, retry_in_seconds=delay)


def _event_payload(message: Message) -> dict:
    return {
        "message_id": message.pk,
        "rule": message.rule.name,
        "trigger": message.rule.trigger,
        "channel": message.channel,
        "to": address_masked(message.recipient),
        "language": message.language,
        "attempts": message.attempts,
        **({"reason": message.reason} if message.status == S.FAILED else {}),
    }


def _failure_record(message: Message) -> None:
    """A failed message is a fact on the shipment's timeline."""
    with transaction.atomic():
        event_record(
            shipment=message.shipment,
            type="notification.failed",
            source="system",
            payload=_event_payload(message),
        )


# ---------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------


def _recent_events(*, since: datetime, until: datetime):
    """Events recorded in [since, until], found through the primary key.

    ``recorded_at`` has no index; ids grow with time, so the newest event
    older than ``since`` (a short backward walk of the primary key) bounds the
    range, and the window is read as an id range.
    """
    boundary = (
        ShipmentEvent.objects.filter(recorded_at__lt=since)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
    )
    events = ShipmentEvent.objects.filter(
        recorded_at__gte=since, recorded_at__lte=until
    )
    return events.filter(id__gt=boundary) if boundary is not None else events


def notification_sweep_run(*, now: datetime | None = None) -> dict[str, int]:
    """Catch up on whatever the signal or a task missed; safe to run any time."""
    now = now or timezone.now()
    missed = list(
        _recent_events(since=now - SWEEP_LOOKBACK, until=now)
        .filter(notification_review__isnull=True)
        .filter(
            ~Q(type="shipment.created") | Q(shipment__is_return=True),
            type__in=TRIGGER_EVENT_TYPES,
        )
        .order_by("id")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    decided = 0
    for event_id in missed:
        try:
            decided += len(notifications_decide_for_event(event_id=event_id, now=now))
        except Exception:  # noqa: BLE001 - one bad event must not stop the sweep
            logger.exception("deciding notifications for event %s failed", event_id)

    released = []
    for message_id in Message.objects.filter(
        status=S.SCHEDULED, send_after__lte=now
    ).values_list("pk", flat=True)[:SWEEP_BATCH]:
        if Message.objects.filter(pk=message_id, status=S.SCHEDULED).update(
            status=S.QUEUED, reason="", updated_at=now
        ):
            released.append(message_id)

    # A worker that died mid-send: try again (the provider may have it already).
    lost = Message.objects.filter(
        status=S.SENDING, updated_at__lte=now - STALE_SENDING
    ).update(
        status=S.RETRYING,
        reason="worker lost while sending; retrying",
        next_attempt_at=now,
        updated_at=now,
    )
    due = list(
        Message.objects.filter(
            Q(status=S.RETRYING, next_attempt_at__lte=now)
            | Q(status=S.QUEUED, updated_at__lte=now - STALE_QUEUED)
        ).values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    messages_queue(released + due)
    return {
        "events": len(missed),
        "decided": decided,
        "released": len(released),
        "requeued": len(due),
        "lost": lost,
    }


# ---------------------------------------------------------------------------
# Opt-outs
# ---------------------------------------------------------------------------


@transaction.atomic
def notification_opt_out_create(
    *, channel: str, address: str, source: str = "dashboard"
) -> NotificationOptOut:
    """No more messages to this address on this channel, including those waiting."""
    normalised = address_normalise(channel, address)
    opt_out, _ = NotificationOptOut.objects.get_or_create(
        channel=channel, address=normalised, defaults={"source": source}
    )
    Message.objects.filter(
        channel=channel,
        recipient=normalised,
        status__in=[S.SCHEDULED, S.QUEUED, S.RETRYING],
    ).update(
        status=S.SUPPRESSED, reason="the recipient opted out", updated_at=timezone.now()
    )
    return opt_out


@transaction.atomic
def customer_opt_out(
    *, shipment_id: int, channels: list[str]
) -> list[NotificationOptOut]:
    """The customer of a shipment asks for no more messages on these channels
    (for every shipment sent to the same address); one event."""
    shipment = (
        Shipment.objects.select_for_update(of=("self",))
        .select_related(
            "consignee",
            "destination",
            "original_shipment__consignee",
            "original_shipment__destination",
        )
        .get(pk=shipment_id)
    )
    opt_outs = []
    for channel in channels:
        recipient = recipient_for(
            shipment=shipment, role=RecipientRole.CONSIGNEE, channel=channel
        )
        if recipient.address:
            opt_outs.append(
                notification_opt_out_create(
                    channel=channel, address=recipient.address, source="customer"
                )
            )
    event_record(
        shipment=shipment,
        type="customer.opted_out",
        source="customer",
        payload={"channels": sorted({o.channel for o in opt_outs})},
    )
    return opt_outs
