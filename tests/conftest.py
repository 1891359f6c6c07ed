"""Shared fixtures. The suite runs on the real PostgreSQL and Redis (config.settings.test)."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from django.core.signals import got_request_exception
from rest_framework.test import APIClient

from tests import factories


@pytest.fixture(scope="session", autouse=True)
def _clean_redis():
    """The test Redis database starts empty (stale channel-layer and broker keys)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield
    client.close()


@pytest.fixture(autouse=True)
def _no_request_answers_500():
    """Fail any test during which a request raised an unhandled exception (a 500)."""
    crashes = []

    def record(sender, request=None, **kwargs):
        crashes.append(getattr(request, "path", "?"))

    got_request_exception.connect(record, weak=False)
    yield
    got_request_exception.disconnect(record)
    assert not crashes, f"requests answered 500: {crashes}"


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def hubs(db):
    return factories.hub_network()


@pytest.fixture
def dispatcher(db):
    return factories.dispatcher_make()


@pytest.fixture
def dispatcher_client(dispatcher) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {dispatcher.auth_token.key}")
    return client


@pytest.fixture
def driver(hubs):
    return factories.driver_make(hubs[1])


@pytest.fixture
def driver_client(driver) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {driver.user.auth_token.key}")
    return client
