"""Rules in time: at risk once, no spam on recovery or jitter, quiet hours,
opt-outs. Delays come from tracking's real delay propagation."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import pytest
from django.utils import timezone

from notifications.models import Message, NotificationRule
from notifications.services import (
    notification_opt_out_create,
    notification_send,
    notification_sweep_run,
)
from shipments.models import Party, Shipment, ShipmentEvent
from tests import factories
from tests.notifications.journey import decide_pending
from tests.tracking.builders import chain_plan, legs_of, local_at
from tracking.propagation import shipment_forecast_refresh

pytestmark = pytest.mark.django_db

S = Message.Status


@pytest.fixture
def planned(hubs):
    """Grasse → Monaco tomorrow: first mile 08:00-09:00 into nce-dc, line-haul
    12:00-13:00 (cut-offs 12:00 and 20:00), last mile 14:00-15:00, promised 16:00."""
    shipment = factories.shipment_make().shipment
    Party.objects.filter(pk=shipment.consignee_id).update(email="camille@example.test")
    chain_plan(
        shipment,
        day=1,
        first=((8, 0), (9, 0)),
        middle=((12, 0), (13, 0)),
        last=((14, 0), (15, 0)),
        promised=(16, 0),
    )
    return Shipment.objects.get(pk=shipment.pk)


def _first_mile_eta(shipment: Shipment, hh: int, mm: int = 0):
    """The first-mile route reports the parcel at the hub at hh:mm."""
    leg = legs_of(shipment)["first"]
    return shipment_forecast_refresh(
        shipment_id=shipment.pk, leg_etas={leg.pk: local_at(1, hh, mm)}
    )


def _last_mile_eta(shipment: Shipment, hh: int, mm: int = 0):
    leg = legs_of(shipment)["last"]
    return shipment_forecast_refresh(
        shipment_id=shipment.pk, leg_etas={leg.pk: local_at(1, hh, mm)}
    )


def _of_rule(shipment: Shipment, name: str):
    return Message.objects.filter(shipment=shipment, rule__name=name).order_by("id")


def _told(message: Message) -> datetime:
    """The ETA a message told the customer."""
    return datetime.fromisoformat(message.facts["eta"])


def _daytime(hh: int = 14) -> datetime:
    """A decision time outside every default quiet window (today, local)."""
    return local_at(0, hh)


def test_a_first_mile_delay_that_puts_the_promise_at_risk_sends_one_message(
    planned, rules, smtp
):
    # The parcel reaches the DC at 12:14: ready 12:44, after the 12:00 line-haul.
    outlook = _first_mile_eta(planned, 12, 14)
    assert outlook.is_at_risk is True

    decided = decide_pending(planned, now=_daytime())

    (message,) = decided
    assert message.rule.name == "At risk (e-mail)"
    assert message.status == S.QUEUED
    assert _told(message) == local_at(1, 22, 30)
    assert "may arrive late" in message.subject
    notification_send(message_id=message.pk)
    (email,) = smtp.wait_for(1)
    body = email.get_content()
    assert "promised" in body
    assert "/t/" in body


def test_recovery_and_a_flapping_risk_flag_do_not_spam(planned, rules, smtp):
    now = _daytime()
    _first_mile_eta(planned, 12, 14)  # at risk
    decide_pending(planned, now=now)
    _first_mile_eta(planned, 12, 20)  # later still, same line-haul: nothing new
    _first_mile_eta(planned, 9, 0)  # recovered
    decide_pending(planned, now=now + timedelta(minutes=10))
    _first_mile_eta(planned, 12, 30)  # at risk again
    decide_pending(planned, now=now + timedelta(minutes=20))
    _first_mile_eta(planned, 9, 5)  # recovered again
    decide_pending(planned, now=now + timedelta(minutes=30))

    types = list(
        ShipmentEvent.objects.filter(
            shipment=planned, type__in=["shipment.at_risk", "shipment.recovered"]
        )
        .order_by("id")
        .values_list("type", flat=True)
    )
    assert types == ["shipment.at_risk", "shipment.recovered"] * 2
    at_risk = list(_of_rule(planned, "At risk (e-mail)"))
    assert [(m.status, m.reason) for m in at_risk] == [
        (S.QUEUED, ""),
        (S.SUPPRESSED, "throttled: at most one per 720 min"),
    ]
    # Recovery itself sends nothing (no rule reacts to it).
    assert Message.objects.filter(shipment=planned).count() == 2


def test_a_jittery_eta_sends_at_most_one_message_per_interval(planned, rules):
    rule = rules["ETA moved (e-mail)"]  # more than 30 min, at most one per 60 min
    now = _daytime()
    # Planned 15:00, promised 16:00: these estimates move the ETA but keep the promise.
    for minute, (hh, mm) in enumerate(
        [(15, 40), (15, 0), (15, 45), (14, 20), (15, 35)]
    ):
        _last_mile_eta(planned, hh, mm)
        decide_pending(planned, now=now + timedelta(minutes=minute))

    log = list(_of_rule(planned, rule.name))
    assert [m.status for m in log] == [S.QUEUED, S.SUPPRESSED, S.SUPPRESSED]
    assert _told(log[0]) == local_at(1, 15, 40)
    assert {m.reason for m in log[1:]} == {"throttled: at most one per 60 min"}
    # An hour later a real move (told 15:40, now 14:30) is told again.
    _last_mile_eta(planned, 14, 30)
    (later,) = decide_pending(planned, now=now + timedelta(minutes=61))
    assert later.status == S.QUEUED
    assert _told(later) == local_at(1, 14, 30)


def test_a_small_eta_move_is_not_worth_a_message(planned, rules):
    _last_mile_eta(planned, 15, 20)  # 20 min from the planned 15:00, threshold 30

    assert (
        ShipmentEvent.objects.filter(shipment=planned, type="eta.updated").count() == 1
    )
    assert decide_pending(planned, now=_daytime()) == []


def test_quiet_hours_delay_the_message_until_they_end(planned, rules, smtp):
    late_evening = local_at(0, 23, 10)
    _first_mile_eta(planned, 12, 14)

    (message,) = decide_pending(planned, now=late_evening)

    eight = timezone.make_aware(
        datetime.combine(late_evening.date() + timedelta(days=1), time(8, 0))
    )
    assert message.status == S.SCHEDULED
    assert message.send_after == eight
    assert message.reason == "quiet hours until 08:00"
    assert notification_send(message_id=message.pk) is None  # not before its time

    notification_sweep_run(now=eight - timedelta(minutes=1))
    assert Message.objects.get(pk=message.pk).status == S.SCHEDULED

    counts = notification_sweep_run(now=eight)
    assert counts["released"] == 1
    assert Message.objects.get(pk=message.pk).status == S.QUEUED
    notification_send(message_id=message.pk)
    assert len(smtp.wait_for(1)) == 1


def test_a_newer_message_replaces_one_still_waiting_for_quiet_hours_to_end(
    planned, rules
):
    NotificationRule.objects.filter(name="ETA moved (e-mail)").update(
        min_interval_minutes=0
    )
    night = local_at(0, 23, 0)
    _last_mile_eta(planned, 15, 40)
    (first,) = decide_pending(planned, now=night)
    _last_mile_eta(planned, 14, 20)
    (second,) = decide_pending(planned, now=night + timedelta(minutes=5))

    first.refresh_from_db()
    assert (first.status, first.reason) == (S.SUPPRESSED, "replaced by a newer message")
    assert second.status == S.SCHEDULED
    assert _told(second) == local_at(1, 14, 20)


def test_an_opted_out_recipient_receives_nothing(planned, rules, smtp):
    notification_opt_out_create(
        channel="email", address=" Camille@Example.test ", source="customer"
    )
    _first_mile_eta(planned, 12, 14)

    (message,) = decide_pending(planned, now=_daytime())

    assert (message.status, message.reason) == (S.SUPPRESSED, "the recipient opted out")
    assert message.body == ""
    assert notification_send(message_id=message.pk) is None
    assert smtp.messages == []


def test_opting_out_stops_a_message_already_queued(planned, rules, smtp):
    _first_mile_eta(planned, 12, 14)
    (message,) = decide_pending(planned, now=_daytime())
    assert message.status == S.QUEUED

    notification_opt_out_create(channel="email", address="camille@example.test")

    assert notification_send(message_id=message.pk) is None
    message.refresh_from_db()
    assert (message.status, message.reason) == (S.SUPPRESSED, "the recipient opted out")
    assert smtp.messages == []


def test_an_event_is_decided_once_however_often_it_is_processed(planned, rules):
    _first_mile_eta(planned, 12, 14)
    event = ShipmentEvent.objects.get(shipment=planned, type="shipment.at_risk")
    from notifications.services import notifications_decide_for_event

    first = notifications_decide_for_event(event_id=event.pk, now=_daytime())
    again = notifications_decide_for_event(event_id=event.pk, now=_daytime())
    swept = notification_sweep_run(now=timezone.now())

    assert len(first) == 1
    assert again == []
    assert swept["decided"] == 0
    assert Message.objects.filter(shipment=planned).count() == 1


def test_a_recipient_without_an_address_is_logged_as_not_sent(planned, rules):
    Party.objects.filter(pk=planned.consignee_id).update(email="")
    _first_mile_eta(planned, 12, 14)

    (message,) = decide_pending(planned, now=_daytime())

    assert (message.status, message.reason) == (
        S.SUPPRESSED,
        "no e-mail address for the consignee (the customer)",
    )


def test_a_customer_who_opts_out_on_the_tracking_page_receives_nothing_more(
    hubs, rules, smtp, api_client, fresh_limits
):
    created = factories.shipment_make()
    Party.objects.filter(pk=created.shipment.consignee_id).update(
        email="camille@example.test", phone="+33 6 12 34 56 78"
    )
    chain_plan(
        created.shipment,
        day=1,
        first=((8, 0), (9, 0)),
        middle=((12, 0), (13, 0)),
        last=((14, 0), (15, 0)),
        promised=(16, 0),
    )
    shipment = Shipment.objects.get(pk=created.shipment.pk)

    answer = api_client.post(
        f"/api/v1/track/{created.tracking_token}/opt-out/",
        {"channels": ["email", "sms"]},
        format="json",
    )
    _first_mile_eta(shipment, 12, 14)
    (message,) = decide_pending(shipment, now=_daytime())

    assert answer.status_code == 200
    assert answer.json() == {
        "detail": "We will send you no more e-mails or text messages.",
        "channels": ["email", "sms"],
    }
    assert (message.status, message.reason) == (S.SUPPRESSED, "the recipient opted out")
    assert (
        ShipmentEvent.objects.filter(
            shipment=shipment, type="customer.opted_out", source="customer"
        ).count()
        == 1
    )
    assert smtp.messages == []


def test_an_opt_out_without_channels_is_a_field_error(hubs, api_client, fresh_limits):
    created = factories.shipment_make()

    answer = api_client.post(
        f"/api/v1/track/{created.tracking_token}/opt-out/",
        {"channels": []},
        format="json",
    )

    assert answer.status_code == 400
    assert "channels" in answer.json()
