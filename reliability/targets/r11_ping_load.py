"""R11 — Ping ingestion load with a database restart [LOAD].

    locust (own process) ── 300 drivers: 5 pings every 10 s ──▶ gunicorn (3 workers)
                         └─ 10 dispatchers: 3 lists every 5 s ─▶      │
                                                                    PostgreSQL

    0:00 load starts   3:00 pg_ctl restart -m fast   7:00 pg_ctl restart -m immediate
    10:00 no new batches; phones flush their queues   then DB pings vs the phones' ledger

No Celery worker runs: what the pings queue after commit (relay kicks, ETA
refreshes, at most one queued per route) waits in Redis. On two shared cores a
worker took a third as much CPU as the web server it would be measured with;
in production it runs beside, not inside, the ingestion path.

Both restarts happen in the one run (the whole ``make reliability`` fits 45
minutes) and are reported separately. Every request is logged by the load
generator (start, endpoint, status, duration, Retry-After), so the figures are
computed from what clients saw:

* calm windows (away from the restarts): p50/p95/p99 and error rate per endpoint;
* during each restart: how long failing requests took, and their status
  (503 with Retry-After is the contract, never a 500), the longest request;
* recovery: from "PostgreSQL accepts connections" (``pg_ctl start -w``
  returned) to the end of the first success after the last failure;
* pings: every fix a phone made, which ones the server acknowledged, and the
  rows in ``dispatch_locationping`` (lost = acknowledged but absent;
  duplicated = a fix stored twice or a row no phone made).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from ..stack import ROOT, Stack
from . import Figure, RunContext

ID = "R11"
TITLE = "Ping ingestion load with a database restart"
BUDGET_SECONDS = 640

DATABASE = "r11"
DRIVERS = 300
THREADS = 4  # per gunicorn worker
DISPATCHERS = 10
SHIPMENTS = 120
DURATION = (600, 90)  # seconds of load: full run, quick run
RESTARTS = (("fast", 180, 25), ("immediate", 420, 55))  # mode, at (full), at (quick)
DRAIN_SECONDS = 20  # after the load: phones flush what they still hold
STARTUP_SECONDS = 6  # locust imports, spawns 310 users, then the clock starts
CALM_MARGIN_BEFORE = 2.0  # a calm window ends this long before a restart is issued
CALM_MARGIN_AFTER = (30.0, 12.0)  # … and starts this long after PostgreSQL is back
WARMUP_SECONDS = 15.0

CALM_P95_MS, CALM_P99_MS = 250, 600
FAIL_FAST_SECONDS, HANG_SECONDS, RECOVERY_SECONDS = 2.0, 10.0, 15.0


# ---------------------------------------------------------------------------
# Seeding (a subprocess with the stack's settings): bulk rows, no API calls
# ---------------------------------------------------------------------------


def _seed_main(out_path: str, drivers: int, dispatchers: int, shipments: int) -> None:
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    import secrets
    from datetime import time as clock
    from datetime import timedelta
    from decimal import Decimal

    from django.contrib.auth.models import Group, User
    from django.db import transaction
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from dispatch.models import Driver
    from routing.models import Route
    from shipments.models import Hub, Location, Party
    from shipments.roles import DISPATCHER_GROUP, DRIVER_GROUP
    from shipments.services import ParcelInput, shipment_create

    hub_point = (43.7311, 7.4167)
    now = timezone.now()
    with transaction.atomic():
        location = Location.objects.create(
            address="R11 hub", latitude=hub_point[0], longitude=hub_point[1]
        )
        hub = Hub.objects.create(
            code="r11-hub", name="R11 hub", kind=Hub.Kind.DEPOT, location=location,
            service_radius_km=20,
            opening_hours={d: ["00:00", "23:59"]
                           for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
        )

        def users(prefix: str, count: int, group: str) -> tuple[list, list[str]]:
            made = User.objects.bulk_create(
                [User(username=f"{prefix}-{i}", password="!") for i in range(count)]
            )
            group_id = Group.objects.get_or_create(name=group)[0].pk
            User.groups.through.objects.bulk_create(
                [User.groups.through(user_id=u.pk, group_id=group_id) for u in made]
            )
            tokens = Token.objects.bulk_create(
                [Token(user=u, key=secrets.token_hex(20)) for u in made]
            )
            return made, [t.key for t in tokens]

        driver_users, driver_tokens = users("r11-driver", drivers, DRIVER_GROUP)
        made = Driver.objects.bulk_create(
            [Driver(user=u, home_hub=hub, shift_start=clock(0, 0), shift_end=clock(23, 59))
             for u in driver_users]
        )
        # Every driver is on a published route today, so each batch of pings
        # finds its route and kicks an ETA refresh, as on a real day.
        Route.objects.bulk_create(
            [Route(service_date=timezone.localdate(), hub=hub, mile="last", driver=d,
                   status=Route.Status.PUBLISHED, planned_start=now,
                   planned_end=now + timedelta(hours=8), published_at=now)
             for d in made]
        )
        _, dispatcher_tokens = users("r11-dispatcher", dispatchers, DISPATCHER_GROUP)
    shipper = Party.objects.create(name="R11 shipper", kind=Party.Kind.SHIPPER)
    for n in range(shipments):
        consignee = Party.objects.create(name=f"R11 consignee {n}", kind=Party.Kind.CONSIGNEE)
        shipment_create(
            shipper=shipper, consignee=consignee, reference=f"R11-{n:04d}",
            origin={"address": "R11 hub", "latitude": hub_point[0], "longitude": hub_point[1]},
            destination={"address": f"{n} R11 street",
                         "latitude": hub_point[0] + 0.0001 * (n % 50),
                         "longitude": hub_point[1] + 0.0001 * (n // 50)},
            parcels=[ParcelInput(weight_kg=Decimal("2"))],
            origin_hub=hub, destination_hub=hub, source="system",
        )
    Path(out_path).write_text(
        json.dumps({"drivers": driver_tokens, "dispatchers": dispatcher_tokens})
    )


def _seed(stack: Stack, workdir: Path) -> Path:
    out = workdir / "seed.json"
    subprocess.run(
        [sys.executable, "-m", "reliability.targets.r11_ping_load", "seed", str(out),
         str(DRIVERS), str(DISPATCHERS), str(SHIPMENTS)],
        cwd=ROOT, env=stack.env(DATABASE), check=True, capture_output=True, text=True,
        timeout=300,
    )
    return out


# ---------------------------------------------------------------------------
# Reading what the clients saw
# ---------------------------------------------------------------------------


def _requests(path: Path) -> list[dict]:
    with path.open() as handle:
        return [
            {"start": float(r["started"]), "name": r["name"], "status": int(r["status"]),
             "ms": float(r["ms"]), "retry_after": r["retry_after"],
             "replayed": r["replayed"] == "true"}
            for r in csv.DictReader(handle)
        ]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _ok(row: dict) -> bool:
    return row["status"] == 200


def _calm_stats(rows: list[dict], windows: list[tuple[float, float]]) -> dict:
    calm = [r for r in rows if any(a <= r["start"] < b for a, b in windows)]
    stats = {}
    for name in sorted({r["name"] for r in rows}):
        mine = [r for r in calm if r["name"] == name]
        ms = [r["ms"] for r in mine]
        errors = [r for r in mine if not _ok(r)]
        stats[name] = {
            "requests": len(mine),
            "p50_ms": round(_percentile(ms, 50), 1),
            "p95_ms": round(_percentile(ms, 95), 1),
            "p99_ms": round(_percentile(ms, 99), 1),
            "max_ms": round(max(ms, default=0), 1),
            "errors": len(errors),
            "error_rate": round(len(errors) / len(mine), 5) if mine else None,
            "error_statuses": sorted({r["status"] for r in errors}),
        }
    return stats


def _restart_stats(rows: list[dict], restart: dict, next_start: float) -> dict:
    """What clients saw from the restart being issued until recovery (bounded by
    the next calm window)."""
    issued, ready = restart["issued"], restart["ready"]
    window = [
        r for r in rows
        if issued - 1 <= r["start"] + r["ms"] / 1000 and r["start"] < next_start
    ]
    failed = [r for r in window if not _ok(r)]
    last_failure = max((r["start"] for r in failed), default=None)
    if last_failure is None:
        recovered_at = ready
    else:
        after = [r for r in window if _ok(r) and r["start"] > last_failure]
        recovered_at = min((r["start"] + r["ms"] / 1000 for r in after), default=None)
    statuses: dict[str, int] = {}
    for r in failed:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    failing_ms = [r["ms"] for r in failed]
    return {
        "mode": restart["mode"],
        "issued_at_s": round(issued - restart["t0"], 1),
        "postgres_down_s": round(restart["stopped"] - issued, 2),
        "postgres_ready_after_issue_s": round(ready - issued, 2),
        "requests_in_window": len(window),
        "failed": len(failed),
        "failed_by_status": statuses,
        "failed_503_with_retry_after": sum(
            1 for r in failed if r["status"] == 503 and r["retry_after"]
        ),
        "failed_5xx_other_than_503": sum(
            1 for r in failed if r["status"] >= 500 and r["status"] != 503
        ),
        "connection_errors": sum(1 for r in failed if r["status"] == 0),
        "failing_request_p95_ms": round(_percentile(failing_ms, 95), 1),
        "failing_request_max_ms": round(max(failing_ms, default=0), 1),
        "longest_request_ms": round(max((r["ms"] for r in window), default=0), 1),
        "recovery_s": (
            None if recovered_at is None else round(max(0.0, recovered_at - ready), 2)
        ),
        "replayed_answers": sum(1 for r in window if r["replayed"]),
    }


def _server_times(path: Path) -> list[dict]:
    """gunicorn access log rows: finished (epoch, 1 s resolution), path, status, ms."""
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text(errors="replace").splitlines():
        try:
            stamp, rest = line[1:].split("] ", 1)
            _method, url, status, micros = rest.split()
            finished = datetime.strptime(stamp, "%d/%b/%Y:%H:%M:%S %z").timestamp()
        except ValueError:
            continue
        rows.append({"finished": finished, "path": url, "status": int(status),
                     "ms": int(micros) / 1000})
    return rows


def _server_window(rows: list[dict], start: float, end: float) -> dict:
    """The server's own handling time of requests it finished in [start, end)."""
    mine = [r for r in rows if start <= r["finished"] < end]
    failed = [r["ms"] for r in mine if r["status"] >= 500]
    return {
        "answered": len(mine),
        "answered_5xx": len(failed),
        "handling_p95_ms": round(_percentile([r["ms"] for r in mine], 95), 1),
        "handling_max_ms": round(max((r["ms"] for r in mine), default=0), 1),
        "failing_handling_max_ms": round(max(failed, default=0), 1),
    }


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU the processes used so far (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return round(total / ticks, 1)


def _pings_check(stack: Stack, ledger: dict) -> dict:
    rows = stack.psql(
        DATABASE,
        "SELECT device_id, round(extract(epoch FROM recorded_at)::numeric, 3) "
        "FROM dispatch_locationping",
    )
    stored: dict[str, list[float]] = {}
    for line in rows.splitlines():
        device, epoch = line.split("|")
        stored.setdefault(device, []).append(round(float(epoch), 3))
    made = acked = lost = duplicated = phantom = gave_up = pending = 0
    for device, entry in ledger.items():
        in_db = stored.get(device, [])
        in_db_set = set(in_db)
        made_set = {round(t, 3) for t in entry["made"]}
        acked_set = {round(t, 3) for t in entry["acked"]}
        made += len(made_set)
        acked += len(acked_set)
        lost += len(acked_set - in_db_set)
        duplicated += len(in_db) - len(in_db_set)
        phantom += len(in_db_set - made_set)
        gave_up += len(entry.get("gave_up", []))
        pending += len(made_set - acked_set - {round(t, 3) for t in entry.get("gave_up", [])})
    phantom += sum(len(v) for d, v in stored.items() if d not in ledger)
    total_rows = sum(len(v) for v in stored.values())
    return {
        "pings_made": made, "pings_acknowledged": acked, "rows_in_db": total_rows,
        "lost": lost, "duplicated": duplicated + phantom, "stored_twice": duplicated,
        "rows_no_phone_made": phantom, "gave_up": gave_up,
        "unacknowledged_at_end": pending,
        "rejected_by_server": sum(len(e.get("rejected", [])) for e in ledger.values()),
    }


# ---------------------------------------------------------------------------
# The scenario
# ---------------------------------------------------------------------------


def run(stack: Stack, context: RunContext) -> list[Figure]:
    log = context.logger
    workdir = context.workdir
    duration = context.seconds(*DURATION)
    stack.database_create(DATABASE)
    started = time.monotonic()
    seed_file = _seed(stack, workdir)
    log.info("seeded %s drivers on routes, %s dispatchers, %s shipments in %.1f s",
             DRIVERS, DISPATCHERS, SHIPMENTS, time.monotonic() - started)
    # gunicorn's access log gives the server's own time per request (from the
    # worker taking it to the answer), apart from the time it waited in the backlog.
    access_log = stack.logs / "gunicorn-access.log"
    # Threads: a request spends ~90% of its time waiting on PostgreSQL and Redis
    # (measured: 11 ms CPU of ~100 ms), so 3 single-threaded workers top out at
    # the scenario's 30 requests/s; 4 threads each overlap those waits.
    web = stack.gunicorn(
        DATABASE, workers=3,
        GUNICORN_CMD_ARGS=f"--threads {THREADS} --access-logfile {access_log} "
        "--access-logformat '%(t)s %(m)s %(U)s %(s)s %(D)s'",
    )

    out_dir = workdir / "locust"
    out_dir.mkdir(exist_ok=True)
    t0 = time.time() + STARTUP_SECONDS
    run_seconds = int(STARTUP_SECONDS + duration + DRAIN_SECONDS)
    locust_log = (stack.logs / "locust.log").open("ab")
    # The load generator pinned to one core (RELIABILITY.md), the server floats.
    pin = ["taskset", "-c", str(os.cpu_count() - 1)] if shutil.which("taskset") else []
    load_at_start = round(os.getloadavg()[0], 2)
    locust = subprocess.Popen(
        [*pin, sys.executable, "-m", "locust", "-f", str(ROOT / "reliability" / "locust_r11.py"),
         "--headless", "--host", web.url, "-u", str(DRIVERS + DISPATCHERS), "-r", "100",
         "-t", f"{run_seconds}s", "--stop-timeout", "15", "--csv", str(out_dir / "r11"),
         "--loglevel", "WARNING", "--only-summary"],
        cwd=ROOT, stdout=locust_log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "R11_SEED_FILE": str(seed_file), "R11_OUT_DIR": str(out_dir),
             "R11_T0": str(t0), "R11_DURATION": str(duration)},
    )
    locust_log.close()

    restarts = []
    locust_cpu = 0.0
    try:
        for mode, at_full, at_quick in RESTARTS:
            at = t0 + context.seconds(at_full, at_quick)
            while time.time() < at:
                if locust.poll() is not None:
                    raise RuntimeError(f"locust exited early; see {stack.logs / 'locust.log'}")
                time.sleep(min(1.0, at - time.time()))
            issued = time.time()
            stack.postgres_stop(mode)
            stopped = time.time()
            stack.postgres_start()  # -w: returns once PostgreSQL accepts connections
            ready = time.time()
            restarts.append({"mode": mode, "t0": t0, "issued": issued, "stopped": stopped,
                             "ready": ready})
            log.info("pg_ctl restart -m %s at %.0f s: down %.1f s, accepting after %.1f s",
                     mode, issued - t0, stopped - issued, ready - issued)
        # The load generator's CPU, read just before it exits (it shares the cores).
        while locust.poll() is None and time.time() < t0 + duration + DRAIN_SECONDS:
            locust_cpu = _cpu_seconds([locust.pid])
            time.sleep(1)
        locust.wait(timeout=run_seconds + 120)
    finally:
        if locust.poll() is None:
            locust.terminate()
            locust.wait(timeout=30)
        peak_web_rss = web.peak_rss_kib()
        cpu_seconds = {"gunicorn": _cpu_seconds([web.pid, *web.children()])}
        web.stop()

    rows = _requests(out_dir / "requests.csv")
    ledger = json.loads((out_dir / "ledger.json").read_text())
    end = t0 + duration
    edges = [t0 + WARMUP_SECONDS]
    for restart in restarts:
        edges += [restart["issued"] - CALM_MARGIN_BEFORE,
                  restart["ready"] + context.seconds(*CALM_MARGIN_AFTER)]
    edges.append(end)
    calm_windows = [(edges[i], edges[i + 1]) for i in range(0, len(edges), 2)]
    calm = _calm_stats(rows, calm_windows)
    restart_stats = [
        _restart_stats(rows, restart, calm_windows[i + 1][0])
        for i, restart in enumerate(restarts)
    ]
    server = _server_times(access_log)
    for stats, restart, window in zip(restart_stats, restarts, calm_windows[1:], strict=True):
        stats["server"] = _server_window(server, restart["issued"] - 1, window[0])
    server_calm = [_server_window(server, a, b) for a, b in calm_windows]
    pings = _pings_check(stack, ledger)
    load = {
        "requests": len(rows),
        "ping_requests_per_s": round(
            sum(1 for r in rows if r["name"] == "pings" and t0 <= r["start"] < end) / duration, 1),
        "calm_seconds": round(sum(b - a for a, b in calm_windows), 1),
        "web_peak_rss_kib": peak_web_rss,
        "cpu_seconds": {**cpu_seconds, "locust": locust_cpu},
        # What the machine's load cannot change: server CPU per request served.
        "gunicorn_cpu_ms_per_request": round(
            1000 * cpu_seconds["gunicorn"] / max(1, sum(1 for r in rows if r["status"])), 1
        ),
        "cpus": os.cpu_count(),
        "load_avg_1m_at_start": load_at_start,
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
    }

    figures = []
    worst_p95 = max(s["p95_ms"] for s in calm.values())
    worst_p99 = max(s["p99_ms"] for s in calm.values())
    calm_errors = sum(s["errors"] for s in calm.values())
    figures.append(Figure(
        name="calm windows: worst endpoint p95 / p99 (ms), errors",
        value={"p95_ms": worst_p95, "p99_ms": worst_p99, "errors": calm_errors},
        bar=f"p95 <= {CALM_P95_MS} ms, p99 <= {CALM_P99_MS} ms, 0 errors, every endpoint",
        passed=worst_p95 <= CALM_P95_MS and worst_p99 <= CALM_P99_MS and calm_errors == 0,
        details={"per_endpoint": calm, "load": load, "server_side_calm_windows": server_calm},
    ))
    for stats in restart_stats:
        fail_fast = (
            stats["failing_request_max_ms"] <= FAIL_FAST_SECONDS * 1000
            and stats["failed_5xx_other_than_503"] == 0
            and stats["connection_errors"] == 0
            and stats["failed_503_with_retry_after"] == stats["failed"]
        )
        figures.append(Figure(
            name=f"restart -m {stats['mode']}: failing requests (max ms, all 503 + Retry-After)",
            value={"failed": stats["failed"], "max_ms": stats["failing_request_max_ms"],
                   "all_503_retry_after": stats["failed_503_with_retry_after"] == stats["failed"]},
            bar=f"each fails within {FAIL_FAST_SECONDS:.0f} s with 503 + Retry-After, never 500",
            passed=fail_fast,
            details=stats,
        ))
        figures.append(Figure(
            name=f"restart -m {stats['mode']}: longest request (ms)",
            value=stats["longest_request_ms"],
            bar=f"<= {HANG_SECONDS * 1000:.0f} ms",
            passed=stats["longest_request_ms"] <= HANG_SECONDS * 1000,
        ))
        figures.append(Figure(
            name=f"restart -m {stats['mode']}: recovery after PostgreSQL accepts (s)",
            value=stats["recovery_s"],
            bar=f"<= {RECOVERY_SECONDS:.0f} s",
            passed=stats["recovery_s"] is not None and stats["recovery_s"] <= RECOVERY_SECONDS,
        ))
    figures.append(Figure(
        name="pings lost / duplicated (of pings made)",
        value={"lost": pings["lost"], "duplicated": pings["duplicated"],
               "made": pings["pings_made"]},
        bar="0 lost, 0 duplicated, every ping made acknowledged and stored",
        passed=(pings["lost"] == 0 and pings["duplicated"] == 0
                and pings["unacknowledged_at_end"] == 0 and pings["gave_up"] == 0
                and pings["rows_in_db"] == pings["pings_made"]),
        details=pings,
    ))
    return figures


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "seed":
    _seed_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
