"""The dashboard and the tracking page in a real browser.

Headless Chromium (Debian's, driven by Playwright's Python package) against a
real ASGI server (uvicorn) and a real Celery worker, both on the test database
and the real Redis. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from django.utils import timezone

from routing.models import Route
from shipments.services import leg_transition, shipment_tracking_token
from tests import factories
from tests.tracking.builders import legs_of, route_make
from tests.tracking.stack import ROOT, asgi_server, celery_worker, stack_env

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
PASSWORD = "pass-1234-word"  # tests.factories' default

if not Path(CHROMIUM).exists():  # pragma: no cover - CI installs it (.ci/run)
    pytest.skip("Chromium is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def live_stack(django_db_setup, django_db_blocker):
    """uvicorn + a Celery worker on the test database; stopped after the module."""
    env = stack_env()
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT, env=env, check=True, timeout=120,
    )
    with celery_worker(env), asgi_server(env) as base_url:
        yield base_url


@pytest.fixture
def browser(monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the test's own
    # ORM calls are still plain synchronous code (Django's documented escape hatch).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _login(page, base_url: str, username: str) -> None:
    page.goto(base_url + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard/")
    page.wait_for_function("document.getElementById('live-state').dataset.state === 'live'", timeout=15000)


def _out_for_delivery_ready(hubs):
    """A Monaco last-mile route, published, whose shipment waits at the hub."""
    dc, monaco = hubs
    driver = factories.driver_make(monaco)
    shipment = factories.shipment_make().shipment
    legs = legs_of(shipment)
    for mile in ("first", "middle"):
        leg_transition(leg_id=legs[mile].pk, to="assigned", source="system")
        leg_transition(leg_id=legs[mile].pk, to="in_transit", source="system")
        leg_transition(leg_id=legs[mile].pk, to="completed", source="system")
    route = route_make(
        hub=monaco, mile="last", driver=driver, planned_start=timezone.now(),
        stops=[("delivery", shipment.destination, [legs["last"]])],
    )
    Route.objects.filter(pk=route.pk).update(service_date=timezone.localdate())
    return shipment, driver, route


def _driver_event(base_url: str, driver, type_: str, **extra) -> httpx.Response:
    return httpx.post(
        base_url + "/api/v1/driver/events/",
        json={"device_id": "browser-test", "events": [{
            "event_id": str(uuid.uuid4()), "seq": int(time.time() * 1000), "type": type_,
            "occurred_at": timezone.now().isoformat(), **extra,
        }]},
        headers={"Authorization": f"Token {driver.user.auth_token.key}", "Idempotency-Key": str(uuid.uuid4())},
        timeout=10,
    )


def test_a_driver_event_shows_on_the_open_dashboard_within_two_seconds(live_stack, browser, hubs):
    shipment, driver, _route = _out_for_delivery_ready(hubs)
    dispatcher = factories.dispatcher_make()
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    _login(page, live_stack, dispatcher.username)

    started = time.monotonic()
    response = _driver_event(live_stack, driver, "route_started")
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["status"] == "applied"
    page.wait_for_selector(f"#feed li:has-text('{shipment.reference}')", timeout=2000)
    latency = time.monotonic() - started
    assert latency <= 2.0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"))
    assert "out_for_delivery" in page.inner_text("#feed")


def test_the_tracking_page_updates_live(live_stack, browser, hubs):
    shipment, driver, _route = _out_for_delivery_ready(hubs)
    page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
    page.goto(f"{live_stack}/t/{shipment_tracking_token(shipment)}")
    assert page.inner_text("#status-label") == "At hub"
    page.wait_for_function("document.getElementById('live').dataset.state === 'live'", timeout=10000)

    assert _driver_event(live_stack, driver, "route_started").status_code == 200
    page.wait_for_function(
        "document.getElementById('status-label').textContent === 'Out for delivery'", timeout=5000
    )
    assert "Camille" not in page.content() and "+33600000000" not in page.content()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "tracking.png"), full_page=True)


def test_a_dispatcher_runs_an_optimization_and_sees_routes_appear(live_stack, browser, hubs):
    dc, monaco = hubs
    for _ in range(3):
        factories.vehicle_make(monaco)
    shipments = [factories.shipment_make().shipment for _ in range(4)]
    for shipment in shipments:
        legs = legs_of(shipment)
        for mile in ("first", "middle"):
            leg_transition(leg_id=legs[mile].pk, to="assigned", source="system")
            leg_transition(leg_id=legs[mile].pk, to="in_transit", source="system")
            leg_transition(leg_id=legs[mile].pk, to="completed", source="system")
    service_date = timezone.localdate(shipments[0].delivery_window_start)
    dispatcher = factories.dispatcher_make()
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    _login(page, live_stack, dispatcher.username)

    page.select_option("#opt-hub", str(monaco.pk))
    page.fill("#opt-date", service_date.isoformat())
    page.select_option("#opt-mile", "last")
    page.fill("#opt-limit", "2")
    page.click("#opt-run")
    page.wait_for_selector("#opt-progress:not([hidden])", timeout=5000)
    page.wait_for_selector("#opt-progress[data-finished=succeeded]", timeout=60000)
    assert page.get_attribute("#opt-bar", "style").replace(" ", "") == "width:100%;"
    page.wait_for_selector("tr.proposed-route", timeout=10000)
    assert int(page.get_attribute("body", "data-proposed-routes")) >= 1
    # Drawn on the map: a line per route plus a marker per stop.
    assert page.evaluate("Allmile.dashboard.layers.proposed.getLayers().length") >= 1 + len(shipments)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-optimization.png"))
