"""R5 — Redis outage under live traffic [FAULT].

    drivers ──20 status events/s──▶ gunicorn (driver API) ──▶ PostgreSQL
                                        │ after commit: relay kick, ETA task (Redis)
    beat ──every 2 s──▶ Redis ──▶ Celery worker ──▶ relay: outbox ──▶ channel layer (Redis)

    0:00 traffic starts        2:00 Redis SIGKILLed      2:30 Redis started again
    6:00 Redis shut down cleanly and started again       10:00 traffic stops

The write path must not need Redis: every driver POST is answered without a
5xx and every event is stored. Publishing needs Redis, so unrelayed outbox rows
pile up while it is down; once it is back the worker must reconnect by itself
and drain them. A probe task queued right after each restart measures how soon
a worker consumes again.

A second, short run with persistence off shows what Redis alone would lose:
tasks queued while no worker consumes them, then a SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

# Imported here, not in the probe threads: celery's lazy module is not thread-safe.
from celery import Celery

from . import Figure, RunContext

ID = "R5"
TITLE = "Redis outage under live traffic"
BUDGET_SECONDS = 720

EVENTS_PER_SECOND = 20
REQUEST_TIMEOUT_SECONDS = 30
# After the scenario the phones get this long to send what they still hold;
# whatever is left then counts as lost.
FLUSH_SECONDS = 90
MAX_EVENTS_PER_BATCH = 50
DRAIN_BAR_SECONDS = 60
PROBE_BAR_SECONDS = 30
PROBE_WAIT_SECONDS = 90
DRAIN_LIMIT_SECONDS = 120
# The worker also consumes this queue: a probe there shows the reconnection
# itself, whatever backlog the task queue holds.
PROBE_QUEUE = "r5-probe"


# ---------------------------------------------------------------------------
# Seeding (runs in a subprocess with the stack's Django settings)
# ---------------------------------------------------------------------------


def _seed_main(first: int, count: int, stops: int, out_path: str) -> None:
    """Published routes for drivers ``first`` .. ``first + count - 1``, ``stops``
    delivery stops each, at the Monaco hub (created by the first part); writes
    their tokens, stop ids and parcel barcodes as JSON."""
    import itertools

    import django

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    django.setup()
    from dispatch.services import route_assign, route_publish
    from routing.models import RouteStop
    from shipments.models import Hub
    from shipments.states import Mile
    from tests import factories
    from tests.dispatch import builders

    if count == 0:
        factories.hub_network()
        return
    # Parts run side by side: keep the builders' generated names apart.
    factories._counter = itertools.count(1 + first * 100_000)
    hub = Hub.objects.get(code="mco-hub")
    plan = []
    for index in range(first, first + count):
        driver = factories.driver_make(hub, username=f"r5-driver-{index}")
        shipments = [
            builders.shipment_at_hub(
                hub, builders.MONACO_POINTS[(index + s) % len(builders.MONACO_POINTS)]
            )
            for s in range(stops)
        ]
        specs = [
            {"kind": RouteStop.Kind.DELIVERY, "legs": [builders.first_open_leg(s, Mile.LAST)]}
            for s in shipments
        ]
        route = builders.route_make(hub=hub, stops=specs, minutes_between=10)
        vehicle = factories.vehicle_make(hub)
        route_assign(route_id=route.pk, driver_id=driver.pk, vehicle_id=vehicle.pk)
        route_publish(route_id=route.pk)
        plan.append(
            {
                "driver_id": driver.pk,
                "username": driver.user.username,
                "token": driver.user.auth_token.key,
                "stops": [
                    {"id": stop.pk, "barcode": stop.legs.first().shipment.parcels.first().barcode}
                    for stop in route.stops.filter(kind=RouteStop.Kind.DELIVERY).order_by("sequence")
                ],
            }
        )
    Path(out_path).write_text(json.dumps(plan))


SEED_PARTS = 2  # seeding processes side by side (2 cores)


def _seed(stack, database: str, drivers: int, stops: int, workdir: Path) -> list[dict]:
    root = Path(__file__).resolve().parents[2]
    env = stack.env(database, DB_CONN_MAX_AGE="0")

    def command(first: int, count: int, out: Path) -> list[str]:
        return [sys.executable, "-m", "reliability.targets.r05_redis_outage", "seed",
                str(first), str(count), str(stops), str(out)]

    subprocess.run(command(0, 0, workdir / "unused.json"), cwd=root, env=env, check=True,
                   capture_output=True, text=True, timeout=120)
    per_part = -(-drivers // SEED_PARTS)
    parts = []
    for part in range(SEED_PARTS):
        first = part * per_part
        count = min(per_part, drivers - first)
        out = workdir / f"r5-plan-{part}.json"
        log = (workdir / f"r5-seed-{part}.log").open("w")
        parts.append((subprocess.Popen(command(first, count, out), cwd=root, env=env,
                                       stdout=log, stderr=subprocess.STDOUT), out))
        log.close()
    plan = []
    for process, out in parts:
        if process.wait(timeout=900) != 0:
            raise RuntimeError(f"seeding failed; see {out.parent}")
        plan += json.loads(out.read_text())
    return plan


# ---------------------------------------------------------------------------
# The load: one simulated phone per driver
# ---------------------------------------------------------------------------


def _events_for(driver: dict, per_stop: int) -> list[tuple[str, dict]]:
    """The driver's day as (type, fields): arrive, scan parcels, deliver, leave."""
    scans = max(per_stop - 3, 0)
    out: list[tuple[str, dict]] = []
    for stop in driver["stops"]:
        out.append(("arrived", {"stop_id": stop["id"]}))
        out.extend(("scanned", {"stop_id": stop["id"], "barcode": stop["barcode"]}) for _ in range(scans))
        out.append(("delivered", {"stop_id": stop["id"]}))
        out.append(("departed", {"stop_id": stop["id"]}))
    return out


@dataclass
class Tally:
    """What the phones saw; shared by the coroutines of one event loop."""

    sent_events: int = 0
    acked_events: int = 0
    requests: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    server_errors: list[tuple[float, int]] = field(default_factory=list)  # (t, status)
    transport_errors: list[tuple[float, str]] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    left_on_phones: int = 0  # events still queued when the harness stopped waiting
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (t, seconds)
    event_ids: list[str] = field(default_factory=list)
    login_requests: int = 0
    login_server_errors: list[tuple[float, int]] = field(default_factory=list)


class Phone:
    """A driver's phone: a durable queue, one request at a time, the same
    Idempotency-Key on every retry of a batch, backoff with jitter."""

    def __init__(self, driver: dict, events: list[tuple[str, dict]], *, start_at: float,
                 interval: float, deadline: float, tally: Tally, rng: random.Random):
        self.driver = driver
        self.pending = list(events)
        self.start_at = start_at
        self.interval = interval
        self.deadline = deadline
        self.tally = tally
        self.rng = rng
        self.queue: list[dict] = []
        self.seq = 0
        self.device_id = f"r5-phone-{driver['driver_id']}"

    def _due(self, now: float) -> None:
        """Move the events that are due by now into the outgoing queue."""
        while self.pending and self.start_at + self.seq * self.interval <= now:
            kind, fields = self.pending.pop(0)
            self.seq += 1
            event = {
                "event_id": str(uuid.uuid4()),
                "seq": self.seq,
                "type": kind,
                "occurred_at": datetime.now(UTC).isoformat(),
                **fields,
            }
            self.queue.append(event)
            self.tally.sent_events += 1
            self.tally.event_ids.append(event["event_id"])

    async def run(self, client: httpx.AsyncClient, t0: float) -> None:
        headers = {"Authorization": f"Token {self.driver['token']}"}
        while time.monotonic() < self.deadline and (self.pending or self.queue):
            now = time.monotonic()
            self._due(now)
            if not self.queue:
                next_at = self.start_at + self.seq * self.interval
                await asyncio.sleep(max(0.0, min(next_at - now, self.deadline - now)))
                continue
            batch = self.queue[:MAX_EVENTS_PER_BATCH]
            if not await self._send(client, headers, batch, t0):
                break  # out of time: what the phone still holds is counted below
            del self.queue[: len(batch)]
        self.tally.left_on_phones += len(self.queue)

    async def _send(self, client, headers, batch, t0) -> bool:
        key = f"r5-{uuid.uuid4()}"
        body = {"device_id": self.device_id, "events": batch}
        backoff = 0.5
        while time.monotonic() < self.deadline:
            started = time.monotonic()
            self.tally.requests += 1
            try:
                response = await client.post(
                    "/api/v1/driver/events/", json=body,
                    headers={**headers, "Idempotency-Key": key},
                )
            except httpx.HTTPError as exc:
                self.tally.transport_errors.append((started - t0, type(exc).__name__))
            else:
                code = response.status_code
                self.tally.status_counts[str(code)] = self.tally.status_counts.get(str(code), 0) + 1
                self.tally.latencies.append((started - t0, time.monotonic() - started))
                if code >= 500:
                    self.tally.server_errors.append((started - t0, code))
                elif code == 200:
                    for result in response.json()["results"]:
                        status = result["status"]
                        if status == "rejected":
                            reason = result.get("reason", "?")
                            self.tally.rejected[reason] = self.tally.rejected.get(reason, 0) + 1
                    self.tally.acked_events += len(batch)
                    return True
                elif code not in (409, 429):
                    # A 4xx other than "in flight"/"slow down" is a client bug: stop here.
                    self.tally.rejected[f"http_{code}"] = self.tally.rejected.get(f"http_{code}", 0) + len(batch)
                    return True
            await asyncio.sleep(backoff * (0.5 + self.rng.random()))
            backoff = min(backoff * 2, 8.0)
        return False


async def _sign_ins(base_url: str, drivers: list[dict], *, t0: float, deadline: float,
                    tally: Tally, password: str) -> None:
    """A driver signs in every 2 s, every other time with a wrong password: the
    token endpoint counts failures through the rate limiter, which must fall
    back to PostgreSQL when Redis is down (a wrong password answers 400)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        index = 0
        while time.monotonic() < deadline:
            driver = drivers[index % len(drivers)]
            index += 1
            started = time.monotonic()
            tally.login_requests += 1
            with contextlib.suppress(httpx.HTTPError):
                response = await client.post(
                    "/api/v1/auth/token/",
                    data={"username": driver["username"],
                          "password": password if index % 2 else "wrong-password"},
                )
                if response.status_code >= 500:
                    tally.login_server_errors.append((started - t0, response.status_code))
            await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - started)))


def _drive(base_url: str, plan: list[dict], *, per_stop: int, duration: float, t0: float,
           tally: Tally, seed: int, password: str) -> None:
    """Run every phone for ``duration`` seconds from ``t0`` (in this thread's own loop)."""
    rng = random.Random(seed)
    # Each phone sends one event every len(plan)/rate seconds; starts are spread.
    interval = len(plan) / EVENTS_PER_SECOND
    deadline = t0 + duration
    give_up_deadline = deadline + FLUSH_SECONDS

    async def main() -> None:
        limits = httpx.Limits(max_connections=24, max_keepalive_connections=24)
        async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_SECONDS,
                                     limits=limits) as client:
            phones = []
            for index, driver in enumerate(plan):
                events = _events_for(driver, per_stop)
                budget = int(duration / interval)
                phone = Phone(driver, events[:budget], start_at=t0 + index * interval / len(plan),
                              interval=interval, deadline=give_up_deadline, tally=tally,
                              rng=random.Random(rng.random()))
                phones.append(phone)
            await asyncio.gather(
                *(phone.run(client, t0) for phone in phones),
                _sign_ins(base_url, plan, t0=t0, deadline=deadline, tally=tally, password=password),
            )

    asyncio.run(main())


# ---------------------------------------------------------------------------
# Watching PostgreSQL and Celery from the harness
# ---------------------------------------------------------------------------


class Watcher:
    """Samples the outbox backlog (unrelayed rows) and the Celery queue once a second."""

    def __init__(self, dsn: str, redis_port: int, t0: float):
        import psycopg2
        import redis

        self.connection = psycopg2.connect(dsn)
        self.connection.autocommit = True
        self._lock = threading.Lock()
        self.redis = redis.Redis(port=redis_port, socket_connect_timeout=0.5, socket_timeout=0.5)
        self.t0 = t0
        self.samples: list[tuple[float, int]] = []
        self.queue_samples: list[tuple[float, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock, self.connection.cursor() as cursor:
            cursor.execute(sql, args)
            return cursor.fetchall()

    def backlog(self) -> int:
        return self.query("SELECT count(*) FROM shipments_outboxmessage WHERE published_at IS NULL")[0][0]

    def backlog_before(self, wall_time: float) -> int:
        """Unrelayed rows written before ``wall_time`` (a Unix time)."""
        return self.query(
            "SELECT count(*) FROM shipments_outboxmessage WHERE published_at IS NULL"
            " AND created_at <= to_timestamp(%s)",
            (wall_time,),
        )[0][0]

    def celery_queue(self) -> int | None:
        try:
            return int(self.redis.llen("celery"))
        except Exception:  # noqa: BLE001 - Redis is down: no figure for that second
            return None

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            t = round(time.monotonic() - self.t0, 1)
            with contextlib.suppress(Exception):
                self.samples.append((t, self.backlog()))
            self.queue_samples.append((t, self.celery_queue()))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _probe_app(broker_url: str):
    app = Celery("r5-probe", set_as_current=False)
    app.conf.broker_url = broker_url
    app.conf.task_serializer = "json"
    app.conf.broker_connection_retry_on_startup = True
    return app


def _probe(stack, watcher: Watcher, *, redis_up_wall: float, label: str,
           queue: str = "celery") -> dict:
    """Queue ``probe_task`` now (Redis just came up) and wait until a worker runs it."""
    token = f"{label.replace(' ', '-')}-{queue}-{uuid.uuid4().hex[:12]}"
    app = _probe_app(stack.redis_url(0))
    sent_wall = None
    started = time.monotonic()
    while time.monotonic() - started < 20:
        try:
            app.send_task("reliability.probe", args=[token], queue=queue, retry=True,
                          retry_policy={"max_retries": 3, "interval_start": 0.2,
                                        "interval_step": 0.2, "interval_max": 0.5})
            sent_wall = time.time()
            break
        except Exception:  # noqa: BLE001 - Redis may still be loading its AOF
            time.sleep(0.2)
    with contextlib.suppress(Exception):
        app.close()
    queued_before = watcher.celery_queue()
    ran_wall = None
    while sent_wall is not None and time.monotonic() - started < PROBE_WAIT_SECONDS:
        rows = watcher.query(
            "SELECT extract(epoch FROM ran_at) FROM reliability_proberun WHERE token = %s", (token,)
        )
        if rows:
            ran_wall = float(rows[0][0])
            break
        time.sleep(0.25)
    return {
        "queue": queue,
        "tasks_ahead_in_celery_queue": queued_before,
        "queued_after_up_s": round(sent_wall - redis_up_wall, 2) if sent_wall else None,
        "runs_after_up_s": round(ran_wall - redis_up_wall, 2) if ran_wall else None,
    }


def _drain(watcher: Watcher, *, since_wall: float, since: float, limit: float) -> float | None:
    """Seconds from ``since`` until no row written before it is left unrelayed."""
    while time.monotonic() - since < limit:
        if watcher.backlog_before(since_wall) == 0:
            return round(time.monotonic() - since, 1)
        time.sleep(0.5)
    return None


# ---------------------------------------------------------------------------
# The scenario
# ---------------------------------------------------------------------------


@dataclass
class Outage:
    label: str
    down_at: float  # seconds from t0
    up_at: float = 0.0
    up_wall: float = 0.0
    up_monotonic: float = 0.0
    probe: dict = field(default_factory=dict)
    reconnect_probe: dict = field(default_factory=dict)
    drain_seconds: float | None = None


def _after_restart(stack, watcher: Watcher, outage: Outage) -> list[threading.Thread]:
    """Probe (the task queue, and the worker's own probe queue) and time the drain."""

    def probe() -> None:
        outage.probe = _probe(stack, watcher, redis_up_wall=outage.up_wall, label=outage.label)

    def reconnect_probe() -> None:
        outage.reconnect_probe = _probe(stack, watcher, redis_up_wall=outage.up_wall,
                                        label=outage.label, queue=PROBE_QUEUE)

    def drain() -> None:
        outage.drain_seconds = _drain(watcher, since_wall=outage.up_wall,
                                      since=outage.up_monotonic, limit=DRAIN_LIMIT_SECONDS)

    threads = [threading.Thread(target=f, daemon=True) for f in (probe, reconnect_probe, drain)]
    for thread in threads:
        thread.start()
    return threads


def _outage_thread(stack, watcher: Watcher, outages: list[Outage], *, t0: float,
                   down_seconds: float, logger) -> threading.Thread:
    def fault() -> None:
        followers: list[threading.Thread] = []
        for outage in outages:
            time.sleep(max(0.0, t0 + outage.down_at - time.monotonic()))
            if outage.label == "sigkill":
                logger.info("R5: SIGKILL Redis at %.0f s", time.monotonic() - t0)
                stack.redis_kill()
                time.sleep(max(0.0, t0 + outage.down_at + down_seconds - time.monotonic()))
            else:
                logger.info("R5: clean Redis shutdown at %.0f s", time.monotonic() - t0)
                stack.redis_shutdown()
            stack.redis_start()  # returns once it answers PING
            outage.up_monotonic, outage.up_wall = time.monotonic(), time.time()
            outage.up_at = round(outage.up_monotonic - t0, 1)
            logger.info("R5: Redis up again at %.1f s", outage.up_at)
            followers += _after_restart(stack, watcher, outage)
        for follower in followers:
            follower.join(timeout=DRAIN_LIMIT_SECONDS + PROBE_WAIT_SECONDS)
        for outage in outages:
            logger.info("R5: %s: probe %s, reconnect probe %s, drain %s s", outage.label,
                        outage.probe, outage.reconnect_probe, outage.drain_seconds)

    thread = threading.Thread(target=fault, daemon=True)
    thread.start()
    return thread


def _in_window(t: float, outages: list[Outage], *, after_up: float = 30.0) -> bool:
    """Inside an outage, or in the 30 s after Redis came back."""
    return any(o.down_at <= t <= (o.up_at or o.down_at) + after_up for o in outages)


def _stored_events(watcher: Watcher, event_ids: list[str]) -> tuple[int, int]:
    """(distinct stored events of ours, receipts of ours): a duplicate would differ."""
    rows = watcher.query(
        "SELECT count(DISTINCT event_id), count(*) FROM dispatch_drivereventreceipt"
        " WHERE event_id = ANY(%s::uuid[])",
        (event_ids,),
    )
    return rows[0][0], rows[0][1]


def _server_5xx_reasons(log_path: Path) -> dict[str, int]:
    """Why the server answered 5xx, from its log (e.g. the 503 of a deadlock)."""
    reasons: dict[str, int] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if " answered 503: " in line:
            reason = line.rsplit(" answered 503: ", 1)[1][:80]
        elif "ERROR django.request Internal Server Error" in line:
            reason = "500"
        else:
            continue
        reasons[reason] = reasons.get(reason, 0) + 1
    return reasons


def _percentile(values: list[float], q: int) -> float | None:
    if len(values) < 2:
        return round(values[0], 3) if values else None
    return round(statistics.quantiles(values, n=100)[q - 1], 3)


def run(stack, context: RunContext) -> list[Figure]:
    log = context.logger
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    database = "r05"
    stack.database_create(database)
    duration = context.seconds(600, 100)
    kill_at = context.seconds(120, 25)
    down_seconds = context.seconds(30, 10)
    restart_at = context.seconds(360, 65)
    events_total = int(duration * EVENTS_PER_SECOND)
    # Seeding a shipment costs about a third of a second here, so routes are
    # short and a stop sees many events: arrive, scan its parcels, deliver, leave.
    drivers, stops = (40, 6) if not context.quick else (20, 4)
    per_stop = -(-events_total // (drivers * stops))
    password = "pass-1234-word"

    seed_started = time.monotonic()
    plan = _seed(stack, database, drivers, stops, context.workdir)
    seed_seconds = round(time.monotonic() - seed_started, 1)
    log.info("R5: seeded %s drivers x %s stops in %.0f s", drivers, stops, seed_seconds)
    # Seeding queued customer-message tasks for the earlier legs: not this scenario's work.
    stack.redis_cli("del", "celery")

    web = stack.gunicorn(database, workers=3)
    worker = stack.celery_worker(database, concurrency=2, queues=f"celery,{PROBE_QUEUE}")
    beat = stack.celery_beat(database)

    watcher = Watcher(stack.database_url(database), stack.redis_port, time.monotonic())
    settled = _drain(watcher, since_wall=time.time(), since=time.monotonic(), limit=60)
    log.info("R5: seeding's outbox relayed in %s s; traffic starts", settled)

    t0 = time.monotonic()
    watcher.t0 = t0
    watcher.start()
    outages = [Outage("sigkill", down_at=kill_at), Outage("clean restart", down_at=restart_at)]
    fault = _outage_thread(stack, watcher, outages, t0=t0, down_seconds=down_seconds, logger=log)
    tally = Tally()
    _drive(web.url, plan, per_stop=per_stop, duration=duration, t0=t0, tally=tally,
           seed=context.seed, password=password)
    traffic_seconds = round(time.monotonic() - t0)
    fault.join(timeout=PROBE_WAIT_SECONDS + DRAIN_LIMIT_SECONDS + 30)
    # The rows of the last seconds, once traffic stopped (the tail of the backlog).
    final_drain = _drain(watcher, since_wall=time.time(), since=time.monotonic(),
                         limit=DRAIN_LIMIT_SECONDS)
    watcher.stop()
    stored, receipts = _stored_events(watcher, tally.event_ids)
    # The same worker and beat processes throughout: nobody restarted them.
    worker_alive, beat_alive = worker.alive(), beat.alive()
    web_log = web.log_path
    stack.stop_processes()

    loss = _persistence_off_run(stack, database, context, log)

    five_xx_in_outages = [e for e in tally.server_errors if _in_window(e[0], outages)]
    sign_in_5xx_in_outages = [e for e in tally.login_server_errors if _in_window(e[0], outages)]
    lost = tally.sent_events - stored
    probes = [o.probe.get("runs_after_up_s") for o in outages]
    probes_ok = sum(1 for p in probes if p is not None and p <= PROBE_BAR_SECONDS)
    drains = [o.drain_seconds for o in outages]
    peak_backlog = max(watcher.samples, key=lambda s: s[1], default=(None, 0))
    peak_queue = max(((t, q) for t, q in watcher.queue_samples if q is not None),
                     key=lambda s: s[1], default=(None, 0))
    calm = [s for t, s in tally.latencies if not _in_window(t, outages)]
    during = [s for t, s in tally.latencies if _in_window(t, outages, after_up=10)]
    return [
        Figure(
            "driver POST 5xx during the outages",
            len(five_xx_in_outages) + len(sign_in_5xx_in_outages),
            "0",
            not five_xx_in_outages and not sign_in_5xx_in_outages,
            {
                "outage_window": "from Redis down until 30 s after it answers again",
                "event_posts_5xx_total": len(tally.server_errors),
                "event_posts_5xx_at_s": [round(t) for t, _code in tally.server_errors],
                "server_5xx_reasons": _server_5xx_reasons(web_log),
                "sign_in_posts_5xx_total": len(tally.login_server_errors),
                "event_requests": tally.requests,
                "sign_in_requests": tally.login_requests,
                "status_counts": tally.status_counts,
                "transport_errors": len(tally.transport_errors),
                "transport_errors_first": tally.transport_errors[:5],
                "latency_p95_calm_s": _percentile(calm, 95),
                "latency_p95_outages_s": _percentile(during, 95),
                "latency_max_s": round(max((s for _t, s in tally.latencies), default=0), 2),
                "timeline_s": {o.label: {"down_at": o.down_at, "up_at": o.up_at} for o in outages},
            },
        ),
        Figure(
            f"events lost (of {tally.sent_events} sent)",
            lost,
            f"0 of about {events_total}",
            lost == 0 and receipts == stored
            and tally.sent_events >= 0.95 * events_total,
            {
                "sent": tally.sent_events,
                "acknowledged": tally.acked_events,
                "stored": stored,
                "receipts": receipts,
                "left_on_phones_at_the_end": tally.left_on_phones,
                "rejected_by_reason": tally.rejected,
                "events_per_stop": per_stop,
            },
        ),
        Figure(
            "outbox backlog peak (rows) and drain time after each restart (s)",
            {"peak": peak_backlog[1], "drain_s": drains},
            f"drain <= {DRAIN_BAR_SECONDS} s",
            all(d is not None and d <= DRAIN_BAR_SECONDS for d in drains),
            {
                "peak_at_s": peak_backlog[0],
                "final_drain_after_traffic_s": final_drain,
                "backlog_every_10s": watcher.samples[::10],
                "celery_queue_peak": {"at_s": peak_queue[0], "tasks": peak_queue[1]},
                "celery_queue_every_10s": watcher.queue_samples[::10],
            },
        ),
        Figure(
            "probe task runs after each Redis restart (s from Redis up)",
            probes,
            f"<= {PROBE_BAR_SECONDS} s, 2 of 2, no worker restart",
            probes_ok == 2 and worker_alive and beat_alive,
            {
                "probes": {o.label: o.probe for o in outages},
                "reconnect_probes_own_queue": {o.label: o.reconnect_probe for o in outages},
                "worker_process_never_restarted_still_alive": worker_alive,
                "beat_alive": beat_alive,
                "traffic_seconds": traffic_seconds,
                "seed_seconds": seed_seconds,
            },
        ),
        loss,
    ]


# ---------------------------------------------------------------------------
# The extra run: persistence off
# ---------------------------------------------------------------------------


def _ran_tokens(stack, database: str, prefix: str, *, expected: int, limit: float) -> set[str]:
    """Tokens of probe runs, once all ran or the queue is empty and nothing more comes."""
    deadline = time.monotonic() + limit
    ran: set[str] = set()
    quiet_since = None
    while time.monotonic() < deadline:
        now_ran = set(stack.psql(
            database, f"SELECT token FROM reliability_proberun WHERE token LIKE '{prefix}-%'"
        ).split())
        if len(now_ran) == expected:
            return now_ran
        if now_ran == ran and stack.redis_cli("llen", "celery") in ("0", ""):
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 5:
                return now_ran
        else:
            quiet_since = None
        ran = now_ran
        time.sleep(1.0)
    return ran


def _persistence_off_run(stack, database: str, context: RunContext, log) -> Figure:
    """Queue probe tasks with no worker consuming, SIGKILL Redis, start it again,
    start a worker: which of them ever run? Done with AOF off, then (as the
    comparison) with the shipped AOF everysec."""
    results = {}
    for persistence in (False, True):
        stack.redis_kill()
        stack.redis_start(persistence=persistence)
        stack.redis_cli("flushall")
        queue_seconds = context.seconds(10, 5)
        app = _probe_app(stack.redis_url(0))
        sent: list[tuple[str, float]] = []
        prefix = f"loss-{'aof' if persistence else 'none'}-{uuid.uuid4().hex[:6]}"
        started = time.monotonic()
        index = 0
        while time.monotonic() - started < queue_seconds:
            token = f"{prefix}-{index}"
            app.send_task("reliability.probe", args=[token])
            sent.append((token, time.monotonic()))
            index += 1
            time.sleep(0.05)  # 20 tasks a second, the last one just before the kill
        killed_at = time.monotonic()
        stack.redis_kill()
        with contextlib.suppress(Exception):
            app.close()
        stack.redis_start(persistence=persistence)
        worker = stack.celery_worker(database, concurrency=2, name=f"loss-worker-{int(persistence)}")
        ran = _ran_tokens(stack, database, prefix, expected=len(sent), limit=60)
        worker.stop()
        lost = [(token, at) for token, at in sent if token not in ran]
        window = round(killed_at - min(at for _t, at in lost), 2) if lost else 0.0
        results["aof_everysec" if persistence else "persistence_off"] = {
            "queued": len(sent), "ran": len(ran), "lost": len(lost),
            "loss_window_s": window,
        }
        log.info("R5 loss run (persistence=%s): %s", persistence,
                 results["aof_everysec" if persistence else "persistence_off"])
    # Leave Redis as the other targets expect it: the shipped configuration.
    stack.redis_shutdown()
    stack.redis_start(persistence=True)
    off = results["persistence_off"]
    aof = results["aof_everysec"]
    return Figure(
        "queued tasks lost by a Redis SIGKILL: persistence off vs AOF everysec (recorded)",
        {"persistence_off": f"{off['lost']} of {off['queued']}",
         "aof_everysec": f"{aof['lost']} of {aof['queued']}"},
        "recorded (AOF loses at most ~1 s)",
        aof["loss_window_s"] <= 2.0,
        results,
    )


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "seed":
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.reliability")
        _seed_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        sys.exit("usage: python -m reliability.targets.r05_redis_outage seed FIRST COUNT STOPS OUT.json")
