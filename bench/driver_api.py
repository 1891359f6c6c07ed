#!/usr/bin/env python
"""Driver API load benchmark: the real server over HTTP on loopback.

    own database (created, migrated, seeded: drivers with tokens, routes of
    pickups for the event drivers) ──▶ own server (uvicorn ASGI workers, or
    gunicorn sync WSGI workers for comparison) ──▶ phases, each bounded in time:

      raw      the same ping rows inserted straight into PostgreSQL by psycopg2
               (3-row INSERT … ON CONFLICT DO NOTHING per transaction, like the
               endpoint), from --raw-connections connections: the baseline
      goal     open loop: --drivers simulated drivers, each uploading its
               --fixes-per-upload fixes every --upload-interval seconds, for
               --goal-seconds (the target: 30,000 drivers, 3 fixes / 30 s, 300 s)
      minimal  closed loop: a reference DRF view (token auth, validate the batch,
               bulk insert) on the same server: what any endpoint costs here
      batched  closed loop, --connections at once: batches of 3 pings, flat out
      single   closed loop: one ping per request, flat out
      events   closed loop: event drivers work through their routes (arrived,
               scanned, picked_up, departed per stop; hub scan in; finish)

Latency is measured from the moment a request was due (open loop) or sent
(closed loop), so a server that falls behind shows it. After the ping phases the
database is counted: every accepted ping stored once, none lost.

    .venv/bin/python bench/driver_api.py                      # short run (~2 min)
    .venv/bin/python bench/driver_api.py --drivers 30000 --goal-seconds 300 --json out.json

The load generator shares the machine's cores with the server: read the CPU
columns before comparing runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------
# The reference: a minimal DRF view (token auth, validate a ping batch,
# bulk-insert it), served by the same server as the real endpoint so the two
# are compared on the same machine in the same run. This module doubles as the
# server's settings and URLconf (ALLMILE_BENCH_ROLE=settings): the project
# stays free of bench-only routes.
# ---------------------------------------------------------------------------

if os.environ.get("ALLMILE_BENCH_ROLE") == "settings":
    from config.settings.base import *  # noqa: F403

    ROOT_URLCONF = "bench.driver_api"


def _minimal_view():
    from rest_framework import serializers as s
    from rest_framework.permissions import IsAuthenticated
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from dispatch.models import LocationPing

    class Ping(s.Serializer):
        latitude = s.FloatField(min_value=-90, max_value=90)
        longitude = s.FloatField(min_value=-180, max_value=180)
        accuracy = s.FloatField(min_value=0)
        speed = s.FloatField(required=False, allow_null=True)
        heading = s.FloatField(required=False, allow_null=True)
        recorded_at = s.DateTimeField()

    class Batch(s.Serializer):
        device_id = s.CharField(max_length=100)
        pings = Ping(many=True, max_length=500)

    class MinimalPingsApi(APIView):
        permission_classes = [IsAuthenticated]

        def post(self, request):
            batch = Batch(data=request.data)
            batch.is_valid(raise_exception=True)
            from django.utils import timezone as dj_timezone

            now = dj_timezone.now()
            driver_id = request.user.driver.pk
            rows = [
                LocationPing(
                    driver_id=driver_id,
                    device_id=batch.validated_data["device_id"],
                    latitude=p["latitude"],
                    longitude=p["longitude"],
                    accuracy_meters=p["accuracy"],
                    speed_mps=p.get("speed"),
                    heading_degrees=p.get("heading"),
                    recorded_at=p["recorded_at"],
                    received_at=now,
                )
                for p in batch.validated_data["pings"]
            ]
            LocationPing.objects.bulk_create(rows, ignore_conflicts=True)
            n = len(rows)
            return Response({"accepted": n, "duplicates": 0, "rejected": []})

    return MinimalPingsApi.as_view()


def __getattr__(name: str):
    # URLconf role: read lazily, once the apps are loaded.
    if name == "urlpatterns" and os.environ.get("ALLMILE_BENCH_ROLE") == "settings":
        from django.urls import path

        from config.urls import urlpatterns as project

        patterns = [path("bench/minimal-pings/", _minimal_view()), *project]
        globals()["urlpatterns"] = patterns
        return patterns
    raise AttributeError(name)


PYTHON = sys.executable
HUB = (43.7311, 7.4167)  # Monaco, Fontvieille
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/allmile_bench_driver_api"
DEFAULT_REDIS = "redis://127.0.0.1:6379/11"


# ---------------------------------------------------------------------------
# Environment: database, Django, server
# ---------------------------------------------------------------------------


def server_env(args) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench.driver_api",
            "ALLMILE_BENCH_ROLE": "settings",
            "DATABASE_URL": args.database_url,
            "REDIS_URL": args.redis_url,
            "SECRET_KEY": args.secret_key,
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "false",
            "LOG_LEVEL": "WARNING",
            # ASGI runs sync views on threads that come and go: persistent
            # connections would pile up (Django's docs say to turn them off
            # under ASGI). Sync WSGI workers keep one connection each.
            "DB_CONN_MAX_AGE": "0" if args.server == "asgi" else "600",
        }
    )
    return env


def database_recreate(url: str) -> None:
    import psycopg2

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = psycopg2.connect(
        host=parsed.hostname,
        port=parsed.port or 5432,
        user=parsed.username or "postgres",
        password=parsed.password,
        dbname="postgres",
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()


def migrate(args) -> None:
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=server_env(args),
        check=True,
    )


def django_setup(args) -> None:
    os.environ.update(server_env(args))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


@dataclass
class Seeded:
    tokens: list[str]  # ping drivers, by index
    event_drivers: list[dict]  # {"token", "stops": [{"id", "barcode"}], "hub_stop"}


def seed(args) -> Seeded:
    """Drivers in bulk (no password hashing), and routes of pickups for the
    event drivers built through the real services."""
    from decimal import Decimal

    from django.contrib.auth.models import Group, User
    from django.db import transaction
    from rest_framework.authtoken.models import Token

    from dispatch.models import Driver, Vehicle
    from dispatch.services import route_assign, route_publish
    from routing.models import Route, RouteStop
    from shipments.models import Hub, Location, Party
    from shipments.roles import DRIVER_GROUP
    from shipments.services import ParcelInput, shipment_create

    total = args.drivers + args.event_drivers
    with transaction.atomic():
        location = Location.objects.create(
            address="Bench hub", latitude=HUB[0], longitude=HUB[1]
        )
        hub = Hub.objects.create(
            code="bench-hub",
            name="Bench hub",
            kind=Hub.Kind.DEPOT,
            location=location,
            service_radius_km=20,
            opening_hours={
                d: ["00:00", "23:59"]
                for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
            },
        )
        group = Group.objects.get_or_create(name=DRIVER_GROUP)[0]
        users = User.objects.bulk_create(
            [User(username=f"bench-driver-{i}", password="!") for i in range(total)],
            batch_size=5000,
        )
        User.groups.through.objects.bulk_create(
            [User.groups.through(user_id=u.pk, group_id=group.pk) for u in users],
            batch_size=5000,
        )
        tokens = Token.objects.bulk_create(
            [Token(user=u, key=secrets.token_hex(20)) for u in users], batch_size=5000
        )
        from datetime import time as clock

        Driver.objects.bulk_create(
            [
                Driver(
                    user=u,
                    home_hub=hub,
                    shift_start=clock(0, 0),
                    shift_end=clock(23, 59),
                )
                for u in users
            ],
            batch_size=5000,
        )
    keys = [t.key for t in tokens]
    shipper = Party.objects.create(name="Bench shipper", kind=Party.Kind.SHIPPER)
    consignee = Party.objects.create(name="Bench consignee", kind=Party.Kind.CONSIGNEE)
    event_drivers = []
    drivers = {
        d.user_id: d for d in Driver.objects.filter(user__in=users[args.drivers :])
    }
    now = datetime.now(UTC)
    for n, user in enumerate(users[args.drivers :]):
        driver = drivers[user.pk]
        vehicle = Vehicle.objects.create(
            code=f"bench-van-{n}",
            home_hub=hub,
            capacity_kg=Decimal(5000),
            capacity_m3=Decimal(50),
            capacity_parcels=1000,
        )
        with transaction.atomic():
            route = Route.objects.create(
                service_date=_local_today(),
                hub=hub,
                mile="first",
                planned_start=now,
                planned_end=now + timedelta(hours=6),
            )
            stops = []
            for s in range(args.stops):
                point = (
                    HUB[0] + 0.01 * math.sin(n + s),
                    HUB[1] + 0.01 * math.cos(n * 3 + s),
                )
                created = shipment_create(
                    shipper=shipper,
                    consignee=consignee,
                    reference=f"B{n}-{s}",
                    origin={
                        "address": f"{s} Bench street",
                        "latitude": point[0],
                        "longitude": point[1],
                    },
                    destination={
                        "address": "Bench door",
                        "latitude": HUB[0] + 0.003,
                        "longitude": HUB[1] + 0.003,
                    },
                    parcels=[ParcelInput(weight_kg=Decimal("2"))],
                    origin_hub=hub,
                    destination_hub=hub,
                    source="system",
                )
                first = created.shipment.legs.order_by("sequence").first()
                stop = RouteStop.objects.create(
                    route=route,
                    sequence=s + 1,
                    kind=RouteStop.Kind.PICKUP,
                    location=first.from_location,
                    planned_arrival=now + timedelta(minutes=10 * s),
                )
                stop.legs.set([first])
                stops.append(
                    {"id": stop.pk, "barcode": created.shipment.parcels.first().barcode}
                )
            hub_stop = RouteStop.objects.create(
                route=route,
                sequence=args.stops + 1,
                kind=RouteStop.Kind.HUB,
                location=location,
                hub=hub,
            )
        route_assign(route_id=route.pk, driver_id=driver.pk, vehicle_id=vehicle.pk)
        route_publish(route_id=route.pk)
        event_drivers.append(
            {"token": keys[args.drivers + n], "stops": stops, "hub_stop": hub_stop.pk}
        )
    return Seeded(tokens=keys[: args.drivers], event_drivers=event_drivers)


def _local_today():
    from django.utils import timezone as dj_timezone

    return dj_timezone.localdate()


class Server:
    def __init__(self, args):
        self.args = args
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        a = self.args
        # Kept open for the server's life; closed in stop().
        self.log = open(ROOT / ".local" / "bench-driver-api-server.log", "w")  # noqa: SIM115
        if a.server == "asgi":
            cmd = [
                PYTHON,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(a.port),
                "--workers",
                str(a.workers),
                "--no-access-log",
                "--log-level",
                "warning",
                "--backlog",
                "4096",
            ]
        else:
            cmd = [
                PYTHON,
                "-m",
                "gunicorn",
                "config.wsgi:application",
                "-b",
                f"127.0.0.1:{a.port}",
                "-w",
                str(a.workers),
                "--backlog",
                "4096",
                "--log-level",
                "warning",
            ]
        self.process = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=server_env(a),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(
                    "the server exited at start; see .local/bench-driver-api-server.log"
                )
            try:
                status, _ = asyncio.run(_one_get(a.port, "/api/v1/driver/route/"))
                if status in (401, 403, 404):
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit("the server did not answer within 60 s")

    def cpu_seconds(self) -> float:
        """User + system CPU of the server's process group so far."""
        if self.process is None:
            return 0.0
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in _process_tree(self.process.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
        return total

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self._terminate()
        self.log.close()

    def _terminate(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack += children.get(pid, [])
    return out


# ---------------------------------------------------------------------------
# A minimal keep-alive HTTP/1.1 client (httpx costs more CPU than the server)
# ---------------------------------------------------------------------------


class Connection:
    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                "127.0.0.1", self.port
            )
        lines = [
            f"{method} {path} HTTP/1.1",
            "Host: 127.0.0.1",
            f"Content-Length: {len(body)}",
        ]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        try:
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionError("closed")
            status = int(status_line.split()[1])
            length, chunked, close = 0, False, False
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "transfer-encoding" and "chunked" in value:
                    chunked = True
                elif name == "connection" and "close" in value.lower():
                    close = True
            if chunked:
                data = b""
                while True:
                    size = int((await self.reader.readline()).strip(), 16)
                    if size == 0:
                        await self.reader.readline()
                        break
                    data += await self.reader.readexactly(size + 2)
                payload = data
            else:
                payload = await self.reader.readexactly(length) if length else b""
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            self.close()
            raise
        if close:
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _one_get(port: int, path: str):
    connection = Connection(port)
    try:
        return await connection.request("GET", path, {})
    finally:
        connection.close()


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------


@dataclass
class PhaseResult:
    name: str
    seconds: float
    requests: int = 0
    errors: int = 0
    status_counts: dict = field(default_factory=dict)
    items: int = 0  # pings or events the server accepted/applied
    latencies_ms: list = field(default_factory=list, repr=False)
    server_cpu_seconds: float = 0.0
    client_cpu_seconds: float = 0.0
    notes: dict = field(default_factory=dict)

    def summary(self) -> dict:
        lat = sorted(self.latencies_ms)

        def pct(p):
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None

        return {
            "phase": self.name,
            "seconds": round(self.seconds, 2),
            "requests": self.requests,
            "requests_per_second": round(self.requests / self.seconds, 1)
            if self.seconds
            else 0,
            "items": self.items,
            "items_per_second": round(self.items / self.seconds, 1)
            if self.seconds
            else 0,
            "errors": self.errors,
            "status_counts": self.status_counts,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": round(lat[-1], 1) if lat else None,
            "server_cpu_seconds": round(self.server_cpu_seconds, 1),
            "client_cpu_seconds": round(self.client_cpu_seconds, 1),
            **self.notes,
        }


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _ping_body(
    device: str,
    driver_index: int,
    start: datetime,
    count: int,
    step_seconds: float = 10,
) -> bytes:
    lat0 = HUB[0] + (driver_index % 200) * 0.0005
    lng0 = HUB[1] + (driver_index // 200 % 200) * 0.0005
    pings = []
    for m in range(count):
        at = start + timedelta(seconds=m * step_seconds)
        drift = (at.timestamp() % 3600) * 5 / 111_320  # 5 m/s north-east
        pings.append(
            {
                "latitude": round(lat0 + drift, 7),
                "longitude": round(lng0 + drift, 7),
                "accuracy": 8.0,
                "speed": 5.0,
                "heading": 45.0,
                "recorded_at": at.isoformat(),
            }
        )
    return json.dumps({"device_id": device, "pings": pings}).encode()


def _headers(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Token {token}",
        "Content-Type": "application/json",
        "Idempotency-Key": uuid.uuid4().hex,
    }


async def _send(
    connection: Connection, phase: PhaseResult, method, path, headers, body, due: float
):
    try:
        status, payload = await connection.request(method, path, headers, body)
    except (ConnectionError, OSError, asyncio.IncompleteReadError):
        phase.errors += 1
        phase.status_counts["conn_error"] = phase.status_counts.get("conn_error", 0) + 1
        return None, None
    phase.latencies_ms.append((time.perf_counter() - due) * 1000)
    phase.requests += 1
    phase.status_counts[status] = phase.status_counts.get(status, 0) + 1
    if status >= 400:
        phase.errors += 1
    return status, payload


async def goal_phase(args, seeded: Seeded, server: Server) -> PhaseResult:
    """Open loop: each driver uploads its fixes every interval, phases spread evenly."""
    phase = PhaseResult(f"goal (open loop, {args.fixes_per_upload}-fix batches)", 0)
    drivers = len(seeded.tokens)
    interval = args.upload_interval
    gap = interval / drivers
    total = int(args.goal_seconds / gap)
    queue: asyncio.Queue = asyncio.Queue()
    wall0 = datetime.now(UTC) - timedelta(seconds=interval)
    started = time.perf_counter()
    cpu0, server0 = _client_cpu(), server.cpu_seconds()

    async def scheduler():
        for j in range(total):
            due = started + j * gap
            delay = due - time.perf_counter()
            if delay > 0.002:
                await asyncio.sleep(delay)
            queue.put_nowait((j, due))
        for _ in range(args.connections):
            queue.put_nowait(None)

    async def worker():
        connection = Connection(args.port)
        while True:
            job = await queue.get()
            if job is None:
                break
            j, due = job
            driver, round_ = j % drivers, j // drivers
            start = wall0 + timedelta(seconds=round_ * interval + (j % drivers) * gap)
            # The upload's fixes span its interval, so rounds never overlap (an
            # overlapping fix would be a duplicate, not a ping stored).
            body = _ping_body(
                f"goal-{driver}",
                driver,
                start,
                args.fixes_per_upload,
                step_seconds=interval / args.fixes_per_upload,
            )
            status, payload = await _send(
                connection,
                phase,
                "POST",
                "/api/v1/driver/pings/",
                _headers(seeded.tokens[driver]),
                body,
                due,
            )
            if status == 200:
                answer = json.loads(payload)
                phase.items += answer["accepted"] - answer["duplicates"]
                if answer["rejected"]:
                    phase.notes["rejected"] = phase.notes.get("rejected", 0) + len(
                        answer["rejected"]
                    )
        connection.close()

    await asyncio.gather(scheduler(), *[worker() for _ in range(args.connections)])
    phase.seconds = time.perf_counter() - started
    phase.client_cpu_seconds = _client_cpu() - cpu0
    phase.server_cpu_seconds = server.cpu_seconds() - server0
    phase.notes.update(
        {
            "drivers": drivers,
            "target_requests_per_second": round(drivers / interval, 1),
            "target_pings_per_second": round(
                drivers / interval * args.fixes_per_upload, 1
            ),
            "pings_sent": total * args.fixes_per_upload,
        }
    )
    return phase


async def closed_phase(
    args,
    seeded: Seeded,
    server: Server,
    *,
    per_request: int,
    name: str,
    path: str = "/api/v1/driver/pings/",
) -> PhaseResult:
    phase = PhaseResult(name, 0)
    started = time.perf_counter()
    stop_at = started + args.phase_seconds
    cpu0, server0 = _client_cpu(), server.cpu_seconds()
    counter = {"n": 0}
    wall0 = datetime.now(UTC) - timedelta(hours=2)
    drivers = len(seeded.tokens)

    async def worker(w: int):
        connection = Connection(args.port)
        while time.perf_counter() < stop_at:
            n = counter["n"]
            counter["n"] += 1
            driver = n % drivers
            start = wall0 + timedelta(
                seconds=(n // drivers) * per_request * 10 + 0.001 * (n % 997)
            )
            body = _ping_body(f"{name.split()[0]}-{driver}", driver, start, per_request)
            due = time.perf_counter()
            status, payload = await _send(
                connection,
                phase,
                "POST",
                path,
                _headers(seeded.tokens[driver]),
                body,
                due,
            )
            if status == 200:
                answer = json.loads(payload)
                phase.items += answer["accepted"] - answer["duplicates"]
        connection.close()

    await asyncio.gather(*[worker(w) for w in range(args.connections)])
    phase.seconds = time.perf_counter() - started
    phase.client_cpu_seconds = _client_cpu() - cpu0
    phase.server_cpu_seconds = server.cpu_seconds() - server0
    return phase


async def events_phase(args, seeded: Seeded, server: Server) -> PhaseResult:
    """Each event driver works through its route, one batch per stop."""
    phase = PhaseResult("events (closed loop, 4-event batches)", 0)
    started = time.perf_counter()
    stop_at = started + args.phase_seconds
    cpu0, server0 = _client_cpu(), server.cpu_seconds()
    now = datetime.now(UTC)

    def ev(type_, seq, **fields):
        return {
            "event_id": str(uuid.uuid4()),
            "seq": seq,
            "type": type_,
            "occurred_at": (now + timedelta(milliseconds=seq)).isoformat(),
            **fields,
        }

    async def driver_day(d: dict, index: int):
        connection = Connection(args.port)
        seq = 0
        batches = []
        for stop in d["stops"]:
            batch = []
            for type_, extra in (
                ("arrived", {}),
                ("scanned", {"barcode": stop["barcode"]}),
                ("picked_up", {}),
                ("departed", {}),
            ):
                seq += 1
                batch.append(ev(type_, seq, stop_id=stop["id"], **extra))
            batches.append(batch)
        seq += 1
        last = [ev("hub_scan_in", seq, stop_id=d["hub_stop"])]
        seq += 1
        last.append(ev("route_finished", seq))
        batches.append(last)
        for batch in batches:
            if time.perf_counter() > stop_at:
                break
            body = json.dumps(
                {"device_id": f"events-{index}", "events": batch}
            ).encode()
            status, payload = await _send(
                connection,
                phase,
                "POST",
                "/api/v1/driver/events/",
                _headers(d["token"]),
                body,
                time.perf_counter(),
            )
            if status == 200:
                results = json.loads(payload)["results"]
                phase.items += sum(1 for r in results if r["status"] == "applied")
                rejected = [
                    r.get("reason") for r in results if r["status"] == "rejected"
                ]
                if rejected:
                    phase.notes.setdefault("rejections", {})
                    for reason in rejected:
                        phase.notes["rejections"][reason] = (
                            phase.notes["rejections"].get(reason, 0) + 1
                        )
        connection.close()

    await asyncio.gather(
        *[driver_day(d, i) for i, d in enumerate(seeded.event_drivers)]
    )
    phase.seconds = time.perf_counter() - started
    phase.client_cpu_seconds = _client_cpu() - cpu0
    phase.server_cpu_seconds = server.cpu_seconds() - server0
    return phase


def raw_phase(args, seeded_driver_ids: list[int]) -> PhaseResult:
    """The same rows, the same SQL, straight from psycopg2: what the database alone allows."""
    import psycopg2

    parsed = urlparse(args.database_url)
    phase = PhaseResult(
        f"raw psycopg2 ({args.raw_connections} conns, 3-row inserts)", 0
    )
    sql = (
        "INSERT INTO dispatch_locationping (driver_id, route_id, device_id, latitude, longitude, "
        "accuracy_meters, speed_mps, heading_degrees, recorded_at, received_at) VALUES "
        + ", ".join(["(%s, NULL, %s, %s, %s, 8.0, 5.0, 45.0, %s, now())"] * 3)
        + " ON CONFLICT (driver_id, device_id, recorded_at) DO NOTHING RETURNING id"
    )
    counts = [0] * args.raw_connections
    latencies: list[list[float]] = [[] for _ in range(args.raw_connections)]
    stop_at = time.perf_counter() + args.phase_seconds
    base = datetime.now(UTC) - timedelta(days=1)

    def run(k: int):
        connection = psycopg2.connect(
            host=parsed.hostname,
            port=parsed.port or 5432,
            user=parsed.username or "postgres",
            password=parsed.password,
            dbname=parsed.path.lstrip("/"),
        )
        connection.autocommit = True
        cursor = connection.cursor()
        n = 0
        while time.perf_counter() < stop_at:
            driver = seeded_driver_ids[(k * 7919 + n) % len(seeded_driver_ids)]
            params = []
            for m in range(3):
                at = base + timedelta(seconds=(n * 3 + m) * 10)
                params += [driver, f"raw-{k}", HUB[0], HUB[1], at]
            t0 = time.perf_counter()
            cursor.execute(sql, params)
            counts[k] += len(cursor.fetchall())
            latencies[k].append((time.perf_counter() - t0) * 1000)
            n += 1
        connection.close()

    started = time.perf_counter()
    threads = [
        threading.Thread(target=run, args=(k,)) for k in range(args.raw_connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    phase.seconds = time.perf_counter() - started
    phase.items = sum(counts)
    phase.requests = sum(len(x) for x in latencies)
    phase.latencies_ms = [v for x in latencies for v in x]
    return phase


def count_pings(args, prefix: str) -> tuple[int, int]:
    import psycopg2

    parsed = urlparse(args.database_url)
    connection = psycopg2.connect(
        host=parsed.hostname,
        port=parsed.port or 5432,
        user=parsed.username or "postgres",
        password=parsed.password,
        dbname=parsed.path.lstrip("/"),
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(DISTINCT (driver_id, device_id, recorded_at)) "
            "FROM dispatch_locationping WHERE device_id LIKE %s",
            [prefix + "%"],
        )
        rows, distinct = cursor.fetchone()
    connection.close()
    return rows, distinct


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--drivers", type=int, default=3000, help="simulated drivers sending pings"
    )
    parser.add_argument(
        "--upload-interval", type=float, default=30.0, help="seconds between uploads"
    )
    parser.add_argument("--fixes-per-upload", type=int, default=3)
    parser.add_argument(
        "--goal-seconds", type=float, default=30.0, help="open-loop phase length"
    )
    parser.add_argument(
        "--phase-seconds", type=float, default=15.0, help="each closed-loop phase"
    )
    parser.add_argument("--event-drivers", type=int, default=40)
    parser.add_argument(
        "--stops", type=int, default=12, help="pickup stops per event driver"
    )
    parser.add_argument(
        "--connections", type=int, default=32, help="client connections"
    )
    parser.add_argument("--raw-connections", type=int, default=4)
    parser.add_argument("--server", choices=["asgi", "wsgi"], default="asgi")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--database-url", default=DEFAULT_DB, help="dropped and re-created"
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    parser.add_argument("--phases", default="raw,goal,minimal,batched,single,events")
    parser.add_argument("--json", dest="json_out", help="write the results here")
    args = parser.parse_args()
    args.secret_key = secrets.token_urlsafe(64)
    phases = args.phases.split(",")
    if args.goal_seconds > 900 or args.phase_seconds > 600:
        parser.error("phases are bounded: --goal-seconds ≤ 900, --phase-seconds ≤ 600")

    (ROOT / ".local").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    print(
        f"database {args.database_url}: re-created, migrated, seeding "
        f"{args.drivers} + {args.event_drivers} drivers…",
        flush=True,
    )
    database_recreate(args.database_url)
    migrate(args)
    django_setup(args)
    seeded = seed(args)
    from dispatch.models import Driver

    driver_ids = list(Driver.objects.values_list("pk", flat=True)[: args.drivers])
    from django.db import connections

    connections.close_all()
    print(
        f"seeded in {time.perf_counter() - t0:.0f} s; starting {args.server} with {args.workers} workers",
        flush=True,
    )

    results: list[PhaseResult] = []
    server = Server(args)
    try:
        server.start()
        if "raw" in phases:
            results.append(raw_phase(args, driver_ids))
            print("raw done", flush=True)
        if "goal" in phases:
            phase = asyncio.run(goal_phase(args, seeded, server))
            stored, distinct = count_pings(args, "goal-")
            phase.notes.update(
                {
                    "stored": stored,
                    "stored_distinct": distinct,
                    "lost": phase.notes["pings_sent"] - stored,
                }
            )
            results.append(phase)
            print("goal done", flush=True)
        if "batched" in phases:
            phase = asyncio.run(
                closed_phase(
                    args,
                    seeded,
                    server,
                    per_request=3,
                    name="batched (closed loop, 3 pings/request)",
                )
            )
            stored, distinct = count_pings(args, "batched-")
            phase.notes.update({"stored": stored, "stored_distinct": distinct})
            results.append(phase)
            print("batched done", flush=True)
        if "minimal" in phases:
            phase = asyncio.run(
                closed_phase(
                    args,
                    seeded,
                    server,
                    per_request=3,
                    name="minimal (reference DRF view, 3 pings/request)",
                    path="/bench/minimal-pings/",
                )
            )
            stored, distinct = count_pings(args, "minimal-")
            phase.notes.update({"stored": stored, "stored_distinct": distinct})
            results.append(phase)
            print("minimal done", flush=True)
        if "single" in phases:
            phase = asyncio.run(
                closed_phase(
                    args,
                    seeded,
                    server,
                    per_request=1,
                    name="single (closed loop, 1 ping/request)",
                )
            )
            stored, distinct = count_pings(args, "single-")
            phase.notes.update({"stored": stored, "stored_distinct": distinct})
            results.append(phase)
            print("single done", flush=True)
        if "events" in phases:
            results.append(asyncio.run(events_phase(args, seeded, server)))
            print("events done", flush=True)
    finally:
        server.stop()

    summaries = [r.summary() for r in results]
    raw = next((s for s in summaries if s["phase"].startswith("raw")), None)
    for s in summaries:
        is_pings = s["phase"].split()[0] in ("goal", "minimal", "batched", "single")
        if is_pings and raw and raw["items_per_second"]:
            s["pings_vs_raw"] = round(
                s["items_per_second"] / raw["items_per_second"], 3
            )
    print()
    header = f"{'phase':44} {'req/s':>8} {'items/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'srv cpu':>8} {'cli cpu':>8} {'vs raw':>7}"
    print(header)
    print("-" * len(header))
    for s in summaries:
        print(
            f"{s['phase'][:44]:44} {s['requests_per_second']:>8} {s['items_per_second']:>9} "
            f"{s['p50_ms'] if s['p50_ms'] is not None else '-':>8} {s['p99_ms'] if s['p99_ms'] is not None else '-':>8} "
            f"{s['errors']:>6} {s['server_cpu_seconds']:>8} {s['client_cpu_seconds']:>8} {s.get('pings_vs_raw', ''):>7}"
        )
    for s in summaries:
        extra = {
            k: v
            for k, v in s.items()
            if k
            in (
                "stored",
                "stored_distinct",
                "lost",
                "pings_sent",
                "target_requests_per_second",
                "rejections",
                "rejected",
            )
        }
        if extra:
            print(f"  {s['phase'][:30]}: {extra}")
    report = {
        "benchmark": "driver_api",
        "host": {
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "config": {k: v for k, v in vars(args).items() if k not in ("secret_key",)},
        "phases": summaries,
        "when": datetime.now(UTC).isoformat(),
    }
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=2, default=str))
        print(f"\nwritten: {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
