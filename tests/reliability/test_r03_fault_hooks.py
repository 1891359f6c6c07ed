"""R3's fault hooks (reliability.hooks, .middleware, .layers) do what the
[FAULT] run relies on: an exception after the business write rolls the whole
transaction back, a hold keeps a transaction that has written open and names
its process, and a kill flag fires once."""

from __future__ import annotations

import os
import threading
import time

import pytest
from django.db import connection
from django.db.models.signals import post_save
from django.test import RequestFactory

from reliability.hooks import (
    HOLD_APPLICATION_PREFIX,
    InjectedFault,
    outbox_written_fault,
)
from reliability.layers import kill_armed
from reliability.middleware import (
    Fault,
    FaultRequestMiddleware,
    fault_parse,
    requested_fault,
)
from shipments.models import OutboxMessage, Shipment, ShipmentEvent
from tests import factories


@pytest.fixture
def fault_hook():
    post_save.connect(outbox_written_fault, sender=OutboxMessage, dispatch_uid="test-r03-hook")
    yield
    post_save.disconnect(sender=OutboxMessage, dispatch_uid="test-r03-hook")


def test_the_header_values_parse_strictly():
    assert fault_parse("raise") == Fault("raise")
    assert fault_parse(" Sleep=2.5 ") == Fault("sleep", 2.5)
    assert fault_parse("sleep=0") is None
    assert fault_parse("sleep=999") is None
    assert fault_parse("sleep=soon") is None
    assert fault_parse("") is None


def test_the_middleware_sets_the_fault_for_the_request_only():
    seen = []
    middleware = FaultRequestMiddleware(lambda request: seen.append(requested_fault.get()))
    middleware(RequestFactory().post("/", HTTP_X_RELIABILITY_FAULT="raise"))
    assert seen == [Fault("raise")]
    assert requested_fault.get() is None


@pytest.mark.django_db
def test_an_exception_after_the_outbox_write_rolls_back_the_whole_shipment(hubs, fault_hook):
    token = requested_fault.set(Fault("raise"))
    try:
        with pytest.raises(InjectedFault):
            factories.shipment_make(reference="R3-ROLLED-BACK")
    finally:
        requested_fault.reset(token)

    assert not Shipment.objects.filter(reference="R3-ROLLED-BACK").exists()
    assert ShipmentEvent.objects.count() == 0
    assert OutboxMessage.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_hold_keeps_the_written_transaction_open_and_names_its_process(hubs, fault_hook):
    def create_held():
        token = requested_fault.set(Fault("sleep", 1.5))
        try:
            factories.shipment_make(reference="R3-HELD")
        finally:
            requested_fault.reset(token)
            connection.close()

    writer = threading.Thread(target=create_held)
    writer.start()
    held = None
    deadline = time.monotonic() + 10
    while held is None and time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT application_name, backend_xid IS NOT NULL FROM pg_stat_activity"
                " WHERE application_name LIKE %s AND query LIKE %s",
                [f"{HOLD_APPLICATION_PREFIX}%", "%pg_sleep%"],
            )
            held = cursor.fetchone()
        time.sleep(0.05)
    committed_during_hold = Shipment.objects.filter(reference="R3-HELD").exists()
    writer.join(timeout=20)

    assert held == (f"{HOLD_APPLICATION_PREFIX}{os.getpid()}", True)
    assert not committed_during_hold
    assert Shipment.objects.filter(reference="R3-HELD").count() == 1  # committed after
    assert OutboxMessage.objects.count() == 1


def test_a_kill_flag_fires_once(tmp_path):
    flag = tmp_path / "kill"
    flag.touch()
    assert kill_armed(str(flag)) is True
    assert kill_armed(str(flag)) is False
