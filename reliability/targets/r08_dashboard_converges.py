"""R8: the dashboard converges despite an at-most-once channel layer.

Twenty dashboard clients (the ``websockets`` library, speaking the protocol of
``static/allmile/live.js``) watch ``/ws/dashboard/`` on uvicorn while a writer
process records shipment events through the product's services at 30 a second
(each one a business transaction with its outbox row, relayed by the web
process and the Celery worker, with beat as the safety net). Faults, in order:

    calm ──▶ one client stops reading for 20 s ──▶ 5 client sockets aborted
         ──▶ the channel-layer Redis restarted ──▶ calm ──▶ writer stops, settle

Each client keeps what the dashboard keeps: the stream number it has applied,
and the state the messages describe (every shipment's status, every leg's
status), starting from the snapshot's ``last_seq``. Figures:

* clients whose final state differs from the database (after the settle);
* gaps detected and filled (by the server's consumers and by the clients);
* convergence after each reconnect: from the socket opening until the client
  has applied every message numbered before it opened;
* p95 commit-to-client latency in the calm window (commit time written by the
  writer right after its transaction returns, arrival time at the client);
* duplicate applications (a message applied twice by a client).

``python -m reliability.targets.r08_dashboard_converges setup|write`` are the
two helper processes (run with the stack's environment).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from reliability.harness.stats import percentile

ID = "R8"
TITLE = "Dashboard converges despite an at-most-once channel layer"
BUDGET_SECONDS = 330

CLIENTS = 20
EVENTS_PER_SECOND = 30
ROOT = Path(__file__).resolve().parents[2]

CATCH_UP_PAGE = 500
RESUME_EVERY_SECONDS = 5  # live.js resumeEverySeconds
RETRY_FIRST_SECONDS = 0.5  # live.js: 500 ms, doubling, at most 5 s
RETRY_MAX_SECONDS = 5.0
POLL_FALLBACK_SECONDS = 3.0  # live.js polls the catch-up URL while the socket is down
SLOW_READER_RCVBUF = 4096  # a client on a slow link: a small receive window


# ---------------------------------------------------------------- helper processes


def _django() -> None:
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()


def command_setup() -> None:
    """A hub network and a dispatcher with a session; prints the session key."""
    _django()
    from django.contrib.sessions.backends.db import SessionStore

    from tests import factories

    factories.hub_network()
    dispatcher = factories.dispatcher_make("r8-dispatcher")
    session = SessionStore()
    session["_auth_user_id"] = str(dispatcher.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = dispatcher.get_session_auth_hash()
    session.create()
    print(json.dumps({"session": session.session_key}))


# A leg's next state: forward, with some assignments taken back (planned
# again), so a shipment lives through several messages per leg.
UNASSIGN_PROBABILITY = 0.25
ACTIVE_SHIPMENTS = 90
WRITER_THREADS = 5  # concurrent writers, as requests would be (each at rate / 5)


def command_write(*, rate: float, seconds: float, out: Path, seed: int) -> None:
    """Shipment events at ``rate`` a second for ``seconds``, through the services.

    First ``ACTIVE_SHIPMENTS`` creations as fast as they go, then events at the
    rate: leg transitions, and a new shipment whenever one is delivered. Every
    commit is written to ``out`` as ``{"k": key, "t": unix time}``, stamped by
    the first on-commit callback (before the relay kick); the key is what the
    client sees: ``c:<shipment id>`` for a creation, ``t:<n>`` for the n-th
    leg transition (``details.r8_tick``).
    """
    _django()
    from django.db import close_old_connections, transaction

    from shipments.models import Leg
    from shipments.services import leg_transition
    from shipments.states import InvalidTransition
    from tests import factories

    log_lock = threading.Lock()
    totals = {"written": 0, "refused": 0, "errors": 0}

    def stamp(key: str) -> None:
        line = json.dumps({"k": key, "t": time.time()}) + "\n"
        with log_lock:
            log.write(line)
            totals["written"] += 1

    def create(legs: dict) -> None:
        holder = {}
        with transaction.atomic():
            transaction.on_commit(lambda: stamp(f"c:{holder['id']}"))
            created = factories.shipment_make(destination=factories.MONACO_CASINO)
            holder["id"] = created.shipment.pk
        legs[created.shipment.pk] = [
            [leg.pk, leg.status] for leg in created.shipment.legs.order_by("sequence")
        ]

    def advance(legs: dict, rng: random.Random, tick: int) -> None:
        shipment_id = rng.choice(list(legs))
        chain = legs[shipment_id]
        leg = next(entry for entry in chain if entry[1] != "completed")
        target = {
            "planned": "assigned",
            "assigned": "planned" if rng.random() < UNASSIGN_PROBABILITY else "in_transit",
            "in_transit": "arrived",
            "arrived": "completed",
        }[leg[1]]
        try:
            with transaction.atomic():
                transaction.on_commit(lambda: stamp(f"t:{tick}"))
                leg_transition(
                    leg_id=leg[0], to=target, source="system", payload={"r8_tick": tick}
                )
        except InvalidTransition:
            totals["refused"] += 1
            leg[1] = Leg.objects.get(pk=leg[0]).status
            return
        leg[1] = target
        if all(status == "completed" for _, status in chain):
            del legs[shipment_id]

    def writer(index: int, started: float) -> None:
        rng = random.Random(seed * 100 + index)
        legs: dict[int, list[list]] = {}
        per_thread = rate / WRITER_THREADS
        try:
            for _ in range(ACTIVE_SHIPMENTS // WRITER_THREADS):
                if time.monotonic() > started + seconds:
                    break
                create(legs)
            begun = time.monotonic()
            for n in range(int(per_thread * seconds) + 1):
                due = begun + n / per_thread
                if due > started + seconds or time.monotonic() > started + seconds:
                    break  # the scenario's length, whether or not the rate was met
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                try:
                    if len(legs) < ACTIVE_SHIPMENTS // WRITER_THREADS:
                        create(legs)
                    else:
                        advance(legs, rng, tick=index + WRITER_THREADS * n)
                except Exception:  # noqa: BLE001 - e.g. a deadlock victim: count, go on
                    totals["errors"] += 1
                    close_old_connections()
        finally:
            close_old_connections()

    started = time.monotonic()
    with out.open("w", buffering=1) as log:
        threads = [
            threading.Thread(target=writer, args=(i, started)) for i in range(WRITER_THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=seconds + 120)
    print(json.dumps({**totals, "seconds": round(time.monotonic() - started, 1)}))


# ---------------------------------------------------------------- the client


@dataclass
class Reconnect:
    lost_at: float
    opened_at: float
    target_seq: int
    converged_at: float | None = None
    first_frame_at: float | None = None


@dataclass
class DashboardClient:
    """The dashboard's live stream (static/allmile/live.js), in Python.

    Numbered messages are applied in order; a number at or below the last one
    is dropped; a jump fetches the gap from ``/api/v1/live/`` before anything
    else is applied; ``resume`` every 5 s; reconnect with ``?after_seq`` after
    500 ms, doubling to 5 s; polling the catch-up URL while disconnected.
    """

    index: int
    base_url: str
    session: str
    last_seq_db: object  # callable: the database's last stream number (for the figure)
    last_seq: int = 0
    shipments: dict[int, str] = field(default_factory=dict)
    legs: dict[int, str] = field(default_factory=dict)
    applied_ids: set[str] = field(default_factory=set)
    arrivals: dict[str, float] = field(default_factory=dict)
    duplicate_applications: int = 0
    duplicates_dropped: int = 0
    gaps_detected: int = 0
    gaps_filled: int = 0
    reloads: int = 0
    reconnects: list[Reconnect] = field(default_factory=list)
    connect_failures: int = 0
    frames: int = 0
    socket: object = None
    stopped: bool = False
    reading: asyncio.Event = field(default_factory=asyncio.Event)
    catching_up: bool = False
    catch_up_again: bool = False
    rcvbuf: int | None = None
    local_port: int = 0

    def __post_init__(self) -> None:
        self.reading.set()

    # -- applying -------------------------------------------------------------
    def numbered(self, message: dict) -> None:
        seq = message["seq"]
        if seq <= self.last_seq:
            self.duplicates_dropped += 1
            return
        if seq > self.last_seq + 1:
            self.gaps_detected += 1
            self.schedule_catch_up()
            return
        self.apply(message)

    def apply(self, message: dict) -> None:
        if message["message_id"] in self.applied_ids:
            self.duplicate_applications += 1
        self.applied_ids.add(message["message_id"])
        self.last_seq = message["seq"]
        now = time.time()
        payload = message.get("payload") or {}
        if message.get("kind") == "shipment.event":
            shipment_id = payload.get("shipment_id")
            self.shipments[shipment_id] = payload.get("status")
            details = payload.get("details") or {}
            if payload.get("event_type") == "shipment.created":
                for leg in details.get("legs") or []:
                    self.legs.setdefault(leg["id"], "planned")
                self.arrivals.setdefault(f"c:{shipment_id}", now)
            if payload.get("leg_id") and details.get("leg_to"):
                self.legs[payload["leg_id"]] = details["leg_to"]
            if "r8_tick" in details:
                self.arrivals.setdefault(f"t:{details['r8_tick']}", now)
        for reconnect in self.reconnects:
            if reconnect.converged_at is None and self.last_seq >= reconnect.target_seq:
                reconnect.converged_at = now

    # -- catching up over HTTP (live.js catchUp) -------------------------------
    def schedule_catch_up(self) -> None:
        if self.catching_up:
            self.catch_up_again = True  # a gap seen while a catch-up is in flight
            return
        asyncio.get_running_loop().create_task(self.catch_up())

    async def catch_up(self) -> None:
        import httpx

        if self.catching_up:
            self.catch_up_again = True
            return
        self.catching_up = True
        before = self.last_seq
        try:
            async with httpx.AsyncClient(
                base_url=self.base_url, cookies={"sessionid": self.session}, timeout=10
            ) as http:
                for _round in range(20):
                    self.catch_up_again = False
                    response = await http.get(
                        "/api/v1/live/", params={"after_seq": self.last_seq, "limit": CATCH_UP_PAGE}
                    )
                    response.raise_for_status()
                    page = response.json()
                    for message in page["messages"]:
                        if message["seq"] == self.last_seq + 1:
                            self.apply(message)
                    if not page["has_more"] and not self.catch_up_again:
                        break
        except Exception:  # noqa: BLE001 - the next gap, resume or poll retries
            pass
        finally:
            self.catching_up = False
            if self.last_seq > before:
                self.gaps_filled += 1

    # -- the socket -------------------------------------------------------------
    async def snapshot(self) -> None:
        import httpx

        async with httpx.AsyncClient(
            base_url=self.base_url, cookies={"sessionid": self.session}, timeout=30
        ) as http:
            response = await http.get("/api/v1/dashboard/snapshot/")
            response.raise_for_status()
            self.last_seq = response.json()["last_seq"]

    async def run(self) -> None:
        from websockets.asyncio.client import connect

        retry = RETRY_FIRST_SECONDS
        lost_at = None
        poller = None
        ws_url = self.base_url.replace("http://", "ws://") + "/ws/dashboard/"
        host, port = self.base_url.removeprefix("http://").split(":")
        while not self.stopped:
            sock = None
            try:
                if self.rcvbuf:
                    sock = socket.create_connection((host, int(port)))
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
                async with connect(
                    f"{ws_url}?after_seq={self.last_seq}",
                    additional_headers={"Cookie": f"sessionid={self.session}"},
                    origin=self.base_url, open_timeout=10, sock=sock, max_queue=16,
                ) as ws:
                    self.socket = ws
                    self.local_port = ws.transport.get_extra_info("sockname")[1]
                    retry = RETRY_FIRST_SECONDS
                    if poller is not None:  # the server replays after ?after_seq
                        poller.cancel()
                        poller = None
                    if lost_at is not None:
                        opened_at = time.time()
                        target = self.last_seq_db()
                        self.reconnects.append(Reconnect(
                            lost_at=lost_at, opened_at=opened_at, target_seq=target,
                            converged_at=opened_at if self.last_seq >= target else None,
                        ))
                        lost_at = None
                    resumer = asyncio.get_running_loop().create_task(self._resume_every(ws))
                    try:
                        while not self.stopped:
                            await self.reading.wait()
                            try:
                                text = await asyncio.wait_for(ws.recv(), timeout=1)
                            except TimeoutError:
                                continue
                            self.frames += 1
                            if self.reconnects and self.reconnects[-1].first_frame_at is None:
                                self.reconnects[-1].first_frame_at = time.time()
                            self._frame(text)
                    finally:
                        resumer.cancel()
            except Exception:  # noqa: BLE001 - closed, refused, aborted: reconnect
                if self.socket is None:
                    self.connect_failures += 1
            self.socket = None
            if self.stopped:
                break
            if lost_at is None:
                lost_at = time.time()
            if poller is None:
                poller = asyncio.get_running_loop().create_task(self._poll())
            await asyncio.sleep(retry)
            retry = min(retry * 2, RETRY_MAX_SECONDS)
        if poller is not None:
            poller.cancel()

    def _frame(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if message.get("type") == "message" and isinstance(message.get("seq"), int):
            self.numbered(message)
        elif message.get("type") == "reload":
            self.reloads += 1
            self.schedule_catch_up()

    async def _resume_every(self, ws) -> None:
        while True:
            await asyncio.sleep(RESUME_EVERY_SECONDS)
            await self.reading.wait()  # a frozen tab sends nothing either
            await ws.send(json.dumps({"type": "resume", "after_seq": self.last_seq}))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_FALLBACK_SECONDS)
            await self.catch_up()

    def abort(self) -> bool:
        """Drop the TCP connection without a closing handshake (a network cut)."""
        ws = self.socket
        if ws is None:
            return False
        ws.transport.abort()
        return True


# ---------------------------------------------------------------- the scenario


class SeqSampler(threading.Thread):
    """The database's last stream number, sampled every 100 ms (bounded)."""

    def __init__(self, dsn: str, seconds: float) -> None:
        super().__init__(daemon=True)
        self.dsn, self.seconds = dsn, seconds
        self.samples: list[tuple[float, int]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        import psycopg2

        connection = psycopg2.connect(self.dsn)
        connection.autocommit = True
        deadline = time.monotonic() + self.seconds
        with connection, connection.cursor() as cursor:
            while not self.stop_event.is_set() and time.monotonic() < deadline:
                cursor.execute("SELECT coalesce(max(last_seq), 0) FROM tracking_relaystate")
                self.samples.append((time.time(), cursor.fetchone()[0]))
                self.stop_event.wait(0.1)
        connection.close()


def _db_query(dsn: str, sql: str) -> list[tuple]:
    import psycopg2

    connection = psycopg2.connect(dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall()
    finally:
        connection.close()


@dataclass
class Plan:
    duration: float
    slow_at: float
    slow_seconds: float
    abort_at: float
    redis_at: float
    calm: tuple[float, float]
    settle_seconds: float


def _plan(context) -> Plan:
    duration = context.seconds(300, 75)
    return Plan(
        duration=duration,
        slow_at=duration * 0.30,
        slow_seconds=context.seconds(20, 12),
        abort_at=duration * 0.45,
        redis_at=duration * 0.60,
        calm=(duration * 0.05, duration * 0.30),
        settle_seconds=30,
    )


async def _scenario(stack, context, *, base_url: str, session: str, dsn: str,
                    plan: Plan, writer_cmd: list[str], writer_env: dict) -> dict:
    log = context.logger
    import psycopg2

    probe = psycopg2.connect(dsn)
    probe.autocommit = True

    def last_seq_db() -> int:
        with probe.cursor() as cursor:
            cursor.execute("SELECT coalesce(max(last_seq), 0) FROM tracking_relaystate")
            return cursor.fetchone()[0]

    clients = [
        DashboardClient(index=i, base_url=base_url, session=session, last_seq_db=last_seq_db)
        for i in range(CLIENTS)
    ]
    clients[0].rcvbuf = SLOW_READER_RCVBUF
    for client in clients:
        await client.snapshot()
    tasks = [asyncio.get_running_loop().create_task(c.run()) for c in clients]
    connect_deadline = time.monotonic() + 30
    while any(c.socket is None for c in clients) and time.monotonic() < connect_deadline:
        await asyncio.sleep(0.1)
    log.info("%d/%d clients connected", sum(c.socket is not None for c in clients), CLIENTS)

    with (context.workdir / "writer.log").open("w") as writer_log:
        writer = subprocess.Popen(
            writer_cmd, cwd=ROOT, env=writer_env, stdout=subprocess.PIPE,
            stderr=writer_log, text=True,
        )
    t0 = time.time()
    timeline: dict[str, float] = {"writer_started": t0}

    async def at(offset: float) -> None:
        await asyncio.sleep(max(0.0, t0 + offset - time.time()))

    # Fault 1: one client stops reading (a frozen tab on a slow link).
    await at(plan.slow_at)
    slow = clients[0]
    slow_seq_before = slow.last_seq
    slow.reading.clear()
    timeline["slow_reader_paused"] = time.time() - t0
    log.info("client 0 stops reading for %.0f s", plan.slow_seconds)
    server_port = int(base_url.rsplit(":", 1)[1])
    unsent_peak = unread_peak = 0
    pause_ends = time.time() + plan.slow_seconds
    while time.time() < pause_ends:
        unsent, unread = await asyncio.to_thread(_socket_queues, server_port, slow.local_port)
        unsent_peak, unread_peak = max(unsent_peak, unsent), max(unread_peak, unread)
        await asyncio.sleep(min(0.5, max(0.0, pause_ends - time.time())))
    slow.reading.set()
    slow_resumed_at = time.time()
    # Relay passes while it was stopped: one channel-layer message each (more
    # past 100 rows) queued for its consumer, against the layer's capacity.
    passes_while_stopped = _db_query(
        dsn, "SELECT count(DISTINCT published_at) FROM shipments_outboxmessage WHERE published_at"
             f" BETWEEN to_timestamp({slow_resumed_at - plan.slow_seconds}) AND"
             f" to_timestamp({slow_resumed_at})")[0][0]
    slow_target = last_seq_db()
    timeline["slow_reader_resumed"] = slow_resumed_at - t0
    slow_converged_at = None
    for _ in range(200):  # at most 20 s
        if slow.last_seq >= slow_target:
            slow_converged_at = time.time()
            break
        await asyncio.sleep(0.1)

    # Fault 2: five client sockets cut.
    await at(plan.abort_at)
    aborted = [c.index for c in clients[1:6] if c.abort()]
    timeline["sockets_aborted"] = time.time() - t0
    log.info("aborted the sockets of clients %s", aborted)

    # Fault 3: the channel-layer Redis restarted (clean shutdown, as an operator).
    await at(plan.redis_at)
    timeline["redis_shutdown"] = time.time() - t0
    await asyncio.to_thread(stack.redis_shutdown)
    down_at = time.time()
    await asyncio.to_thread(stack.redis_start)
    redis_down_seconds = time.time() - down_at
    timeline["redis_started"] = time.time() - t0
    log.info("redis restarted (%.1f s down)", redis_down_seconds)

    # The writer finishes its bounded run; then everything must settle.
    writer_out, _ = await asyncio.to_thread(writer.communicate, timeout=plan.duration + 120)
    writer_summary = json.loads(writer_out.strip().splitlines()[-1]) if writer_out.strip() else {}
    timeline["writer_finished"] = time.time() - t0
    writer_last_id = _db_query(dsn, "SELECT coalesce(max(id), 0) FROM shipments_outboxmessage")[0][0]
    settle_started = time.time()
    # Customer messages and sweeps keep writing events after the writer stops,
    # so the stream never goes quiet: every client must reach the number the
    # database had once the writer's last events were all published.
    final_seq = None
    settled = False
    while time.time() - settle_started < plan.settle_seconds:
        if final_seq is None:
            unnumbered = _db_query(dsn, "SELECT count(*) FROM shipments_outboxmessage WHERE "
                                        f"stream_seq IS NULL AND id <= {writer_last_id}")[0][0]
            if unnumbered == 0:
                final_seq = last_seq_db()
        if final_seq is not None and all(c.last_seq >= final_seq for c in clients):
            settled = True
            break
        await asyncio.sleep(0.25)
    if final_seq is None:
        final_seq = last_seq_db()
    settle_seconds = time.time() - settle_started
    timeline["settled"] = time.time() - t0
    for client in clients:
        client.stopped = True
    await asyncio.wait(tasks, timeout=5)
    for task in tasks:
        task.cancel()
    probe.close()
    return {
        "clients": clients, "t0": t0, "timeline": timeline, "aborted": aborted,
        "redis_down_seconds": redis_down_seconds, "writer": writer_summary,
        "final_seq": final_seq, "settled": settled, "settle_seconds": settle_seconds,
        "slow": {"seq_before": slow_seq_before, "target": slow_target,
                 "server_unsent_peak_bytes": unsent_peak, "client_unread_peak_bytes": unread_peak,
                 "relay_passes_while_stopped": passes_while_stopped,
                 "converge_seconds": None if slow_converged_at is None
                 else round(slow_converged_at - slow_resumed_at, 2)},
    }


def _socket_queues(server_port: int, client_port: int) -> tuple[int, int]:
    """(bytes the server's kernel holds unsent, bytes the client's kernel holds
    unread) on one loopback connection, from ``ss``."""
    result = subprocess.run(
        ["ss", "-tnH", "state", "established", f"( sport = :{server_port} and dport = :{client_port} )"
         f" or ( sport = :{client_port} and dport = :{server_port} )"],
        capture_output=True, text=True, check=False, timeout=5,
    )
    unsent = unread = 0
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        recv_q, send_q, local = int(fields[0]), int(fields[1]), fields[2]
        if local.endswith(f":{server_port}"):
            unsent = max(unsent, send_q)
        else:
            unread = max(unread, recv_q)
    return unsent, unread


def run(stack, context):
    import logging

    from . import Figure

    log = context.logger
    logging.getLogger("httpx").setLevel(logging.WARNING)
    plan = _plan(context)
    db = "r08"
    stack.database_create(db)
    dsn = stack.database_url(db)
    env = stack.env(db)
    # The hub network and the dispatcher's session, while the processes start.
    setup = subprocess.Popen(
        [sys.executable, "-m", "reliability.targets.r08_dashboard_converges", "setup"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    capacity = {"RELIABILITY_LAYER_CAPACITY": "100"}  # the scenario's layer capacity
    web = stack.uvicorn(db, **capacity)
    stack.celery_worker(db, concurrency=2, **capacity)
    stack.celery_beat(db, **capacity)
    setup_out, setup_err = setup.communicate(timeout=120)
    if setup.returncode != 0:
        raise RuntimeError(f"setup failed:\n{setup_err[-3000:]}")
    session = json.loads(setup_out.strip().splitlines()[-1])["session"]

    commits_path = context.workdir / "commits.jsonl"
    writer_cmd = [
        sys.executable, "-m", "reliability.targets.r08_dashboard_converges", "write",
        "--rate", str(EVENTS_PER_SECOND), "--seconds", str(plan.duration),
        "--out", str(commits_path), "--seed", str(context.seed),
    ]
    sampler = SeqSampler(dsn, plan.duration + 200)
    sampler.start()
    try:
        outcome = asyncio.run(_scenario(
            stack, context, base_url=web.url, session=session, dsn=dsn, plan=plan,
            writer_cmd=writer_cmd, writer_env=env,
        ))
    finally:
        sampler.stop_event.set()
    clients: list[DashboardClient] = outcome["clients"]
    t0 = outcome["t0"]

    # Final state against the database.
    db_shipments = dict(_db_query(dsn, "SELECT id, status FROM shipments_shipment"))
    db_legs = dict(_db_query(dsn, "SELECT id, status FROM shipments_leg"))
    diverged = []
    for client in clients:
        wrong_shipments = sum(1 for k, v in db_shipments.items() if client.shipments.get(k) != v)
        wrong_legs = sum(1 for k, v in db_legs.items() if client.legs.get(k) != v)
        # final_seq: the database's number once the writer stopped and all
        # was published; a later message (a beat sweep) may follow it.
        if wrong_shipments or wrong_legs or client.last_seq < outcome["final_seq"]:
            diverged.append({"client": client.index, "last_seq": client.last_seq,
                             "wrong_shipments": wrong_shipments, "wrong_legs": wrong_legs})

    # Commit-to-client latency.
    commits = {}
    for line in commits_path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            commits[entry["k"]] = entry["t"]
    calm_from, calm_to = t0 + plan.calm[0], t0 + plan.calm[1]
    calm_ms = []
    all_ms = []
    for client in clients:
        for key, arrived in client.arrivals.items():
            committed = commits.get(key)
            if committed is None:
                continue
            latency = (arrived - committed) * 1000
            all_ms.append(latency)
            if calm_from <= committed < calm_to:
                calm_ms.append(latency)
    p95 = percentile(calm_ms, 95)
    relay_ms = _relay_share_ms(dsn, commits, calm_from, calm_to)

    # Gaps: the consumers fill them before passing a message on (logged), the
    # clients fill what still reaches them with a jump.
    web_log = web.log_path.read_text(errors="replace")
    server_gaps = len(re.findall(r"dashboard stream gap", web_log))
    client_gaps = sum(c.gaps_detected for c in clients)
    client_filled = sum(c.gaps_filled for c in clients)

    reconnects = [
        {"client": c.index, "lost_at": round(r.lost_at - t0, 2),
         "opened_after_loss_s": round(r.opened_at - r.lost_at, 2),
         "target_seq": r.target_seq,
         "first_frame_s": None if r.first_frame_at is None else round(r.first_frame_at - r.opened_at, 3),
         "converge_s": None if r.converged_at is None else round(max(0.0, r.converged_at - r.opened_at), 3)}
        for c in clients for r in c.reconnects
    ]
    converge_values = [r["converge_s"] for r in reconnects]
    worst_converge = None if None in converge_values or not converge_values else max(converge_values)
    duplicates = sum(c.duplicate_applications for c in clients)

    common = {"events_written": outcome["writer"], "final_seq": outcome["final_seq"],
              "timeline_s": {k: round(v, 1) for k, v in outcome["timeline"].items()}}
    log.info("diverged %d, p95 %s ms, reconnects %d, duplicates %d",
             len(diverged), p95, len(reconnects), duplicates)
    return [
        Figure(
            "clients whose final state differs from the database", f"{len(diverged)} of {CLIENTS}",
            "0 of 20", not diverged and outcome["settled"] and bool(db_shipments),
            {"diverged": diverged, "settled": outcome["settled"],
             "settle_seconds": round(outcome["settle_seconds"], 1),
             "shipments": len(db_shipments), "legs": len(db_legs), **common},
        ),
        Figure(
            "gaps detected and filled", {"server_consumers": server_gaps,
                                         "clients_detected": client_gaps,
                                         "clients_filled": client_filled},
            "every gap filled (final state equal)", not diverged and outcome["settled"],
            {"slow_reader": outcome["slow"],
             "reloads": sum(c.reloads for c in clients),
             "duplicates_dropped": sum(c.duplicates_dropped for c in clients)},
        ),
        Figure(
            "convergence after each reconnect (worst, s)", worst_converge, "≤ 5 s",
            worst_converge is not None and worst_converge <= 5 and len(reconnects) >= len(outcome["aborted"]),
            {"reconnects": reconnects, "aborted": outcome["aborted"],
             "redis_down_seconds": round(outcome["redis_down_seconds"], 2),
             "connect_failures": sum(c.connect_failures for c in clients)},
        ),
        Figure(
            "p95 commit-to-client latency, calm window (ms)",
            None if p95 is None else round(p95), "≤ 1000 ms",
            p95 is not None and p95 <= 1000,
            {"samples": len(calm_ms), "p50_ms": _round(percentile(calm_ms, 50)),
             "p99_ms": _round(percentile(calm_ms, 99)),
             "whole_run_p95_ms": _round(percentile(all_ms, 95)),
             # The relay's share: commit until the row was marked published
             # (after its group_send), per message, in the calm window.
             "commit_to_published_p50_ms": _round(percentile(relay_ms, 50)),
             "commit_to_published_p95_ms": _round(percentile(relay_ms, 95)),
             "calm_window_s": [round(plan.calm[0]), round(plan.calm[1])]},
        ),
        Figure(
            "duplicate applications", duplicates, "0", duplicates == 0 and bool(all_ms), {},
        ),
    ]


def _relay_share_ms(dsn: str, commits: dict, calm_from: float, calm_to: float) -> list[float]:
    rows = _db_query(
        dsn,
        "SELECT payload->'details'->>'r8_tick', shipment_id_ref, payload->>'event_type',"
        " extract(epoch FROM published_at) FROM shipments_outboxmessage"
        " WHERE published_at IS NOT NULL AND type = 'shipment.event'",
    )
    shares = []
    for tick, shipment_id, event_type, published in rows:
        key = f"t:{tick}" if tick is not None else (
            f"c:{shipment_id}" if event_type == "shipment.created" else None)
        committed = commits.get(key)
        if committed is not None and calm_from <= committed < calm_to:
            shares.append((float(published) - committed) * 1000)
    return shares


def _round(value):
    return None if value is None else round(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup")
    write = sub.add_parser("write")
    write.add_argument("--rate", type=float, default=EVENTS_PER_SECOND)
    write.add_argument("--seconds", type=float, required=True)
    write.add_argument("--out", type=Path, required=True)
    write.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "setup":
        command_setup()
    else:
        if not (0 < args.rate <= 500 and 0 < args.seconds <= 900):
            parser.error("rate in (0, 500], seconds in (0, 900]")
        command_write(rate=args.rate, seconds=args.seconds, out=args.out, seed=args.seed)


if __name__ == "__main__":
    main()
