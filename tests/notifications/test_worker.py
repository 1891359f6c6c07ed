"""The whole pipeline on a real Celery worker: the after-commit signal queues
the decision, the worker sends to a real SMTP server and SMS API, retries
provider errors with back-off, and the sweep catches an event whose signal
never came."""

from __future__ import annotations

import pytest

from config.celery import app as celery_app
from notifications.models import Message, NotificationRule
from notifications.receivers import event_committed
from notifications.tasks import notification_sweep_task
from shipments.events import shipment_event_committed
from shipments.models import Party, Shipment, ShipmentEvent
from tests import factories
from tests.notifications.journey import JOURNEY, link_token, step
from tests.notifications.servers import wait_until
from tests.notifications.worker import Worker

pytestmark = [
    pytest.mark.worker,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def worker(tmp_path, smtp, sms_api, daytime_rules):
    celery_app.control.purge()  # nothing left over from other tests
    started = Worker(
        tmp_path,
        extra_env={
            "NOTIFICATIONS_TEST_SMTP_PORT": str(smtp.port),
            "NOTIFICATIONS_TEST_SMS_URL": sms_api.base_url,
        },
    ).start()
    yield started
    started.stop()


def _shipment(language: str = "fr") -> Shipment:
    shipment = factories.shipment_make().shipment
    Party.objects.filter(pk=shipment.consignee_id).update(
        language=language, email="camille@example.test", phone="+33612345678"
    )
    return Shipment.objects.get(pk=shipment.pk)


def test_a_journey_reaches_the_customer_through_the_worker(
    hubs, worker, smtp, sms_api, api_client
):
    shipment = _shipment("fr")

    for mile, status in JOURNEY:
        step(shipment, mile, status)

    received = smtp.wait_for(6, timeout_seconds=60)
    assert [m["Subject"] for m in received] == [
        f"Votre colis {shipment.reference} de {shipment.shipper.name} est en route",
        f"Votre colis {shipment.reference} est arrivé à NCE-DC",
        f"Votre colis {shipment.reference} a quitté NCE-DC",
        f"Votre colis {shipment.reference} est arrivé à MCO-HUB",
        f"Votre colis {shipment.reference} est en cours de livraison",
        f"Votre colis {shipment.reference} a été livré",
    ]
    token = link_token(received[-1].get_content())
    assert api_client.get(f"/api/v1/track/{token}/").json()["status"] == "delivered"
    wait_until(lambda: len(sms_api.calls) == 1, 30, what="the out-for-delivery SMS")
    wait_until(
        lambda: Message.objects.filter(shipment=shipment, status="sent").count() == 7,
        30,
        what="7 messages logged as sent",
    )
    assert (
        ShipmentEvent.objects.filter(
            shipment=shipment, type="notification.sent"
        ).count()
        == 7
    )


def test_the_worker_retries_a_failing_sms_provider_until_it_accepts(
    hubs, worker, sms_api
):
    NotificationRule.objects.exclude(name="Out for delivery (SMS)").update(
        is_active=False
    )
    sms_api.script = [(503, {"message": "busy"}), (503, {"message": "busy"})]
    shipment = _shipment("en")

    for mile, status in JOURNEY[:8]:
        step(shipment, mile, status)

    message = wait_until(
        lambda: Message.objects.filter(shipment=shipment, status="sent").first(),
        40,
        what="the SMS sent after two provider errors",
    )
    assert message.attempts == 3
    assert len(sms_api.calls) == 3
    assert message.channel == "sms"


def test_the_sweep_decides_an_event_whose_signal_was_lost(hubs, worker, smtp):
    NotificationRule.objects.exclude(name="Picked up (e-mail)").update(is_active=False)
    shipment = _shipment("en")
    step(shipment, "first", "assigned")
    # The process "dies" between commit and signal: no receiver hears the event.
    shipment_event_committed.disconnect(dispatch_uid="notifications.events")
    try:
        step(shipment, "first", "in_transit")
    finally:
        shipment_event_committed.connect(
            event_committed, dispatch_uid="notifications.events"
        )
    assert Message.objects.filter(shipment=shipment).count() == 0

    notification_sweep_task.delay()

    (email,) = smtp.wait_for(1, timeout_seconds=30)
    assert "is on its way" in email["Subject"]
    wait_until(
        lambda: Message.objects.filter(shipment=shipment, status="sent").count() == 1,
        20,
        what="the message logged as sent",
    )
