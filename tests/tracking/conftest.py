"""Fixtures for the tracking tests: real PostgreSQL, real Redis channel layer."""

from __future__ import annotations

import pytest
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from django.db import OperationalError, connection

from shipments.services import tracking_link_reissue
from tests import factories


def events_emit(shipment_id: int, count: int) -> None:
    """Write ``count`` shipment events through a real service (each its own
    transaction, each with its outbox row)."""
    for _ in range(count):
        tracking_link_reissue(shipment_id=shipment_id, source="system")


@pytest.fixture(scope="session", autouse=True)
def _stray_connections_closed(django_db_setup, django_db_blocker):
    """Consumers run ORM calls in executor threads that keep their connections;
    close them before pytest-django drops the test database."""
    yield
    try:
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
    except OperationalError:  # the test database is already gone: nothing to close
        pass


@pytest.fixture(autouse=True)
def _relay_steered_by_the_tests(settings):
    """The tests run the relay themselves; no background relay in this process."""
    settings.TRACKING_WEB_RELAY = False


@pytest.fixture
def ws_app():
    """The WebSocket routes without the session middleware: tests put the user
    in the scope themselves."""
    from tracking.routing import websocket_urlpatterns

    return URLRouter(websocket_urlpatterns)


@pytest.fixture
def shipment(hubs):
    return factories.shipment_make().shipment


@pytest.fixture
def channel_layer():
    layer = get_channel_layer()
    assert type(layer).__name__ == "RedisChannelLayer", "these tests need the real Redis layer"
    return layer
