"""The embedded default (no DATABASE_URL, no REDIS_URL): SQLite, the in-memory
channel layer, tasks in-process. The dashboard is live with nothing configured,
and simulate_drivers drives a route through the real driver API."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from tests.tracking.stack import LOGS, ROOT, asgi_server

pytestmark = [pytest.mark.slow]

SEED = """
import json
from django.contrib.sessions.backends.db import SessionStore
from django.utils import timezone
from routing.models import Route
from shipments.services import leg_transition
from tests import factories
from tests.tracking.builders import legs_of, route_make

dc, monaco = factories.hub_network()
dispatcher = factories.dispatcher_make("dispatcher")
driver = factories.driver_make(monaco, username="driver1")
shipments = [factories.shipment_make(destination=d).shipment
             for d in ((43.7325, 7.4180), (43.7338, 7.4195))]  # a few hundred metres from the hub
for shipment in shipments:
    legs = legs_of(shipment)
    for mile in ("first", "middle"):
        for to in ("assigned", "in_transit", "completed"):
            leg_transition(leg_id=legs[mile].pk, to=to, source="system")
route = route_make(hub=monaco, mile="last", driver=driver, planned_start=timezone.now(),
                   stops=[("delivery", s.destination, [legs_of(s)["last"]]) for s in shipments])
Route.objects.filter(pk=route.pk).update(service_date=timezone.localdate())
session = SessionStore()
session["_auth_user_id"] = str(dispatcher.pk)
session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
session["_auth_user_hash"] = dispatcher.get_session_auth_hash()
session.create()
print("SEED " + json.dumps({"session": session.session_key, "references": [s.reference for s in shipments]}))
"""


def _embedded_env(tmp_path) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")}
    env.update(
        DEBUG="true", DATABASE_URL="", REDIS_URL="", SQLITE_PATH=str(tmp_path / "embedded.sqlite3"),
        DJANGO_SETTINGS_MODULE="config.settings.base", SECURE_SSL_REDIRECT="false", LOG_LEVEL="WARNING",
    )
    return env


async def _watch(base_url: str, session: str, seconds: float) -> list[dict]:
    import websockets

    uri = base_url.replace("http://", "ws://") + "/ws/dashboard/?after_seq=0"
    got = []
    async with websockets.connect(uri, additional_headers={"Cookie": f"sessionid={session}", "Origin": base_url}) as ws:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                got.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=1)))
            except asyncio.TimeoutError:
                continue
    return got


def test_the_dashboard_is_live_in_the_embedded_default_while_drivers_are_simulated(tmp_path):
    env = _embedded_env(tmp_path)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
    seeded = subprocess.run([*manage, "shell", "-c", SEED], cwd=ROOT, env=env, check=True, timeout=120,
                            capture_output=True, text=True)
    data = json.loads(next(line for line in seeded.stdout.splitlines() if line.startswith("SEED "))[5:])

    with asgi_server(env, name="embedded-server") as base_url:
        async def run():
            watcher = asyncio.create_task(_watch(base_url, data["session"], 45))
            await asyncio.sleep(2)  # the socket is open: the in-process relay loop runs
            simulation = await asyncio.create_subprocess_exec(
                *manage, "simulate_drivers", "--base-url", base_url, "--password", "pass-1234-word",
                "--speedup", "120", "--duration", "35", "--stall-seconds", "0", "--failure-rate", "0",
                cwd=str(ROOT), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await asyncio.wait_for(simulation.communicate(), timeout=60)
            return await watcher, output.decode()

        messages, output = asyncio.run(run())
    (LOGS / "embedded-simulation.log").write_text(output)

    numbered = [m for m in messages if m.get("type") == "message"]
    seqs = [m["seq"] for m in numbered]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # in order, no gap, no duplicate
    kinds = {m["kind"] for m in numbered}
    assert {"shipment.event", "driver.position"} <= kinds
    delivered = {
        m["payload"]["reference"]
        for m in numbered
        if m["kind"] == "shipment.event"
        and m["payload"].get("event_type") == "leg.completed"
        and m["payload"]["details"].get("mile") == "last"
    }
    assert delivered == set(data["references"]), output  # both delivered by the simulation, seen live
    applied = int(output.split(" events applied")[0].rsplit(" ", 1)[1])
    assert applied >= 1 + 2 * 4, output  # route_started, then arrived/scanned/delivered/departed per stop
