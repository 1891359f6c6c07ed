"""A customer on a phone opens the tracking link, leaves instructions and
reschedules; the dispatcher's shipment page, open on another screen, shows
both as they happen (WebSocket, no reload). Real Chromium, real ASGI server,
real PostgreSQL and Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection

from shipments.models import ShipmentEvent
from tests import factories
from tests.notifications.test_customer_actions import _make

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

BASE_DIR = Path(settings.BASE_DIR)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

ARTIFACTS = BASE_DIR / "test-artifacts" / "notifications"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """uvicorn serving HTTP and WebSockets on this test's database and Redis."""
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.notifications.browser_settings",
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or '5432'}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "DB_CONN_MAX_AGE": "0",
    }
    log_path = tmp_path / "uvicorn.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own server, fixed arguments
            [
                sys.executable,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 40
    while True:
        try:
            httpx.get(f"{base}/healthz", timeout=2)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise AssertionError(
                    f"server did not start:\n{log_path.read_text()[-3000:]}"
                ) from None
            time.sleep(0.3)
    yield base
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@pytest.fixture
def browser(monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the test's own
    # ORM calls are still plain synchronous ones.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        phone = {
            k: v
            for k, v in playwright.devices["Pixel 7"].items()
            if k != "default_browser_type"
        }
        yield chromium, phone
        chromium.close()


def test_a_customer_on_a_phone_leaves_instructions_and_reschedules_and_the_dispatcher_sees_both_live(
    hubs_closed_on_sundays, server, browser, fresh_limits
):
    chromium, phone = browser
    shipment, token = _make()
    dispatcher = factories.dispatcher_make("dispatch-h5")

    # The dispatcher has the shipment's page open, live.
    desk = chromium.new_context(viewport={"width": 1280, "height": 900})
    dashboard = desk.new_page()
    dashboard.goto(f"{server}/accounts/login/?next=/dashboard/shipments/{shipment.pk}/")
    dashboard.fill("#id_username", dispatcher.username)
    dashboard.fill("#id_password", "pass-1234-word")
    dashboard.click("button[type=submit]")
    dashboard.wait_for_url(f"**/dashboard/shipments/{shipment.pk}/")
    dashboard.wait_for_selector("#live-state[data-state=live]", timeout=15_000)
    dashboard.evaluate("window.__notReloaded = true")

    # The customer opens the link from the e-mail on a phone.
    customer = chromium.new_context(**phone).new_page()
    customer.goto(f"{server}/t/{token}")
    customer.wait_for_selector("#customer-actions:not([hidden])", timeout=5_000)
    assert customer.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth"
    )

    customer.click("#ca-instructions-box summary")
    customer.fill("#ca-instructions input[name=safe_place]", "Behind the blue gate")
    customer.fill("#ca-instructions input[name=door_code]", "4721B")
    customer.fill("#ca-instructions textarea[name=note]", "The dog is friendly")
    customer.click("#ca-instructions button[type=submit]")
    customer.wait_for_selector(
        "#ca-status:has-text('the driver will see your instructions')"
    )
    instructions_at = time.monotonic()

    customer.click("#ca-reschedule-box summary")
    day = customer.eval_on_selector("#ca-day", "s => s.options[1].value")
    customer.select_option("#ca-day", day)
    customer.check("#ca-windows input[value='10:00']")
    customer.click("#ca-reschedule-submit")
    customer.wait_for_selector("#ca-status:has-text('Your delivery is re-planned for')")
    rescheduled_at = time.monotonic()
    assert "10:00–12:00" in customer.inner_text("#ca-status")
    assert customer.eval_on_selector("#ca-day", "s => s.value") == day
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    customer.screenshot(
        path=str(ARTIFACTS / "customer-actions-phone.png"), full_page=True
    )

    # The dispatcher's page shows both, without a reload.
    events = dashboard.locator("#events")
    events.get_by_text("customer.instructions_updated").wait_for(timeout=15_000)
    events.get_by_text("customer.rescheduled").wait_for(timeout=15_000)
    seen_at = time.monotonic()
    assert dashboard.evaluate("window.__notReloaded === true")
    dashboard.screenshot(
        path=str(ARTIFACTS / "dispatcher-sees-customer-actions.png"), full_page=True
    )
    assert "4721B" not in dashboard.content()  # the door code stays out of the timeline
    assert [
        e.type
        for e in ShipmentEvent.objects.filter(
            shipment=shipment, source="customer"
        ).order_by("id")
    ] == [
        "customer.instructions_updated",
        "customer.rescheduled",
    ]
    # Measured, for the report: from the customer's confirmation to the dispatcher's screen.
    print(
        f"\nlive on the dashboard {seen_at - rescheduled_at:.2f} s after rescheduling "
        f"({seen_at - instructions_at:.2f} s after the instructions)"
    )
