"""R3 — outbox atomicity and relay crash safety [FAULT].

The business write is the real one: ``POST /api/v1/shipments/`` on gunicorn
(shipment, parcels, legs, one ``ShipmentEvent`` and its outbox row in one
transaction). The relay runs where production runs it: a Celery worker (kicked
after each commit, and by beat every 2 s), plus, during the Redis outage, a
relay loop like the one an ASGI process runs. A consumer
(``reliability.consumer``) joins the dashboard group and applies each message
through the inbox.

Phases, each followed by the invariant SQL (``orphans()``):

* calm: writes at a steady rate, no fault: the outbox lag (commit → received);
* (a) ``X-Reliability-Fault: raise``: an exception after the business write,
  before commit, interleaved with as many normal writes;
* (b) ``X-Reliability-Fault: sleep=…``: the transaction held in ``pg_sleep``
  after its writes, and the gunicorn worker SIGKILLed there;
* (c) the relay's pool process SIGKILLs itself right after a ``group_send`` to
  the dashboard, before it marks the rows published (``reliability.layers``);
* (d) Redis SIGKILLed for 30 s while writes and a relay loop go on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg2

from ..stack import Process, Stack
from . import Figure, RunContext

ID = "R3"
TITLE = "Outbox atomicity and relay crash safety"
BUDGET_SECONDS = 200
DATABASE = "r03"
LAG_BAR_SECONDS = 2.0
HOLD_SECONDS = 1.5  # long enough to be seen and killed, short enough to end soon after
WAIT_SECONDS = 90.0  # the longest any single wait in this target may take

SEED = """
import inspect, json
from tests import factories
factories.hub_network()
shipper = factories.party_make()
user = factories.dispatcher_make("r03-dispatcher")
from tracking.relay import outbox_relay_run
batch = inspect.signature(outbox_relay_run).parameters["batch_size"].default
print(json.dumps({"token": user.auth_token.key, "shipper": shipper.pk, "relay_batch": batch}))
"""

# What an ASGI process does once a dashboard is connected (tracking.kick): a
# relay pass, again and again, whether Redis answers or not.
RELAY_LOOP = """
import json, sys, time
import django
django.setup()
from django.db import close_old_connections
from tracking.relay import outbox_relay_run
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    close_old_connections()
    try:
        result = outbox_relay_run()
        line = {"at": time.time(), "published": result.published, "failed": result.failed}
    except Exception as exc:
        line = {"at": time.time(), "error": repr(exc)}
    print(json.dumps(line), flush=True)
    time.sleep(0.5)
"""

# -- invariants -------------------------------------------------------------------
# Business rows without their outbox row, and outbox rows without their business row.
ORPHAN_QUERIES = {
    "events_without_outbox": """
        SELECT count(*) FROM shipments_shipmentevent e WHERE NOT EXISTS (
            SELECT 1 FROM shipments_outboxmessage o
            WHERE o.type = 'shipment.event' AND (o.payload->>'event_id')::bigint = e.id)""",
    "route_events_without_outbox": """
        SELECT count(*) FROM dispatch_routeevent e WHERE NOT EXISTS (
            SELECT 1 FROM shipments_outboxmessage o
            WHERE o.type = 'route.event' AND (o.payload->>'route_event_id')::bigint = e.id)""",
    "shipments_without_created_event": """
        SELECT count(*) FROM shipments_shipment s WHERE NOT EXISTS (
            SELECT 1 FROM shipments_shipmentevent e
            WHERE e.shipment_id = s.id AND e.type = 'shipment.created')""",
    "outbox_without_event": """
        SELECT count(*) FROM shipments_outboxmessage o
        WHERE o.type = 'shipment.event' AND NOT EXISTS (
            SELECT 1 FROM shipments_shipmentevent e
            WHERE e.id = (o.payload->>'event_id')::bigint)""",
    "outbox_without_route_event": """
        SELECT count(*) FROM shipments_outboxmessage o
        WHERE o.type = 'route.event' AND NOT EXISTS (
            SELECT 1 FROM dispatch_routeevent e
            WHERE e.id = (o.payload->>'route_event_id')::bigint)""",
}
BUSINESS_WITHOUT_OUTBOX = (
    "events_without_outbox", "route_events_without_outbox", "shipments_without_created_event"
)
OUTBOX_WITHOUT_BUSINESS = ("outbox_without_event", "outbox_without_route_event")


class Database:
    """The harness's own connection to the target database (autocommit)."""

    def __init__(self, url: str):
        self.connection = psycopg2.connect(url)
        self.connection.autocommit = True

    def value(self, sql: str, params: tuple = ()):
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()[0]

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    def orphans(self) -> dict[str, int]:
        return {name: self.value(sql) for name, sql in ORPHAN_QUERIES.items()}

    def unpublished(self) -> int:
        return self.value("SELECT count(*) FROM shipments_outboxmessage WHERE published_at IS NULL")

    def committed(self, references: list[str]) -> int:
        if not references:
            return 0
        return self.value(
            "SELECT count(*) FROM shipments_shipment WHERE reference = ANY(%s)", (references,)
        )

    def close(self) -> None:
        self.connection.close()


def _wait_for(check, *, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + min(timeout, WAIT_SECONDS)
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return bool(check())


# -- writes -----------------------------------------------------------------------
@dataclass
class Answer:
    reference: str
    fault: str
    status: int  # 0: no answer (connection cut)
    sent_at: float
    seconds: float
    error: str = ""


@dataclass
class Writer:
    """Creates shipments through the API; every answer is kept."""

    url: str
    token: str
    shipper: int
    answers: list[Answer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def body(self, reference: str) -> dict:
        return {
            "reference": reference,
            "shipper": self.shipper,
            "consignee": {"name": "Lou Reliability"},
            "origin": {"address": "Grasse", "latitude": 43.6589, "longitude": 6.9236},
            "destination": {"address": "Monaco", "latitude": 43.7396, "longitude": 7.4276},
            "parcels": [{"weight_kg": "2"}],
        }

    def post(self, reference: str, fault: str = "") -> Answer:
        headers = {"Authorization": f"Token {self.token}"}
        if fault:
            headers["X-Reliability-Fault"] = fault
        sent_at = time.time()
        started = time.monotonic()
        try:
            # A new connection per request: a killed worker must not poison a pool.
            response = httpx.post(
                f"{self.url}/api/v1/shipments/", json=self.body(reference),
                headers=headers, timeout=30,
            )
            answer = Answer(reference, fault, response.status_code, sent_at,
                            time.monotonic() - started)
        except httpx.HTTPError as exc:
            answer = Answer(reference, fault, 0, sent_at, time.monotonic() - started,
                            error=type(exc).__name__)
        with self.lock:
            self.answers.append(answer)
        return answer

    def of(self, prefix: str) -> list[Answer]:
        with self.lock:
            return [a for a in self.answers if a.reference.startswith(prefix)]


class Background:
    """Normal writes at a steady rate from ``threads`` threads, until stopped
    (or a time limit)."""

    def __init__(self, writer: Writer, prefix: str, per_second: float, limit_seconds: float,
                 threads: int = 1):
        self.writer, self.prefix = writer, prefix
        self.interval = threads / per_second
        self.limit_seconds = limit_seconds
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(index,), daemon=True)
            for index in range(threads)
        ]

    def _run(self, index: int) -> None:
        started = time.monotonic()
        for n in range(100_000):
            if self.stopping.is_set() or time.monotonic() - started > self.limit_seconds:
                return
            self.writer.post(f"{self.prefix}{index}-{n:05d}")
            self.stopping.wait(max(0.0, started + (n + 1) * self.interval - time.monotonic()))

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Background:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.join(timeout=40)


# -- the target -------------------------------------------------------------------
def run(stack: Stack, context: RunContext) -> list[Figure]:
    log = context.logger
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    rng = context.rng()
    started = time.monotonic()
    stack.database_create(DATABASE)
    seeded = json.loads(stack.manage(DATABASE, "shell", "-c", SEED).strip().splitlines()[-1])

    kill_flag = context.workdir / "kill-after-publish"
    kill_log = Path(f"{kill_flag}.log")
    # Worker, beat and consumer start while gunicorn boots (two cores: every second counts).
    worker = stack.celery_worker(
        DATABASE, concurrency=2, wait=False, RELIABILITY_KILL_AFTER_PUBLISH=str(kill_flag)
    )
    stack.celery_beat(DATABASE)
    consumer = stack.spawn(
        "consumer", [sys.executable, "-m", "reliability.consumer", "--seconds", "900"],
        stack.env(DATABASE),
    )
    # --preload: a killed worker is replaced by a fork of the loaded app in
    # milliseconds instead of a fresh Django start (seconds on two busy cores).
    web = stack.gunicorn(DATABASE, workers=3, RELIABILITY_FAULT_HOOKS="1",
                         GUNICORN_CMD_ARGS="--preload")
    stack.celery_wait_ready(worker)
    if not _wait_for(lambda: "consumer ready" in consumer.log_path.read_text(), timeout=60):
        raise RuntimeError(f"consumer not ready; see {consumer.log_path}")

    db = Database(stack.database_url(DATABASE))
    writer = Writer(web.url, seeded["token"], seeded["shipper"])
    steps = [
        ("calm", lambda: _calm(context, writer, db)),
        ("a_exception_before_commit", lambda: _exception_before_commit(context, rng, writer, db)),
        ("b_worker_killed_in_transaction", lambda: _worker_killed(context, writer, db, web)),
        ("c_relay_killed_after_publish",
         lambda: _relay_killed(context, writer, db, worker, kill_flag, kill_log)),
        ("d_redis_down", lambda: _redis_down(context, stack, writer, db)),
    ]
    phases: dict[str, dict] = {}
    try:
        log.info("setup took %.1f s", time.monotonic() - started)
        for name, step in steps:
            phase_started = time.monotonic()
            phases[name] = step()
            phases[name]["phase_seconds"] = round(time.monotonic() - phase_started, 1)
            log.info("%s: %s", name, json.dumps(
                {k: v for k, v in phases[name].items() if k not in ("lags", "published_lags", "kills")},
                default=str))
        return _figures(db, phases, kill_log, consumer, batch_size=seeded["relay_batch"])
    finally:
        db.close()


def _drain(db: Database, timeout: float = WAIT_SECONDS) -> float | None:
    """Seconds until no outbox row is left unpublished (None: not within timeout)."""
    started = time.monotonic()
    if _wait_for(lambda: db.unpublished() == 0, timeout=timeout):
        return round(time.monotonic() - started, 2)
    return None


def _receipts_settle(db: Database, timeout: float = 20) -> None:
    """Wait until the consumer has stored every delivery it is going to get."""
    last = -1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = db.value("SELECT count(*) FROM reliability_r03_receipt")
        if now == last:
            return
        last = now
        time.sleep(1.5)


def _phase_end(db: Database, **details) -> dict:
    drain = _drain(db)
    return {**details, "drain_seconds": drain, "unpublished": db.unpublished(),
            "orphans": db.orphans()}


def _calm(context: RunContext, writer: Writer, db: Database) -> dict:
    seconds = context.seconds(15, 6)
    with Background(writer, "R3-calm-", per_second=8, limit_seconds=seconds, threads=3) as bg:
        bg.join(timeout=seconds + 40)
    _drain(db)
    _receipts_settle(db)
    answers = writer.of("R3-calm-")
    lags = [
        row[0] for row in db.rows(
            """SELECT EXTRACT(EPOCH FROM (SELECT min(r.received_at) FROM reliability_r03_receipt r
                                          WHERE r.message_id = o.message_id::text) - o.created_at)
               FROM shipments_outboxmessage o JOIN shipments_shipment s ON s.id = o.shipment_id_ref
               WHERE s.reference LIKE 'R3-calm-%%'"""
        )
    ]
    published = [
        float(row[0]) for row in db.rows(
            """SELECT EXTRACT(EPOCH FROM o.published_at - o.created_at)
               FROM shipments_outboxmessage o JOIN shipments_shipment s ON s.id = o.shipment_id_ref
               WHERE s.reference LIKE 'R3-calm-%%'"""
        )
    ]
    return _phase_end(
        db, writes=len(answers), answered_201=sum(a.status == 201 for a in answers),
        lags=[None if lag is None else float(lag) for lag in lags],
        published_lags=published,
    )


def _exception_before_commit(context: RunContext, rng, writer: Writer, db: Database) -> dict:
    count = int(context.seconds(200, 40))
    plan = [(f"R3-a-raise-{n:04d}", "raise") for n in range(count)]
    plan += [(f"R3-a-ok-{n:04d}", "") for n in range(count // 4)]  # commits in between
    rng.shuffle(plan)
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda item: writer.post(*item), plan))
    raised = [a for a in answers if a.fault == "raise"]
    normal = [a for a in answers if not a.fault]
    return _phase_end(
        db,
        injected=len(raised),
        injected_answered_500=sum(a.status == 500 for a in raised),
        injected_committed=db.committed([a.reference for a in raised]),
        normal=len(normal),
        normal_answered_201=sum(a.status == 201 for a in normal),
        normal_committed=db.committed([a.reference for a in normal]),
    )


def _held_backend(db: Database, *, killed: frozenset[int] = frozenset()) -> tuple[int, bool] | None:
    """The worker pid holding a transaction in the hook, and whether it has written
    (``killed``: workers already killed, whose backends sleep on for a while)."""
    rows = db.rows(
        """SELECT application_name, backend_xid IS NOT NULL FROM pg_stat_activity
           WHERE application_name LIKE 'reliability-hold:%%' AND state = 'active'
             AND query LIKE '%%pg_sleep%%'"""
    )
    for name, has_written in rows:
        pid = int(name.split(":", 1)[1])
        if pid not in killed:
            return pid, bool(has_written)
    return None


def _held_backend_wait(db: Database, timeout: float, killed: set[int]) -> tuple[int, bool] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = _held_backend(db, killed=frozenset(killed))
        if held is not None:
            return held
        time.sleep(0.05)
    return None


def _worker_killed(context: RunContext, writer: Writer, db: Database, web: Process) -> dict:
    count = int(context.seconds(20, 5))
    kills: list[dict] = []
    killed_pids: set[int] = set()
    with Background(writer, "R3-b-bg-", per_second=3, limit_seconds=WAIT_SECONDS * 2):
        for n in range(count):
            reference = f"R3-b-held-{n:04d}"
            answer: list[Answer] = []
            request = threading.Thread(
                target=lambda ref=reference, out=answer: out.append(
                    writer.post(ref, f"sleep={HOLD_SECONDS}")),
                daemon=True,
            )
            sent = time.monotonic()
            request.start()
            held = _held_backend_wait(db, timeout=30, killed=killed_pids)
            seconds_to_hold = round(time.monotonic() - sent, 2)
            if held is None:
                request.join(timeout=40)
                kills.append({"reference": reference, "killed": False, "why": "never held",
                              "answer": answer[0].__dict__ if answer else None})
                continue
            pid, has_written = held
            is_worker = pid in web.children()
            if is_worker:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed_pids.add(pid)
            request.join(timeout=40)
            kills.append({"reference": reference, "pid": pid, "killed": is_worker,
                          "transaction_had_written": has_written,
                          "seconds_to_hold": seconds_to_hold})
        # The killed transactions' backends end when their pg_sleep does.
        _wait_for(lambda: _held_backend(db) is None, timeout=HOLD_SECONDS + 15)
    held_answers = writer.of("R3-b-held-")
    background = writer.of("R3-b-bg-")
    return _phase_end(
        db,
        requested=count,
        killed_in_transaction=sum(k["killed"] and k.get("transaction_had_written", False)
                                  for k in kills),
        killed_requests_answered=sum(a.status != 0 for a in held_answers),
        killed_committed=db.committed([k["reference"] for k in kills if k["killed"]]),
        background_writes=len(background),
        background_5xx=sum(a.status >= 500 for a in background),
        background_no_answer=sum(a.status == 0 for a in background),
        seconds_to_hold_max=max((k.get("seconds_to_hold", 0) for k in kills), default=None),
        kills=kills,
    )


def _kill_log(kill_log: Path) -> list[dict]:
    if not kill_log.exists():
        return []
    return [json.loads(line) for line in kill_log.read_text().splitlines() if line.strip()]


def _sigkill_exits(worker: Process) -> int:
    """Pool processes the Celery worker saw die of SIGKILL (from its log)."""
    return len(re.findall(r"exited with 'signal 9", worker.log_path.read_text(errors="replace")))


def _relay_killed(context: RunContext, writer: Writer, db: Database, worker: Process,
                  kill_flag: Path, kill_log: Path) -> dict:
    count = int(context.seconds(20, 5))
    with Background(writer, "R3-c-bg-", per_second=5, limit_seconds=WAIT_SECONDS * 2):
        for _ in range(count):
            before = len(_kill_log(kill_log))
            kill_flag.touch()
            if not _wait_for(lambda before=before: len(_kill_log(kill_log)) > before,
                             timeout=20, interval=0.1):
                kill_flag.unlink(missing_ok=True)  # no relay pass came: counted as not done
            # Let the worker replace its pool process before the next kill.
            _wait_for(lambda: len(worker.children()) >= 2, timeout=20)
    kills = _kill_log(kill_log)
    end = _phase_end(db)
    _wait_for(lambda: _sigkill_exits(worker) >= len(kills), timeout=10)
    killed_ids = sorted({m for k in kills for m in k["message_ids"]})
    republished = db.value(
        """SELECT count(*) FROM shipments_outboxmessage
           WHERE message_id::text = ANY(%s) AND published_at IS NOT NULL""", (killed_ids,)
    ) if killed_ids else 0
    return {
        **end,
        "requested": count,
        "relay_kills": len(kills),
        "pool_processes_exited_by_sigkill": _sigkill_exits(worker),
        "deliveries_before_a_kill": sum(len(k["message_ids"]) for k in kills),
        "messages_published_before_a_kill": len(killed_ids),
        "of_them_published_again_and_marked": republished,
        "background_writes": len(writer.of("R3-c-bg-")),
    }


def _redis_down(context: RunContext, stack: Stack, writer: Writer, db: Database) -> dict:
    outage = context.seconds(30, 8)
    relay = stack.spawn("relay-loop", [sys.executable, "-c", RELAY_LOOP, "300"],
                         stack.env(DATABASE))
    with Background(writer, "R3-d-bg-", per_second=3, limit_seconds=WAIT_SECONDS * 3):
        time.sleep(3)
        down_at = time.time()
        stack.redis_kill()
        time.sleep(outage)
        up_at, restarted = time.time(), time.monotonic()
        stack.redis_start()
        drained = _drain(db)
        drain_after_redis_up = None if drained is None else round(time.monotonic() - restarted, 2)
        time.sleep(2)
    end = _phase_end(db)
    relay.stop()
    passes = [json.loads(line) for line in relay.log_path.read_text().splitlines()
              if line.startswith("{")]
    during = [p for p in passes if down_at <= p["at"] <= up_at]
    background = writer.of("R3-d-bg-")
    in_outage = [a for a in background if down_at <= a.sent_at <= up_at]
    return {
        **end,
        "outage_seconds": round(up_at - down_at, 1),
        "drain_after_redis_up_seconds": drain_after_redis_up,
        "relay_passes_during_outage": len(during),
        "relay_passes_that_failed_to_publish": sum(
            bool(p.get("failed") or p.get("error")) for p in during),
        "writes_during_outage": len(in_outage),
        "writes_during_outage_5xx": sum(a.status >= 500 for a in in_outage),
        "writes_during_outage_no_answer": sum(a.status == 0 for a in in_outage),
    }


def _p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else float("inf")
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def _figures(db: Database, phases: dict, kill_log: Path, consumer: Process, *,
             batch_size: int) -> list[Figure]:
    final_drain = _drain(db)
    _receipts_settle(db)
    orphans = db.orphans()
    per_phase = {name: phase["orphans"] for name, phase in phases.items()}
    business = sum(orphans[k] for k in BUSINESS_WITHOUT_OUTBOX)
    business_phases = {n: sum(o[k] for k in BUSINESS_WITHOUT_OUTBOX) for n, o in per_phase.items()}
    outbox = sum(orphans[k] for k in OUTBOX_WITHOUT_BUSINESS)
    outbox_phases = {n: sum(o[k] for k in OUTBOX_WITHOUT_BUSINESS) for n, o in per_phase.items()}
    unpublished = db.unpublished()
    receipts, distinct_received = db.rows(
        "SELECT count(*), count(DISTINCT message_id) FROM reliability_r03_receipt")[0]
    applications, distinct_applied = db.rows(
        "SELECT count(*), count(DISTINCT message_id) FROM reliability_r03_application")[0]
    published = db.value(
        "SELECT count(*) FROM shipments_outboxmessage WHERE published_at IS NOT NULL")
    never_received = db.value(
        """SELECT count(*) FROM shipments_outboxmessage o WHERE published_at IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM reliability_r03_receipt r
                           WHERE r.message_id = o.message_id::text)""")
    relay_kills = len(_kill_log(kill_log))
    deliveries_before_kills = sum(len(k["message_ids"]) for k in _kill_log(kill_log))
    # Numbers are handed out as a gap-free prefix 1..n (tracking.relay).
    seq_gaps = db.value(
        "SELECT coalesce(max(stream_seq), 0) - count(stream_seq) FROM shipments_outboxmessage")
    consumer_log = consumer.log_path.read_text(errors="replace")
    duplicate_publishes = receipts - distinct_received
    duplicate_applications = applications - distinct_applied

    calm = phases["calm"]
    lags = [lag if lag is not None else float("inf") for lag in calm["lags"]]
    lag_p99 = _p99(lags)
    a = phases["a_exception_before_commit"]
    b = phases["b_worker_killed_in_transaction"]
    c = phases["c_relay_killed_after_publish"]
    d = phases["d_redis_down"]
    a_count, kills_b, kills_c = a["injected"], b["requested"], c["requested"]
    return [
        Figure("business rows without an outbox row", business, "0",
               business == 0 and all(v == 0 for v in business_phases.values()),
               {"final": orphans, "after_each_phase": per_phase}),
        Figure("outbox rows without a business row", outbox, "0",
               outbox == 0 and all(v == 0 for v in outbox_phases.values()),
               {"after_each_phase": outbox_phases}),
        Figure("outbox rows never published after drain", unpublished, "0", unpublished == 0,
               {"outbox_rows": db.value("SELECT count(*) FROM shipments_outboxmessage"),
                "stream_seq_gaps": seq_gaps,
                "final_drain_seconds": final_drain,
                "after_each_phase": {n: p["unpublished"] for n, p in phases.items()}}),
        Figure("duplicate publishes", duplicate_publishes,
               f"<= relay kills x batch size ({relay_kills} x {batch_size})",
               duplicate_publishes <= relay_kills * batch_size,
               {"deliveries": receipts, "distinct_messages": distinct_received,
                "deliveries_before_relay_kills": deliveries_before_kills,
                "published_rows": published,
                "published_never_received_by_consumer": never_received,
                "consumer_receive_errors": {
                    "read_timeout": consumer_log.count("TimeoutError"),
                    "connection": consumer_log.count("ConnectionError")}}),
        Figure("duplicate applications", duplicate_applications, "0",
               duplicate_applications == 0,
               {"applications": applications, "distinct": distinct_applied}),
        Figure("outbox lag p99, commit -> received (fault-free window), s", round(lag_p99, 3),
               f"<= {LAG_BAR_SECONDS}", lag_p99 <= LAG_BAR_SECONDS,
               {"messages": len(lags),
                "p50": round(statistics.median(lags), 3) if lags else None,
                "max": round(max(lags), 3) if lags else None,
                "published_p99": round(_p99(calm["published_lags"]), 3),
                "writes": calm["writes"], "answered_201": calm["answered_201"]}),
        # The faults happened as many times as the scenario says (else nothing was tested).
        Figure("(a) exceptions injected before commit: rolled back whole",
               f"{a['injected_answered_500']}/{a_count}", f"{a_count}/{a_count}, 0 committed",
               a["injected_answered_500"] == a_count and a["injected_committed"] == 0
               and a["normal_committed"] == a["normal"],
               {k: v for k, v in a.items() if k != "orphans"}),
        Figure("(b) gunicorn workers SIGKILLed inside a written transaction",
               f"{b['killed_in_transaction']}/{kills_b}", f"{kills_b}/{kills_b}, 0 committed",
               b["killed_in_transaction"] == kills_b and b["killed_committed"] == 0,
               {k: v for k, v in b.items() if k not in ("orphans", "kills")}),
        Figure("(c) relay SIGKILLed after publish, before marking",
               f"{relay_kills}/{kills_c}", f"{kills_c}/{kills_c}",
               relay_kills == kills_c
               and c["of_them_published_again_and_marked"] == c["messages_published_before_a_kill"],
               {k: v for k, v in c.items() if k != "orphans"}),
        Figure("(d) relay running while Redis down: drained after Redis up, s",
               d["drain_after_redis_up_seconds"], "drained (<= 90 s), relay ran during outage",
               d["drain_after_redis_up_seconds"] is not None
               and d["relay_passes_that_failed_to_publish"] > 0,
               {k: v for k, v in d.items() if k != "orphans"}),
    ]
