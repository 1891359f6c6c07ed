"""The e-mails of a whole journey reach a real SMTP server, in order, in the
recipient's language, each with a tracking link that opens the shipment."""

from __future__ import annotations

import pytest

from notifications.models import Message
from shipments.models import Party, Shipment, ShipmentEvent
from tests import factories
from tests.notifications.journey import JOURNEY, link_token, process_in_process, step

pytestmark = pytest.mark.django_db

SUBJECTS_EN = [
    "is on its way",
    "has arrived at NCE-DC",
    "has left NCE-DC",
    "has arrived at MCO-HUB",
    "is out for delivery",
    "has been delivered",
]
SUBJECTS_FR = [
    "est en route",
    "est arrivé à NCE-DC",
    "a quitté NCE-DC",
    "est arrivé à MCO-HUB",
    "est en cours de livraison",
    "a été livré",
]


def _shipment(language: str) -> Shipment:
    created = factories.shipment_make()
    Party.objects.filter(pk=created.shipment.consignee_id).update(
        language=language, email="camille@example.test", phone="+33 6 12 34 56 78"
    )
    return Shipment.objects.get(pk=created.shipment.pk)


@pytest.mark.parametrize(
    ("language", "subjects"), [("en", SUBJECTS_EN), ("fr-FR", SUBJECTS_FR)]
)
def test_journey_emails_arrive_in_order_in_the_recipients_language(
    language, subjects, hubs, daytime_rules, smtp, sms_api, fresh_limits
):
    shipment = _shipment(language)

    for mile, status in JOURNEY:
        step(shipment, mile, status)
        process_in_process(shipment)

    received = smtp.wait_for(len(subjects))
    assert [m["To"] for m in received] == ["camille@example.test"] * len(subjects)
    for message, expected in zip(received, subjects, strict=True):
        assert shipment.reference in message["Subject"]
        assert expected in message["Subject"]
    greeting = (
        "Hello Camille Martin," if language == "en" else "Bonjour Camille Martin,"
    )
    assert all(m.get_content().startswith(greeting) for m in received)
    # One SMS: out for delivery (the default SMS rules are out for delivery and failure).
    assert len(sms_api.calls) == 1
    assert sms_api.calls[0].form["To"] == "+33612345678"


def test_every_journey_email_carries_a_link_that_opens_this_shipment(
    hubs, daytime_rules, smtp, sms_api, api_client, fresh_limits
):
    shipment = _shipment("en")
    other = _shipment("en")

    for mile, status in JOURNEY:
        step(shipment, mile, status)
        process_in_process(shipment)

    received = smtp.wait_for(6)
    tokens = {link_token(message.get_content()) for message in received}
    assert len(tokens) == 1
    answer = api_client.get(f"/api/v1/track/{tokens.pop()}/")
    assert answer.status_code == 200
    assert answer.json()["reference"] == shipment.reference
    assert answer.json()["reference"] != other.reference


def test_sent_messages_are_logged_and_on_the_shipment_timeline(
    hubs, daytime_rules, smtp, sms_api, fresh_limits
):
    shipment = _shipment("en")

    for mile, status in JOURNEY[:3]:
        step(shipment, mile, status)
        process_in_process(shipment)

    smtp.wait_for(2)
    log = list(Message.objects.filter(shipment=shipment).order_by("id"))
    assert [(m.rule.trigger, m.status) for m in log] == [
        ("picked_up", "sent"),
        ("arrived_at_hub", "sent"),
    ]
    assert all(m.provider_message_id.startswith("<") and m.sent_at for m in log)
    timeline = list(
        ShipmentEvent.objects.filter(
            shipment=shipment, type="notification.sent"
        ).order_by("id")
    )
    assert [e.payload["message_id"] for e in timeline] == [m.pk for m in log]
    assert timeline[0].payload["to"] == "c***@example.test"
