"""Webhooks against a real HTTP receiver: signed, retried with back-off, logged."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from shipments.services import shipment_cancel
from tests import factories
from tracking.models import WebhookDelivery, WebhookEndpoint
from tracking.relay import outbox_relay_run
from tracking.webhooks import (
    backoff_seconds,
    webhook_deliveries_retry_due,
    webhook_signature_valid,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def receiver():
    """A local HTTP server: answers 500 to the first request, then 200."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"headers": dict(self.headers), "body": body})
            self.send_response(500 if len(received) == 1 else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


def test_status_change_is_delivered_signed_after_a_retry(hubs, receiver):
    url, received = receiver
    created = factories.shipment_make()
    shipment = created.shipment
    endpoint = WebhookEndpoint.objects.create(shipper=shipment.shipper, url=url)
    other_shipper = WebhookEndpoint.objects.create(shipper=factories.party_make(), url=url)
    outbox_relay_run()  # the creation event: queued for this shipper only

    shipment_cancel(shipment_id=shipment.pk, reason="customer asked")
    outbox_relay_run()

    deliveries = WebhookDelivery.objects.filter(endpoint=endpoint).order_by("id")
    assert [d.event_type for d in deliveries] == ["shipment.created", "shipment.cancelled"]
    assert not WebhookDelivery.objects.filter(endpoint=other_shipper).exists()
    cancelled = deliveries.get(event_type="shipment.cancelled")

    from tracking.webhooks import webhook_delivery_attempt

    first = webhook_delivery_attempt(delivery_id=cancelled.pk)
    assert first.status == "pending" and first.attempts == 1 and first.last_status_code == 500
    assert first.next_attempt_at - timezone.now() > timedelta(seconds=backoff_seconds(1) - 5)
    assert webhook_delivery_attempt(delivery_id=cancelled.pk) is None  # not due yet

    webhook_deliveries_retry_due(now=timezone.now() + timedelta(hours=1))
    cancelled.refresh_from_db()
    assert cancelled.status == "delivered" and cancelled.attempts == 2 and cancelled.last_status_code == 200

    deliveries_seen = [json.loads(r["body"]) for r in received]
    last = received[-1]
    assert webhook_signature_valid(
        secret=endpoint.secret, header=last["headers"]["Allmile-Signature"], body=last["body"]
    )
    assert not webhook_signature_valid(
        secret="wrong", header=last["headers"]["Allmile-Signature"], body=last["body"]
    )
    assert not webhook_signature_valid(
        secret=endpoint.secret, header=last["headers"]["Allmile-Signature"], body=last["body"] + b" "
    )
    payload = deliveries_seen[-1]
    assert payload["event"] == "shipment.cancelled"
    assert payload["shipment"]["reference"] == shipment.reference
    assert payload["shipment"]["status"] == "cancelled"
    assert "Camille" not in json.dumps(payload) and "+33" not in json.dumps(payload)


def test_a_dead_endpoint_gives_up_after_the_last_attempt(hubs):
    shipment = factories.shipment_make().shipment
    endpoint = WebhookEndpoint.objects.create(shipper=shipment.shipper, url="http://127.0.0.1:1/nothing")
    outbox_relay_run()
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    later = timezone.now()
    for _ in range(10):
        later += timedelta(hours=1)
        webhook_deliveries_retry_due(now=later)
        WebhookDelivery.objects.filter(pk=delivery.pk, status="pending").update(next_attempt_at=later)
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == 8
    assert "ConnectError" in delivery.last_error
