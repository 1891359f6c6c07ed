"""Writes in any process wake the web process's relay loop (PostgreSQL NOTIFY)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from shipments.outbox import DASHBOARD_GROUP, outbox_enqueue
from tests.tracking.conftest import events_emit
from tracking.kick import outbox_listen

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def listening():
    """``outbox_listen`` in its thread; yields the event its wake-up sets."""
    woken, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=outbox_listen, args=(woken.set, stop), daemon=True)
    thread.start()
    assert woken.wait(10), "the listener wakes once as it starts listening"
    woken.clear()
    yield woken
    stop.set()
    with connection.cursor() as cursor:  # end its select() at once
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN%%' AND datname = current_database()"
        )
    thread.join(10)
    assert not thread.is_alive()


def test_a_committed_outbox_write_wakes_the_listener(listening, shipment):
    events_emit(shipment.pk, 1)

    assert listening.wait(5)


def _outbox_write_rolled_back() -> None:
    with transaction.atomic():
        outbox_enqueue(type="probe", groups=[DASHBOARD_GROUP], payload={})
        raise RuntimeError("rolled back")


def test_a_rolled_back_outbox_write_wakes_nobody(listening):
    with pytest.raises(RuntimeError):
        _outbox_write_rolled_back()

    assert not listening.wait(1.5)
