"""R2: lost responses, client retries [FAULT].

50 simulated driver apps (``reliability.mobile_client``: a durable queue per
device, exponential backoff with full jitter, the same Idempotency-Key on every
retry of a batch, ``(device_id, seq)`` per event) work through their published
routes and post 5,000 status events to gunicorn through the fault proxy:

* 30% of connections: the request reaches the server, which commits, and the
  connection is dropped before the first response byte;
* 5%: reset mid-body (half of them halfway through the request body, half
  halfway through the response body, after the server committed);
* 10%: each chunk held 2 s (both ways);
* the rest pass.

Halfway, five apps are killed and restarted from their on-disk queue. When the
last event is queued the proxy turns clean and the apps drain their queues.

Figures (rows of the database against every event the apps queued):
events stored, by ``(device_id, seq)`` with the app's ``event_id``; duplicates
(receipts by ``(device_id, seq)`` and by ``event_id``, and effects: shipment
events and route events per driver event); events the apps gave up; drain time
after the proxy turned clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from reliability.faultproxy import FaultMix, FaultProxy
from reliability.mobile_client import ClientStats, DeviceQueue, MobileClient
from reliability.stack import ROOT, Stack

from . import Figure, RunContext

ID = "R2"
TITLE = "Lost response, client retries"
BUDGET_SECONDS = 200

DATABASE = "r02"
FAULTS = FaultMix(cut_response=0.30, reset_request_body=0.025, reset_response_body=0.025, delay=0.10)
DELAY_SECONDS = 2.0
# A round of 6 stops of 14 parcels: route_started, then per stop arrived, 14
# scans, delivered, departed; route_finished: 104 events, cut to the size. Few
# shipments keep seeding short; every event still moves a leg or logs a scan.
STOPS_PER_ROUTE = 6
PARCELS_PER_STOP = 14
SEED_PROCESSES = 2
GUNICORN_WORKERS = 5  # gunicorn's own advice for 2 cores: 2 × cores + 1
SEED_TIMEOUT_SECONDS = 150
APPS_RESTARTED = 5
DRAIN_BAR_SECONDS = 120
DRAIN_WAIT_SECONDS = 150  # then the apps are stopped and what is left counts as not stored


def run(stack: Stack, context: RunContext) -> list[Figure]:
    drivers = 10 if context.quick else 50
    events_per_driver = 30 if context.quick else 100
    produce_seconds = context.seconds(100, 15)
    log = context.logger
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise

    started = time.monotonic()
    stack.database_create(DATABASE)
    plans = _seed(stack, drivers=drivers)
    log.info("seeded %d drivers with published routes in %.0f s", drivers, time.monotonic() - started)
    web = stack.gunicorn(DATABASE, workers=GUNICORN_WORKERS)
    setup_seconds = time.monotonic() - started
    log.info("gunicorn up; %d apps post %d events each over %.0f s through the fault proxy",
             drivers, events_per_driver, produce_seconds)

    server_cpu_before = _cpu_seconds([web.pid, *web.children()])
    own_cpu_before = _cpu_seconds([os.getpid()])
    outcome = asyncio.run(
        _drive(
            web.url, plans, context,
            events_per_driver=events_per_driver, produce_seconds=produce_seconds,
        )
    )
    # Where the machine's time went (the apps and the proxy share this process).
    outcome["stats"]["cpu_seconds"] = {
        "gunicorn": round(_cpu_seconds([web.pid, *web.children()]) - server_cpu_before, 1),
        "apps_and_proxy": round(_cpu_seconds([os.getpid()]) - own_cpu_before, 1),
        "machine_load_1m": round(os.getloadavg()[0], 1),
    }
    outcome["stats"]["phase_seconds"] = {
        "setup (database, seeding, gunicorn)": round(setup_seconds, 1),
        "events queued over": produce_seconds,
        "drain": round(outcome["drain_seconds"], 1) if outcome["drain_seconds"] else None,
    }
    log.info("apps done, drained in %s s: %s", outcome["drain_seconds"], outcome["stats"])
    return _figures(stack, outcome, total=drivers * events_per_driver)


# -- setup ---------------------------------------------------------------------------


def _seed(stack: Stack, *, drivers: int) -> list[dict]:
    """Drivers with a published route each, made by the real services in two
    Django processes side by side (seconds, not thousands of API calls)."""
    parts = [range(drivers)[i::SEED_PROCESSES] for i in range(SEED_PROCESSES)]
    seeders = [
        subprocess.Popen(
            [
                sys.executable, "-c",
                "import django, json; django.setup(); "
                "from reliability.targets.r02_lost_response import seed_routes; "
                f"print(json.dumps(seed_routes(part={index}, drivers={list(part)})))",
            ],
            cwd=ROOT, env=stack.env(DATABASE), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        for index, part in enumerate(parts)
    ]
    plans = []
    for seeder in seeders:
        try:
            out, err = seeder.communicate(timeout=SEED_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            seeder.kill()
            out, err = seeder.communicate()
        if seeder.returncode != 0:
            raise RuntimeError(f"seeding failed:\n{err[-3000:]}")
        plans += json.loads(out.strip().splitlines()[-1])
    return sorted(plans, key=lambda plan: plan["device_id"])


def seed_routes(*, part: int, drivers: list[int]) -> list[dict]:
    """Runs inside Django: a Monaco hub of this part's own and, per driver
    number, a driver with a published last-mile route of ``STOPS_PER_ROUTE``
    deliveries of ``PARCELS_PER_STOP`` parcels."""
    from django.db import connection, transaction

    from dispatch.services import route_assign, route_publish
    from routing.models import RouteStop
    from shipments.states import Mile
    from tests import factories
    from tests.dispatch import builders

    with connection.cursor() as cursor:
        # Seeding only: this session's commits need not wait for the disk.
        cursor.execute("SET synchronous_commit TO off")
    lat, lng = factories.MONACO_HUB
    hub = factories.hub_make(f"r02-mco-{part}", (lat + 0.001 * part, lng), service_radius_km=6)
    plans = []
    for n in drivers:
        with transaction.atomic():
            driver = factories.driver_make(hub, username=f"r02-driver-{n:02d}")
            shipments = [
                builders.shipment_at_hub(
                    hub, builders.MONACO_POINTS[(n + i) % len(builders.MONACO_POINTS)],
                    parcels=PARCELS_PER_STOP, origin_hub=hub, destination_hub=hub,
                    reference=f"R02-{n:02d}-{i}",  # the factories' counters are per process
                )
                for i in range(STOPS_PER_ROUTE)
            ]
            route = builders.route_make(
                hub=hub,
                stops=[
                    {"kind": RouteStop.Kind.DELIVERY, "legs": [builders.first_open_leg(s, Mile.LAST)]}
                    for s in shipments
                ],
            )
            vehicle = factories.vehicle_make(hub, code=f"r02-van-{n:02d}")
            route_assign(route_id=route.pk, driver_id=driver.pk, vehicle_id=vehicle.pk)
            route_publish(route_id=route.pk)
        stops = route.stops.order_by("sequence")  # one per shipment, in order
        plans.append(
            {
                "device_id": f"r02-phone-{n:02d}",
                "token": driver.user.auth_token.key,
                "route_id": route.pk,
                "stops": [
                    {"id": stop.pk, "barcodes": sorted(shipment.parcels.values_list("barcode", flat=True))}
                    for stop, shipment in zip(stops, shipments, strict=True)
                ],
            }
        )
    return plans


def driver_day(plan: dict, size: int) -> list[dict]:
    """The events of a delivery round in the order a driver makes them."""
    items: list[dict] = [{"type": "route_started", "route_id": plan["route_id"]}]
    for stop in plan["stops"]:
        items.append({"type": "arrived", "stop_id": stop["id"]})
        items += [{"type": "scanned", "stop_id": stop["id"], "barcode": b} for b in stop["barcodes"]]
        items.append({"type": "delivered", "stop_id": stop["id"]})
        items.append({"type": "departed", "stop_id": stop["id"]})
    items.append({"type": "route_finished", "route_id": plan["route_id"]})
    if len(items) < size:
        raise ValueError(f"a route of {len(plan['stops'])} stops makes only {len(items)} events")
    return items[:size]


# -- the scenario ----------------------------------------------------------------------


async def _drive(
    web_url: str, plans: list[dict], context: RunContext, *, events_per_driver: int,
    produce_seconds: float,
) -> dict:
    rng = context.rng()
    host, port = web_url.removeprefix("http://").rsplit(":", 1)
    proxy = FaultProxy(host, int(port), mix=FAULTS, delay_seconds=DELAY_SECONDS, seed=context.seed)
    devices = context.workdir / "devices"
    devices.mkdir(parents=True, exist_ok=True)
    stats = ClientStats()
    with proxy.serving_in_thread():
        base_url = f"http://127.0.0.1:{proxy.listen_port}"
        everything_queued = asyncio.Event()

        def app(plan: dict, seed: int) -> tuple[asyncio.Task, DeviceQueue]:
            """The sending side of one app, on its own connection to the queue file."""
            queue = DeviceQueue.open(devices / f"{plan['device_id']}.sqlite", device_id=plan["device_id"])
            client = MobileClient(
                queue=queue, base_url=base_url, token=plan["token"], rng=_rng(seed), stats=stats,
            )
            return asyncio.create_task(client.run(until=everything_queued)), queue

        senders = {plan["device_id"]: app(plan, rng.randrange(2**32)) for plan in plans}
        producers = [
            asyncio.create_task(
                _work_the_day(
                    DeviceQueue.open(devices / f"{plan['device_id']}.sqlite", device_id=plan["device_id"]),
                    driver_day(plan, events_per_driver), produce_seconds, _rng(rng.randrange(2**32)),
                )
            )
            for plan in plans
        ]
        await asyncio.sleep(produce_seconds / 2)
        restarted = rng.sample(plans, min(APPS_RESTARTED, len(plans)))
        for plan in restarted:  # killed by the OS mid-whatever, started again from disk
            task, queue = senders[plan["device_id"]]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            queue.close()
            senders[plan["device_id"]] = app(plan, rng.randrange(2**32))
        producer_queues = await asyncio.gather(*producers)

        proxy.make_clean()
        clean_at = time.monotonic()
        fault_counts = dict(proxy.counts)  # what the faulty phase drew
        everything_queued.set()
        tasks = [task for task, _ in senders.values()]
        done, stuck = await asyncio.wait(tasks, timeout=DRAIN_WAIT_SECONDS)
        drain_seconds = time.monotonic() - clean_at
        for task in stuck:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # a crashed app is the harness's failure, not a figure
        drain_connections = sum(proxy.counts.values()) - sum(fault_counts.values())

    queued = {}
    outcomes: Counter = Counter()
    attempts: Counter = Counter()
    for plan, queue in zip(plans, producer_queues, strict=True):
        queued[plan["device_id"]] = queue.events()
        outcomes.update(queue.outcomes())
        attempts.update(queue.batch_attempts())
        queue.close()
    for _, queue in senders.values():
        queue.close()
    return {
        "queued": queued,
        "outcomes": dict(outcomes),
        "drain_seconds": drain_seconds if not stuck else None,
        "apps_stuck": len(stuck),
        "fault_counts": fault_counts,
        "drain_connections": drain_connections,
        "stats": {
            "requests": stats.requests,
            "answers": {str(k): v for k, v in stats.answers.most_common()},
            "replayed_answers": stats.replays,
            "batches_done": stats.batches_done,
            "batches_given_up": stats.batches_given_up,
            "attempts_per_batch": dict(sorted(attempts.items())),
        },
        "apps_restarted": len(restarted),
    }


async def _work_the_day(queue: DeviceQueue, items: list[dict], seconds: float, rng) -> DeviceQueue:
    """Queue the day's events at an even pace over ``seconds``, as the driver works."""
    pause = seconds / len(items)
    await asyncio.sleep(rng.uniform(0, pause))
    for item in items:
        queue.enqueue({**item, "occurred_at": datetime.now(UTC).isoformat()})
        await asyncio.sleep(rng.uniform(0.5 * pause, 1.5 * pause))
    return queue


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _rng(seed: int) -> random.Random:
    return random.Random(seed)


# -- figures ---------------------------------------------------------------------------


def _figures(stack: Stack, outcome: dict, *, total: int) -> list[Figure]:
    receipts = {}
    for line in stack.psql(
        DATABASE,
        "SELECT device_id, seq, event_id, status, rejection_reason FROM dispatch_drivereventreceipt",
    ).splitlines():
        device_id, seq, event_id, status, reason = line.split("|")
        receipts.setdefault((device_id, int(seq)), []).append((event_id, status, reason))
    queued = {
        (device_id, seq): event_id
        for device_id, events in outcome["queued"].items()
        for seq, event_id in events
    }
    stored = sum(
        1 for key, event_id in queued.items()
        if any(row[0] == event_id for row in receipts.get(key, []))
    )
    statuses = Counter(rows[0][1] for key, rows in receipts.items() if key in queued)
    rejected = Counter(rows[0][2] for key, rows in receipts.items() if key in queued and rows[0][1] == "rejected")
    not_queued = sum(len(rows) for key, rows in receipts.items() if key not in queued)

    duplicates = {
        "receipts per (device_id, seq)": sum(len(rows) - 1 for rows in receipts.values()),
        "receipts per event_id": _count(
            stack,
            "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n"
            " FROM dispatch_drivereventreceipt GROUP BY driver_id, event_id) AS per_event",
        ),
        "shipment events per driver event, leg and type": _count(
            stack,
            "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM shipments_shipmentevent"
            " WHERE payload ? 'driver_event_id'"
            " GROUP BY payload->>'driver_event_id', leg_id, type, payload->>'barcode') AS per_effect",
        ),
        "route events per driver event and type": _count(
            stack,
            "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM dispatch_routeevent"
            " WHERE payload ? 'driver_event_id'"
            " GROUP BY payload->>'driver_event_id', type) AS per_effect",
        ),
    }
    effects = _count(
        stack, "SELECT COUNT(*) FROM shipments_shipmentevent WHERE payload ? 'driver_event_id'"
    )
    # How fast the server stored events while there were some to store: when
    # this is below the rate the drivers work at, the drain measures a backlog.
    stored_per_second = stack.psql(
        DATABASE,
        "SELECT ROUND(COUNT(*) / GREATEST(EXTRACT(EPOCH FROM MAX(received_at) - MIN(received_at)), 1), 1)"
        " FROM dispatch_drivereventreceipt",
    )
    duplicate_count = sum(duplicates.values())
    gave_up = outcome["outcomes"].get("given_up", 0)
    drain = outcome["drain_seconds"]
    drawn = outcome["fault_counts"]
    connections = sum(drawn.values()) or 1
    shares = {
        "cut_response": drawn.get("cut_response", 0) / connections,
        "reset_mid_body": (drawn.get("reset_request_body", 0) + drawn.get("reset_response_body", 0))
        / connections,
        "delay": drawn.get("delay", 0) / connections,
    }
    wanted = {
        "cut_response": FAULTS.cut_response,
        "reset_mid_body": FAULTS.reset_request_body + FAULTS.reset_response_body,
        "delay": FAULTS.delay,
    }
    # Each share within three standard errors of its chance, for this many draws.
    tolerance = {k: 3 * math.sqrt(p * (1 - p) / connections) for k, p in wanted.items()}
    return [
        Figure(
            f"events stored (of {total:,}, by (device_id, seq) with the app's event_id)",
            stored, f"= {total}", stored == total,
            details={
                "receipt_status": dict(statuses),
                "rejected_reasons": dict(rejected),
                "receipts_not_queued_by_any_app": not_queued,
                "app_outcomes": outcome["outcomes"],
                "shipment_events_from_driver_events": effects,
                "server_stored_events_per_second": float(stored_per_second or 0),
                "apps_restarted_mid_run": outcome["apps_restarted"],
                **outcome["stats"],
            },
        ),
        Figure("duplicates", duplicate_count, "= 0", duplicate_count == 0, details=duplicates),
        Figure("events the apps gave up", gave_up, "= 0", gave_up == 0),
        Figure(
            "drain time after the proxy turned clean (s)",
            round(drain, 1) if drain is not None else f"> {DRAIN_WAIT_SECONDS}",
            f"≤ {DRAIN_BAR_SECONDS} s",
            drain is not None and drain <= DRAIN_BAR_SECONDS,
            details={
                "apps_not_drained": outcome["apps_stuck"],
                "events_still_queued": outcome["outcomes"].get("pending", 0),
            },
        ),
        Figure(
            "faults drawn (% of connections: cut after commit / reset mid-body / 2 s delay)",
            " / ".join(f"{100 * shares[k]:.1f}" for k in wanted),
            "30 / 5 / 10, each within 3 standard errors",
            all(abs(shares[k] - wanted[k]) <= tolerance[k] for k in wanted),
            details={
                "connections_while_faulty": drawn,
                "tolerance_percent": {k: round(100 * t, 1) for k, t in tolerance.items()},
                "connections_while_draining": outcome["drain_connections"],
            },
        ),
    ]


def _count(stack: Stack, sql: str) -> int:
    return int(stack.psql(DATABASE, sql) or 0)

