"""The write path without Redis (R5): a dead Redis neither fails nor holds a request.

Driver events are stored and answered, the sign-in limit counts in PostgreSQL,
and publishing to a dead broker gives up at once (beat and the sweeps catch up)
instead of holding every request for kombu's default retries. A real
redis-server is started on a free port and SIGKILLed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid

import pytest
from celery import Celery
from django.core.cache import caches
from django.test import override_settings
from django.utils import timezone
from kombu.exceptions import OperationalError
from rest_framework.test import APIClient

from config.celery import app as celery_app
from dispatch.models import DriverEventReceipt
from tests import factories
from tests.reliability import builders

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path):
    """A private, disposable redis-server; the test may SIGKILL it."""
    port = _free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    url = f"redis://127.0.0.1:{port}/0"
    yield url, server
    server.kill()
    server.wait(timeout=10)


@pytest.fixture
def app_on(redis_url):
    """Cache and Celery broker both on the private Redis, restored afterwards."""
    url, server = redis_url
    cache_settings = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 2},
        }
    }
    previous_broker = celery_app.conf.broker_url

    def use_broker(broker_url: str) -> None:
        celery_app.conf.broker_url = broker_url
        celery_app._pool = None  # the connection pools are keyed by broker URL
        celery_app.amqp._producer_pool = None

    with override_settings(CACHES=cache_settings):
        use_broker(url)
        try:
            yield server
        finally:
            use_broker(previous_broker)
            caches["default"].close()


def _dead_broker_app(**conf) -> Celery:
    """A Celery app configured as the project's, but on a port nobody listens on."""
    app = Celery("outage-test", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.broker_url = f"redis://127.0.0.1:{_free_port()}/0"
    app.conf.update(conf)
    return app


def _seconds_to_fail(app: Celery) -> float:
    started = time.monotonic()
    with pytest.raises(OperationalError):
        app.send_task("reliability.probe", args=["never"])
    return time.monotonic() - started


def test_publishing_to_a_dead_broker_gives_up_at_once():
    assert _seconds_to_fail(_dead_broker_app()) < 0.3


def test_kombus_default_retries_would_hold_each_publish():
    # The policy kombu uses without ours (3 retries 0.2 s apart): the control
    # that shows the setting above is what makes a publish fail fast.
    kombu_default = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
    slow = _dead_broker_app(task_publish_retry_policy=kombu_default)
    assert _seconds_to_fail(slow) >= 0.4


def test_the_worker_reconnects_for_as_long_as_redis_is_away():
    assert celery_app.conf.broker_connection_max_retries is None
    options = celery_app.conf.broker_transport_options
    # Above the worker's 1 s BRPOP, or an idle worker would time out its own poll.
    assert options["socket_timeout"] > 1
    assert options["socket_connect_timeout"] <= 2


def _arrived(stop_id: int, seq: int) -> dict:
    return builders.driver_event("arrived", seq, timezone.now().isoformat(), stop_id=stop_id)


@pytest.mark.django_db(transaction=True)
def test_driver_events_are_stored_and_answered_while_redis_is_killed(app_on, hubs):
    driver = factories.driver_make(hubs[1])
    route = builders.published_route(hub=hubs[1], driver=driver, stops=2)
    first, second = builders.delivery_stops(route)
    client = APIClient()
    client.credentials(**{"HTTP_AUTHORIZATION": f"Token {driver.user.auth_token.key}"})

    def post(stop, seq):
        started = time.monotonic()
        response = client.post(
            "/api/v1/driver/events/",
            {"device_id": "phone-1", "events": [_arrived(stop.pk, seq)]},
            format="json",
            HTTP_IDEMPOTENCY_KEY=f"outage-{uuid.uuid4()}",
        )
        return response, time.monotonic() - started

    before, _ = post(first, 1)
    app_on.kill()
    app_on.wait(timeout=10)
    during, seconds = post(second, 2)

    assert before.status_code == 200
    assert during.status_code == 200
    assert during.json()["results"][0]["status"] == "applied"
    assert DriverEventReceipt.objects.filter(driver=driver, status="applied").count() == 2
    # Three publishes follow the commit (relay kick, ETA refresh, maybe a
    # customer message); each gives up at once instead of retrying.
    assert seconds < 1.5


@pytest.mark.django_db(transaction=True)
def test_the_sign_in_limit_holds_in_postgresql_while_redis_is_killed(app_on, driver):
    app_on.kill()
    app_on.wait(timeout=10)
    client = APIClient()
    wrong = {"username": driver.user.username, "password": "not-the-password"}

    answers = [client.post("/api/v1/auth/token/", wrong).status_code for _ in range(11)]

    assert answers[:10] == [400] * 10
    assert answers[10] == 429


def test_the_worker_uses_the_consumer_that_survives_closing_a_lost_connection():
    from celery.utils.imports import symbol_by_name
    from celery.worker.consumer import Consumer

    from config.celery import BrokerLossConsumer

    configured = symbol_by_name(celery_app.conf.worker_consumer)
    assert configured is BrokerLossConsumer
    assert issubclass(configured, Consumer)
