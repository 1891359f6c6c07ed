"""Which event is which customer moment, quiet-hour arithmetic, languages; and
the two moments a journey without trouble never shows: a failed attempt (with
what happens next) and the start of a return."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from dispatch.failure_policy import shipment_return_create
from notifications.models import Trigger
from notifications.triggers import language_pick, quiet_hours_end, trigger_for
from shipments.models import Party, Shipment
from shipments.services import leg_transition
from tests import factories
from tests.notifications.journey import JOURNEY, leg_of, process_in_process, step

PARIS = ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(
    ("event_type", "mile", "is_return", "expected"),
    [
        ("leg.departed", "first", False, Trigger.PICKED_UP),
        ("leg.completed", "first", False, Trigger.ARRIVED_AT_HUB),
        (
            "leg.arrived",
            "first",
            False,
            None,
        ),  # the hand-over follows: one message per hub
        ("leg.departed", "middle", False, Trigger.DEPARTED_HUB),
        ("leg.completed", "middle", False, Trigger.ARRIVED_AT_HUB),
        ("leg.departed", "last", False, Trigger.OUT_FOR_DELIVERY),
        ("leg.completed", "last", False, Trigger.DELIVERED),
        ("leg.failed", "last", False, Trigger.ATTEMPT_FAILED),
        (
            "leg.failed",
            "first",
            False,
            None,
        ),  # a missed pickup is the shipper's business
        ("shipment.at_risk", "", False, Trigger.AT_RISK),
        ("shipment.recovered", "", False, None),
        ("eta.updated", "", False, Trigger.ETA_MOVED),
        ("shipment.created", "", False, None),
        ("shipment.created", "", True, Trigger.RETURN_STARTED),
        ("leg.departed", "return", True, None),
        ("shipment.at_risk", "", True, None),
        ("notification.sent", "", False, None),
        ("customer.rescheduled", "last", False, None),
    ],
)
def test_events_map_to_customer_moments(event_type, mile, is_return, expected):
    assert (
        trigger_for(event_type=event_type, payload={"mile": mile}, is_return=is_return)
        == expected
    )


@pytest.mark.parametrize(
    ("clock", "start", "end", "expected"),
    [
        (
            (23, 10),
            (21, 0),
            (8, 0),
            datetime(2026, 3, 29, 8, 0, tzinfo=PARIS),
        ),  # over midnight and DST
        ((2, 0), (21, 0), (8, 0), datetime(2026, 3, 28, 8, 0, tzinfo=PARIS)),
        ((8, 0), (21, 0), (8, 0), None),  # the end is not quiet
        ((20, 59), (21, 0), (8, 0), None),
        ((12, 30), (12, 0), (14, 0), datetime(2026, 3, 28, 14, 0, tzinfo=PARIS)),
        ((12, 30), (12, 0), (12, 0), None),  # equal ends: no quiet hours
    ],
)
def test_quiet_hours_end_at_the_next_wall_clock_end(clock, start, end, expected):
    local_now = datetime(2026, 3, 28, *clock, tzinfo=PARIS)

    assert (
        quiet_hours_end(local_now=local_now, start=time(*start), end=time(*end))
        == expected
    )


def test_the_morning_after_a_dst_change_keeps_its_wall_clock():
    # The clocks go forward that night: 08:00 is UTC+2, 7 h 50 min after 23:10 UTC+1.
    evening = datetime(2026, 3, 28, 23, 10, tzinfo=PARIS)
    end = quiet_hours_end(local_now=evening, start=time(21), end=time(8))
    assert end.utcoffset().total_seconds() == 7200
    elapsed = end.astimezone(UTC) - evening.astimezone(UTC)
    assert elapsed.total_seconds() == 7 * 3600 + 50 * 60


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("fr", "fr"),
        ("FR", "fr"),
        ("fr-FR", "fr"),
        ("fr_BE", "fr"),
        ("de", "en"),
        ("", "en"),
        (" en ", "en"),
    ],
)
def test_the_recipients_language_falls_back_to_english(requested, expected):
    assert language_pick(requested, ["en", "fr"]) == expected


@pytest.mark.django_db
def test_a_failed_attempt_says_what_happens_next(hubs, daytime_rules, smtp, sms_api):
    shipment = factories.shipment_make().shipment
    Party.objects.filter(pk=shipment.consignee_id).update(
        language="fr", phone="+33612345678"
    )
    for mile, status in JOURNEY[:8]:
        step(shipment, mile, status)
    process_in_process(shipment)
    sent_before = len(smtp.messages)

    step(shipment, "last", "failed", reason="not_home")
    leg_transition(
        leg_id=leg_of(shipment, "last").pk,
        to="planned",
        source="system",
        event_type="leg.rescheduled",
    )
    process_in_process(shipment)

    email = smtp.wait_for(sent_before + 1)[-1]
    assert (
        email["Subject"]
        == f"Nous n'avons pas pu livrer votre colis {shipment.reference}"
    )
    assert "Nous réessaierons lors de la prochaine tournée" in email.get_content()
    assert "retirer le colis à MCO-HUB" in email.get_content()
    sms = sms_api.calls[-1].form["Body"]
    assert "Nouvel essai prévu" in sms
    assert "/t/" in sms


@pytest.mark.django_db
def test_a_return_tells_the_customer_it_goes_back_to_the_shipper(
    hubs, daytime_rules, smtp
):
    shipment = factories.shipment_make().shipment
    Party.objects.filter(pk=shipment.consignee_id).update(email="camille@example.test")
    for mile, status in JOURNEY[:8]:
        step(shipment, mile, status)
    step(shipment, "last", "failed", reason="refused")
    process_in_process(shipment)
    sent_before = len(smtp.messages)

    returned = shipment_return_create(
        shipment_id=shipment.pk, hub_id=shipment.destination_hub_id, reason="refused"
    )
    process_in_process(Shipment.objects.get(pk=returned.pk))

    email = smtp.wait_for(sent_before + 1)[-1]
    assert (
        email["To"] == "camille@example.test"
    )  # the customer, not the return's consignee (the shipper)
    assert (
        email["Subject"]
        == f"Your parcel {shipment.reference} is going back to {shipment.shipper.name}"
    )
    assert f"(return {returned.reference})" in email.get_content()
