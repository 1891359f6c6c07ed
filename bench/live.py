"""Live-update benchmark: driver POST → dashboard WebSocket, and the ETA engine.

    python bench/live.py [--clients 50] [--drivers 10] [--duration 30] [--json OUT]

Starts its own ASGI server (uvicorn) and Celery worker on a database of its own
and the local Redis, seeds drivers with published last-mile routes, connects N
dashboard WebSocket clients, and has the drivers post pings and stop events at a
steady rate through the real driver API. Reports, each next to a baseline
measured in the same run:

* end-to-end latency from the driver's POST to the message at a dashboard
  client (pings and stop events), p50/p99, against a bare channel-layer round
  trip (group_send → receive on Redis);
* ETA engine throughput, stops re-estimated per second by ``eta_route_refresh``
  (database reads and writes included), against the pure ``stop_etas`` walk
  over the same stops.

Every loop is bounded by ``--duration``; the server and worker are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reliability.harness.stats import percentile  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50, help="dashboard WebSocket clients")
    parser.add_argument("--drivers", type=int, default=10)
    parser.add_argument("--stops", type=int, default=10, help="stops per route")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--ping-interval", type=float, default=1.0, help="seconds between a driver's pings")
    parser.add_argument("--event-interval", type=float, default=3.0, help="seconds between a driver's stop events")
    parser.add_argument("--eta-seconds", type=float, default=5.0, help="seconds for the ETA throughput runs")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/allmile_bench_live")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--json", dest="json_out", default="")
    args = parser.parse_args()
    if not 0 < args.duration <= 600 or not 0 < args.eta_seconds <= 120:
        parser.error("--duration must be in (0, 600] and --eta-seconds in (0, 120]")
    if not 1 <= args.clients <= 500 or not 1 <= args.drivers <= 200 or not 2 <= args.stops <= 100:
        parser.error("clients 1–500, drivers 1–200, stops 2–100")
    return args


# ---------------------------------------------------------------- setup


def database_prepare(url: str) -> None:
    import psycopg2
    from psycopg2 import sql

    name = url.rsplit("/", 1)[1]
    admin = psycopg2.connect(url.rsplit("/", 1)[0] + "/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if not cursor.fetchone():
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin.close()


def seed(args) -> dict:
    """Hubs, a dispatcher, and per driver a published last-mile route whose
    shipments wait at the Monaco hub (first and middle miles done)."""
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command
    from django.utils import timezone

    call_command("migrate", verbosity=0)
    call_command("flush", "--noinput", verbosity=0)
    from routing.models import Route, RouteStop
    from shipments.services import leg_transition
    from tests import factories

    dc, monaco = factories.hub_network()
    dispatcher = factories.dispatcher_make("bench-dispatcher")
    session = SessionStore()
    session["_auth_user_id"] = str(dispatcher.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = dispatcher.get_session_auth_hash()
    session.create()
    drivers = []
    for index in range(args.drivers):
        driver = factories.driver_make(monaco, username=f"bench-driver{index}")
        route = Route.objects.create(
            service_date=timezone.localdate(), hub=monaco, mile="last", driver=driver,
            status=Route.Status.PUBLISHED, planned_start=timezone.now(),
        )
        stops = []
        for sequence in range(1, args.stops + 1):
            lat = 43.7311 + 0.002 * sequence
            lng = 7.4167 + 0.0015 * ((index % 5) - 2) + 0.001 * sequence
            shipment = factories.shipment_make(destination=(lat, lng)).shipment
            legs = {leg.mile: leg for leg in shipment.legs.all()}
            for mile in ("first", "middle"):
                for target in ("assigned", "in_transit", "completed"):
                    leg_transition(leg_id=legs[mile].pk, to=target, source="system")
            stop = RouteStop.objects.create(
                route=route, sequence=sequence, kind="delivery", location=shipment.destination,
                service_seconds=120, planned_arrival=timezone.now() + timedelta(minutes=10 * sequence),
            )
            stop.legs.set([legs["last"]])
            leg_transition(leg_id=legs["last"].pk, to="assigned", source="system")
            stops.append({"id": stop.pk, "lat": lat, "lng": lng, "reference": shipment.reference})
        drivers.append({"id": driver.pk, "token": driver.user.auth_token.key, "route_id": route.pk,
                        "stops": stops, "hub": (monaco.location.latitude, monaco.location.longitude)})
    return {"session": session.session_key, "drivers": drivers}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_stack(env: dict, port: int, log_dir: Path) -> list[subprocess.Popen]:
    log_dir.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/uvicorn"), "config.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=open(log_dir / "live-server.log", "w"), stderr=subprocess.STDOUT,
    )
    worker = subprocess.Popen(
        [str(ROOT / ".venv/bin/celery"), "-A", "config", "worker", "--pool=solo", "-l", "warning"],
        cwd=ROOT, env=env, stdout=open(log_dir / "live-worker.log", "w"), stderr=subprocess.STDOUT,
    )
    return [server, worker]


def wait_until_up(base_url: str) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(base_url + "/accounts/login/", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("the server did not come up")


# ---------------------------------------------------------------- baselines


async def channel_layer_round_trips(count: int = 300) -> list[float]:
    """Bare Redis channel layer: group_send to a one-member group, then receive."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    channel = await layer.new_channel("bench.")
    group = f"bench-{uuid.uuid4().hex[:8]}"
    await layer.group_add(group, channel)
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await layer.group_send(group, {"type": "bench.ping"})
        await layer.receive(channel)
        samples.append((time.perf_counter() - started) * 1000)
    await layer.group_discard(group, channel)
    return samples


def eta_throughput(route_ids: list[int], seconds: float) -> dict:
    """Stops re-estimated per second: the engine (DB included) vs the pure walk."""
    from routing.models import Route
    from tracking.eta import (
        StopInput,
        eta_route_refresh,
        stop_etas,
        travel_seconds_haversine,
    )

    travel = travel_seconds_haversine("van")
    stop_lists = []
    for route in Route.objects.filter(pk__in=route_ids).prefetch_related("stops__location"):
        stop_lists.append([
            StopInput(key=s.pk, point=(s.location.latitude, s.location.longitude), service_seconds=s.service_seconds)
            for s in route.stops.all()
        ])
    from django.utils import timezone

    pure_stops = 0
    deadline = time.perf_counter() + seconds / 2
    while time.perf_counter() < deadline:
        for stops in stop_lists:
            stop_etas(start_at=timezone.now(), start_point=(43.7311, 7.4167), stops=stops, travel=travel)
            pure_stops += len(stops)
    pure_rate = pure_stops / (seconds / 2)
    # The first pass propagates every shipment down its chain (its ETAs are
    # new); later passes re-time the stops and propagate only what moved.
    first_started = time.perf_counter()
    first_stops = 0
    for route_id in route_ids:
        result = eta_route_refresh(route_id=route_id)
        first_stops += len(result.etas) if result else 0
    first_rate = first_stops / (time.perf_counter() - first_started)
    engine_stops = runs = 0
    started = time.perf_counter()
    deadline = started + seconds / 2
    while time.perf_counter() < deadline:
        for route_id in route_ids:
            result = eta_route_refresh(route_id=route_id)
            engine_stops += len(result.etas) if result else 0
            runs += 1
    engine_rate = engine_stops / (time.perf_counter() - started)
    return {
        "engine_stops_per_second": round(engine_rate, 1),
        "engine_first_pass_stops_per_second": round(first_rate, 1),
        "engine_routes_per_second": round(runs / (time.perf_counter() - started), 1),
        "pure_walk_stops_per_second": round(pure_rate, 1),
        "engine_share_of_pure": round(engine_rate / pure_rate, 5) if pure_rate else None,
    }


# ---------------------------------------------------------------- live load


async def dashboard_client(base_url: str, session: str, sent: dict, latencies: dict, stop: asyncio.Event,
                           counters: dict) -> None:
    import websockets

    uri = base_url.replace("http://", "ws://") + "/ws/dashboard/"
    headers = {"Cookie": f"sessionid={session}", "Origin": base_url}
    async with websockets.connect(uri, additional_headers=headers, max_size=2**22) as socket_:
        counters["connected"] += 1
        last_seq = None
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(socket_.recv(), timeout=0.5)
            except TimeoutError:
                continue
            now = time.perf_counter()
            message = json.loads(raw)
            if message.get("type") != "message":
                continue
            seq = message["seq"]
            if last_seq is not None and seq != last_seq + 1:
                counters["gaps"] += 1
            if last_seq is not None and seq <= last_seq:
                counters["duplicates"] += 1
            last_seq = seq if last_seq is None else max(seq, last_seq)
            counters["messages"] += 1
            payload = message.get("payload") or {}
            if message["kind"] == "driver.position":
                key = ("ping", payload.get("driver_id"), _instant(payload.get("recorded_at")))
            elif message["kind"] == "shipment.event" and payload.get("event_type", "").startswith("leg."):
                key = ("event", payload.get("reference"), payload.get("event_type"))
            else:
                continue
            started = sent.get(key)
            if started is not None:
                latencies[key[0]].append((now - started) * 1000)


async def driver_loop(base_url: str, driver: dict, args, sent: dict, stop: asyncio.Event, counters: dict) -> None:
    import httpx

    headers = {"Authorization": f"Token {driver['token']}"}
    seq = 0
    position = driver["hub"]
    stops = list(driver["stops"])
    next_event = time.perf_counter() + args.event_interval
    phase = "start"
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        while not stop.is_set():
            loop_started = time.perf_counter()
            if stops:  # creep towards the next stop: plausible fixes
                target = (stops[0]["lat"], stops[0]["lng"])
                position = (position[0] + (target[0] - position[0]) * 0.2, position[1] + (target[1] - position[1]) * 0.2)
            recorded_at = _iso_now()
            ping = {"latitude": round(position[0], 6), "longitude": round(position[1], 6), "accuracy": 8.0,
                    "recorded_at": recorded_at}
            posted = time.perf_counter()
            sent[("ping", driver["id"], _instant(recorded_at))] = posted
            response = await client.post("/api/v1/driver/pings/", json={"device_id": "bench", "pings": [ping]},
                                         headers={"Idempotency-Key": str(uuid.uuid4())})
            counters.setdefault("post_ms", []).append((time.perf_counter() - posted) * 1000)
            counters["ping_posts"] += 1
            counters["http_errors"] += response.status_code >= 500
            if time.perf_counter() >= next_event and (phase == "start" or stops):
                next_event += args.event_interval
                seq += 1
                item = {"event_id": str(uuid.uuid4()), "seq": seq, "occurred_at": _iso_now()}
                if phase == "start":
                    item["type"], phase = "route_started", "deliver"
                    key = None
                else:
                    stop_ = stops.pop(0)
                    item.update(type="delivered", stop_id=stop_["id"])
                    key = ("event", stop_["reference"], "leg.completed")
                if key:
                    sent[key] = time.perf_counter()
                response = await client.post("/api/v1/driver/events/", json={"device_id": "bench", "events": [item]},
                                             headers={"Idempotency-Key": str(uuid.uuid4())})
                counters["event_posts"] += 1
                counters["http_errors"] += response.status_code >= 500
            await asyncio.sleep(max(0.0, args.ping_interval - (time.perf_counter() - loop_started)))


def _instant(value: str | None) -> float | None:
    from datetime import datetime

    return round(datetime.fromisoformat(value).timestamp(), 3) if value else None


def _iso_now() -> str:
    from django.utils import timezone

    return timezone.now().isoformat()


def outbox_lag_ms(since) -> list[float]:
    """Commit → publish, from the outbox rows themselves (the relay's share)."""
    from shipments.models import OutboxMessage

    rows = OutboxMessage.objects.filter(created_at__gte=since, published_at__isnull=False)
    return [(published - created).total_seconds() * 1000 for created, published in
            rows.values_list("created_at", "published_at")]


async def live_run(base_url: str, seeded: dict, args) -> dict:
    sent: dict = {}
    latencies: dict = {"ping": [], "event": []}
    counters = {"connected": 0, "messages": 0, "gaps": 0, "duplicates": 0, "ping_posts": 0, "event_posts": 0,
                "http_errors": 0}
    stop = asyncio.Event()
    clients = [asyncio.create_task(dashboard_client(base_url, seeded["session"], sent, latencies, stop, counters))
               for _ in range(args.clients)]
    deadline = time.monotonic() + 20
    while counters["connected"] < args.clients and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    drivers = [asyncio.create_task(driver_loop(base_url, d, args, sent, stop, counters)) for d in seeded["drivers"]]
    await asyncio.sleep(args.duration)
    stop.set()
    await asyncio.sleep(2.0)  # let the last messages arrive
    for task in drivers + clients:
        task.cancel()
    await asyncio.gather(*drivers, *clients, return_exceptions=True)
    return {"latencies": latencies, "counters": counters}


def main() -> None:
    args = parse_args()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "SECURE_SSL_REDIRECT": "false",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update({k: env[k] for k in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL",
                                           "SECURE_SSL_REDIRECT", "LOG_LEVEL")})
    database_prepare(args.database_url)
    import django

    django.setup()
    import redis

    redis.Redis.from_url(args.redis_url).flushdb()
    print(f"seeding {args.drivers} routes × {args.stops} stops …", flush=True)
    seeded = seed(args)
    route_ids = [d["route_id"] for d in seeded["drivers"]]
    # Publish the seeding's own messages now, to nobody: the measurement starts
    # from an empty outbox instead of a backlog of a thousand set-up events.
    from tracking.relay import outbox_relay_run

    while outbox_relay_run(batch_size=1000).published:
        pass

    rtt = asyncio.run(channel_layer_round_trips())
    print("measuring the ETA engine …", flush=True)
    eta = eta_throughput(route_ids, args.eta_seconds)

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    processes = start_stack(env, port, ROOT / ".local" / "bench-live")  # server and worker logs
    try:
        wait_until_up(base_url)
        from config.celery import app

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not app.control.ping(timeout=0.5):
            time.sleep(0.3)
        print(f"load: {args.clients} dashboard clients, {args.drivers} drivers, {args.duration:.0f} s …", flush=True)
        from django.utils import timezone

        load_started = timezone.now()
        live = asyncio.run(live_run(base_url, seeded, args))
        lag = outbox_lag_ms(load_started)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()

    pings, events = live["latencies"]["ping"], live["latencies"]["event"]
    post_ms = live["counters"].pop("post_ms", [])
    report = {
        "id": "bench-live",
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "config": {k: getattr(args, k) for k in ("clients", "drivers", "stops", "duration", "ping_interval",
                                                  "event_interval")},
        "post_to_dashboard_ms": {
            "ping": {"n": len(pings), "p50": percentile(pings, 50), "p99": percentile(pings, 99)},
            "stop_event": {"n": len(events), "p50": percentile(events, 50), "p99": percentile(events, 99)},
        },
        "outbox_commit_to_publish_ms": {"n": len(lag), "p50": percentile(lag, 50), "p99": percentile(lag, 99)},
        "ping_post_response_ms": {"n": len(post_ms), "p50": percentile(post_ms, 50), "p99": percentile(post_ms, 99)},
        "baseline_channel_layer_round_trip_ms": {"n": len(rtt), "p50": percentile(rtt, 50),
                                                 "p99": percentile(rtt, 99)},
        "eta_engine": eta,
        "counters": live["counters"],
    }
    print()
    print(f"{'figure':48} {'p50':>9} {'p99':>9} {'n':>7}")
    for label, row in (
        ("driver ping POST → dashboard message (ms)", report["post_to_dashboard_ms"]["ping"]),
        ("driver stop event POST → dashboard message (ms)", report["post_to_dashboard_ms"]["stop_event"]),
        ("  of which: ping POST answered (ms)", report["ping_post_response_ms"]),
        ("  of which: outbox commit → published (ms)", report["outbox_commit_to_publish_ms"]),
        ("baseline: bare channel-layer round trip (ms)", report["baseline_channel_layer_round_trip_ms"]),
    ):
        p50 = f"{row['p50']:.1f}" if row["p50"] is not None else "–"
        p99 = f"{row['p99']:.1f}" if row["p99"] is not None else "–"
        print(f"{label:48} {p50:>9} {p99:>9} {row['n']:>7}")
    print(f"ETA engine: {eta['engine_stops_per_second']} stops/s steady ({eta['engine_routes_per_second']} routes/s), "
          f"{eta['engine_first_pass_stops_per_second']} stops/s on a first pass that propagates every shipment; "
          f"baseline pure walk: {eta['pure_walk_stops_per_second']} stops/s; "
          f"ratio {eta['engine_share_of_pure']}")
    print("counters:", json.dumps(live["counters"]))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=2, default=str))
        print("wrote", args.json_out)


if __name__ == "__main__":
    main()
