"""E-mail and SMS against real servers on loopback: what goes on the wire,
provider errors, retries with back-off, and the delivery log's reasons."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from notifications.models import Message
from notifications.services import MAX_ATTEMPTS, notification_send
from shipments.models import Party, Shipment, ShipmentEvent
from tests import factories
from tests.notifications.journey import link_token, process_in_process, step

pytestmark = pytest.mark.django_db

S = Message.Status


@pytest.fixture
def sms_only(daytime_rules):
    """Only the out-for-delivery SMS rule is active."""
    for name, rule in daytime_rules.items():
        rule.is_active = name == "Out for delivery (SMS)"
        rule.save(update_fields=["is_active"])
    return daytime_rules["Out for delivery (SMS)"]


@pytest.fixture
def email_only(daytime_rules):
    for name, rule in daytime_rules.items():
        rule.is_active = name == "Picked up (e-mail)"
        rule.save(update_fields=["is_active"])
    return daytime_rules["Picked up (e-mail)"]


def _out_for_delivery_message(hubs) -> Message:
    """A shipment driven to "out for delivery"; its SMS decided, not yet sent."""
    shipment = factories.shipment_make().shipment
    Party.objects.filter(pk=shipment.consignee_id).update(phone="+33 6 12 34 56 78")
    shipment = Shipment.objects.get(pk=shipment.pk)
    for mile in ("first", "middle"):
        for status in ("assigned", "in_transit", "completed"):
            step(shipment, mile, status)
    step(shipment, "last", "assigned")
    step(shipment, "last", "in_transit")
    from notifications.services import notifications_decide_for_event

    event = (
        ShipmentEvent.objects.filter(shipment=shipment, type="leg.departed")
        .order_by("-id")
        .first()
    )
    (message,) = notifications_decide_for_event(event_id=event.pk)
    assert message.status == S.QUEUED
    return message


def _row(message: Message) -> Message:
    return Message.objects.get(pk=message.pk)


def test_an_sms_is_posted_like_the_common_sms_apis(hubs, sms_only, sms_api):
    message = _out_for_delivery_message(hubs)

    outcome = notification_send(message_id=message.pk)

    assert outcome.status == S.SENT
    (call,) = sms_api.calls
    assert call.path == "/2010-04-01/Accounts/AC123/Messages.json"
    assert call.authorization == ("AC123", "secret-token")
    assert call.form["To"] == "+33612345678"
    assert call.form["From"] == "+33700000000"
    assert message.shipment.reference in call.form["Body"]
    assert link_token(call.form["Body"])
    row = _row(message)
    assert (row.status, row.provider_message_id, row.attempts) == (S.SENT, "SM0001", 1)


def test_provider_errors_are_retried_with_back_off_until_sent(hubs, sms_only, sms_api):
    sms_api.script = [
        (503, {"code": 20503, "message": "Service unavailable"}),
        (429, {"code": 20429, "message": "Too many requests"}),
    ]
    message = _out_for_delivery_message(hubs)
    before = timezone.now()

    first = notification_send(message_id=message.pk)
    row = _row(message)
    assert (first.status, first.retry_in_seconds) == (S.RETRYING, 30)
    assert row.status == S.RETRYING
    assert "HTTP 503" in row.reason
    assert "Service unavailable" in row.reason
    assert row.next_attempt_at >= before + timedelta(seconds=30)
    # Not due yet: an early duplicate of the retry task does nothing.
    assert notification_send(message_id=message.pk) is None

    second = notification_send(message_id=message.pk, now=row.next_attempt_at)
    assert (second.status, second.retry_in_seconds) == (S.RETRYING, 60)
    assert "HTTP 429" in _row(message).reason

    third = notification_send(message_id=message.pk, now=_row(message).next_attempt_at)
    assert third.status == S.SENT
    row = _row(message)
    assert (row.status, row.attempts, row.reason) == (S.SENT, 3, "")
    assert len(sms_api.calls) == 3
    assert (
        ShipmentEvent.objects.filter(
            shipment=row.shipment, type="notification.sent"
        ).count()
        == 1
    )


def test_a_rejected_number_fails_at_once_with_the_providers_reason(
    hubs, sms_only, sms_api
):
    sms_api.script = [
        (
            400,
            {"code": 21211, "message": "The 'To' number is not a valid phone number."},
        )
    ]
    message = _out_for_delivery_message(hubs)

    outcome = notification_send(message_id=message.pk)

    row = _row(message)
    assert outcome.status == S.FAILED
    assert row.status == S.FAILED
    assert row.reason == (
        "SMS provider HTTP 400 code 21211: The 'To' number is not a valid phone number."
    )
    assert len(sms_api.calls) == 1
    (failed,) = ShipmentEvent.objects.filter(
        shipment=row.shipment, type="notification.failed"
    )
    assert failed.payload["reason"] == row.reason
    assert failed.payload["channel"] == "sms"


def test_a_provider_that_keeps_failing_ends_failed_after_the_last_attempt(
    hubs, sms_only, sms_api
):
    sms_api.script = [(500, {"message": "Internal error"})] * MAX_ATTEMPTS
    message = _out_for_delivery_message(hubs)

    outcomes = []
    now = timezone.now()
    for _ in range(MAX_ATTEMPTS + 1):
        outcome = notification_send(message_id=message.pk, now=now)
        outcomes.append(outcome.status if outcome else None)
        now = (_row(message).next_attempt_at or now) + timedelta(seconds=1)

    assert outcomes == [S.RETRYING] * (MAX_ATTEMPTS - 1) + [S.FAILED, None]
    row = _row(message)
    assert (row.status, row.attempts) == (S.FAILED, MAX_ATTEMPTS)
    assert "HTTP 500" in row.reason
    assert len(sms_api.calls) == MAX_ATTEMPTS


def test_a_provider_that_does_not_answer_in_time_is_retried(
    hubs, sms_only, sms_api, settings
):
    settings.SMS_TIMEOUT_SECONDS = 0.3
    sms_api.delay_seconds = 1.0
    message = _out_for_delivery_message(hubs)

    outcome = notification_send(message_id=message.pk)

    assert outcome.status == S.RETRYING
    assert "timed out" in _row(message).reason


def test_sms_without_a_provider_configured_fails_with_that_reason(
    hubs, sms_only, settings
):
    settings.SMS_API_BASE_URL = ""
    message = _out_for_delivery_message(hubs)

    notification_send(message_id=message.pk)

    row = _row(message)
    assert (row.status, row.reason) == (
        S.FAILED,
        "SMS is not configured (SMS_API_BASE_URL)",
    )


def test_a_refused_mailbox_fails_with_the_servers_reply(hubs, email_only, smtp):
    smtp.inbox.refuse["nobody@example.test"] = "550 5.1.1 No such user here"
    shipment = factories.shipment_make().shipment
    Party.objects.filter(pk=shipment.consignee_id).update(email="Nobody@Example.test")

    step(shipment, "first", "assigned")
    step(shipment, "first", "in_transit")
    (message,) = process_in_process(shipment)

    row = _row(message)
    assert row.recipient == "nobody@example.test"
    assert row.status == S.FAILED
    assert "550" in row.reason
    assert "No such user" in row.reason
    assert smtp.messages == []


def test_an_unreachable_mail_server_is_retried(hubs, email_only, smtp, settings):
    settings.EMAIL_PORT = smtp.port
    smtp.stop()
    shipment = factories.shipment_make().shipment

    step(shipment, "first", "assigned")
    step(shipment, "first", "in_transit")
    (message,) = process_in_process(shipment)

    row = _row(message)
    assert row.status == S.RETRYING
    assert "unreachable" in row.reason
    smtp.start()  # the server is back: the retry goes through
    assert (
        notification_send(message_id=message.pk, now=row.next_attempt_at).status
        == S.SENT
    )
    assert len(smtp.wait_for(1)) == 1


def test_a_send_abandoned_by_a_killed_worker_is_taken_over_after_its_lease(
    hubs, sms_only, sms_api
):
    """A worker killed between its claim and the send leaves the row "sending";
    the redelivered task waits out the lease, then sends it, once."""
    from notifications.services import SENDING_LEASE

    message = _out_for_delivery_message(hubs)
    claimed_at = timezone.now()
    Message.objects.filter(pk=message.pk).update(
        status=S.SENDING, attempts=1, updated_at=claimed_at
    )

    early = notification_send(message_id=message.pk, now=claimed_at + timedelta(seconds=5))
    assert early.status == S.SENDING
    assert 0 < early.retry_in_seconds <= SENDING_LEASE.total_seconds()
    assert sms_api.calls == []

    late = notification_send(message_id=message.pk, now=claimed_at + SENDING_LEASE)
    assert late.status == S.SENT
    assert len(sms_api.calls) == 1
    assert notification_send(message_id=message.pk, now=claimed_at + 2 * SENDING_LEASE) is None
    assert len(sms_api.calls) == 1
