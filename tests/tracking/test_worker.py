"""With Redis, a real Celery worker relays the outbox and re-times routes."""

from __future__ import annotations

import time
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone
from rest_framework.test import APIClient

from routing.models import RouteStop
from shipments.outbox import DASHBOARD_GROUP
from shipments.services import tracking_link_reissue
from tests import factories
from tests.tracking.builders import legs_of, route_make
from tests.tracking.stack import celery_worker
from tracking.models import EtaRecord, RouteForecast

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker):
    with celery_worker(name="worker-tracking") as process:
        yield process


def test_a_committed_event_is_relayed_by_the_worker(worker, hubs):
    shipment = factories.shipment_make().shipment
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(DASHBOARD_GROUP, channel)

    started = time.monotonic()
    tracking_link_reissue(shipment_id=shipment.pk)  # commits; the kick queues the relay task

    async def wait_for_it():
        import asyncio

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            batch = await asyncio.wait_for(layer.receive(channel), timeout=10)
            for message in batch["messages"]:
                if message["payload"].get("event_type") == "tracking_link.reissued":
                    return message
        return None

    message = async_to_sync(wait_for_it)()
    assert message is not None
    assert message["shipment_id"] == shipment.pk and message["seq"] >= 1
    assert time.monotonic() - started < 10


def test_a_ping_through_the_driver_api_re_times_the_route_on_the_worker(worker, hubs):
    dc, monaco = hubs
    driver = factories.driver_make(monaco)
    shipments = [factories.shipment_make().shipment for _ in range(2)]
    route = route_make(
        hub=monaco, mile="last", driver=driver, planned_start=timezone.now(),
        stops=[("delivery", s.destination, [legs_of(s)["last"]]) for s in shipments],
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {driver.user.auth_token.key}")

    response = client.post(
        "/api/v1/driver/pings/",
        {"device_id": "phone-1", "pings": [{
            "latitude": monaco.location.latitude, "longitude": monaco.location.longitude,
            "accuracy": 10, "recorded_at": timezone.now().isoformat(),
        }]},
        format="json",
        HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()),
    )
    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == 1

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not RouteForecast.objects.filter(route=route).exists():
        time.sleep(0.2)
    forecast = RouteForecast.objects.get(route=route)
    assert forecast.last_ping_at is not None
    etas = list(RouteStop.objects.filter(route=route).order_by("sequence").values_list("eta", flat=True))
    assert all(etas) and etas == sorted(etas)
    assert EtaRecord.objects.filter(stop__route=route).count() == 2
