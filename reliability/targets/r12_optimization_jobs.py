"""R12: route-optimisation jobs are bounded, idempotent and crash-safe.

    seed      one hub per job, its vehicles and 50-200 last-mile shipments (bulk,
              through the shipment service, in one manage.py shell)
    submit    every job through the API with an Idempotency-Key and a 20 s time
              limit: two concurrent sends with the same key, then the same
              request again once answered (all three must name one job)
    kill      the Celery worker (master and pool, SIGKILL) twice while jobs are
              mid-solve; the harness starts a new worker each time
    drain     until every job is finished, or the deadline

Figures come from the database and the processes: the jobs' own attempt rows
(routing.OptimizationAttempt: when each claim started and ended, how), the routes
saved per job (distinct inserting transactions, ``xmin``), the jobs' status
messages in the outbox, and the worker's VmHWM.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

import httpx
import psycopg2

from reliability.stack import ROOT, Process, Stack

from . import Figure, RunContext

ID = "R12"
TITLE = "Route-optimisation jobs: bounded, idempotent, crash-safe"
BUDGET_SECONDS = 260

# Six solves at once on the two cores (each is bounded by wall time): 20 jobs of
# 20 s and the work two kills throw away fit the budget.
WORKER_CONCURRENCY = 6
# Wall time of an attempt (claim to saved result) may exceed the limit by this.
WALL_MARGIN_SECONDS = 5
STUCK_FACTOR = 2  # a job "running" longer than this many limits is stuck
POLL_SECONDS = 0.5

SEED_SCRIPT = r"""
import json, random, secrets, sys
from datetime import datetime, time, timedelta
from decimal import Decimal
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token
from dispatch.models import Vehicle
from shipments.models import Hub, Leg, Location, Parcel, Party, Shipment
from shipments.roles import DISPATCHER_GROUP
from shipments.services import ParcelInput, shipment_create
from shipments.states import Mile

spec = json.loads(sys.stdin.read())
rng = random.Random(spec["seed"])
day = timezone.localdate() + timedelta(days=1)
user = User.objects.create_user(username="r12-dispatcher", password="r12-pass-word-1")
user.groups.add(Group.objects.get_or_create(name=DISPATCHER_GROUP)[0])
token = Token.objects.create(user=user)
shipper = Party.objects.create(name="R12 shipper", kind=Party.Kind.SHIPPER, email="s@example.com")
every_day = {d: ["06:00", "22:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
window = (
    timezone.make_aware(datetime.combine(day, time(8))),
    timezone.make_aware(datetime.combine(day, time(20))),
)
jobs = []
for index, stops in enumerate(spec["stops"]):
    # Hubs 0.5 degree apart: each job's doors (within 0.06 degree) are its own.
    centre = (43.0 + 0.5 * (index // 5), 5.0 + 0.5 * (index % 5))
    with transaction.atomic():
        hub = Hub.objects.create(
            code=f"r12-{index:02d}", name=f"R12 hub {index}", kind=Hub.Kind.DEPOT,
            location=Location.objects.create(
                address=f"R12 hub {index}", latitude=centre[0], longitude=centre[1]
            ),
            service_radius_km=15, cutoff_times=["12:00"], opening_hours=every_day,
            handling_minutes=30,
        )
        vehicles = [
            Vehicle.objects.create(
                home_hub=hub, code=f"r12-{index:02d}-{n}", type=Vehicle.Type.VAN,
                capacity_kg=Decimal(800), capacity_m3=Decimal(8), capacity_parcels=120,
            ).pk
            for n in range(max(2, stops // 20))
        ]
        consignee = Party.objects.create(
            name=f"R12 consignee {index}", kind=Party.Kind.CONSIGNEE, email="c@example.com"
        )
        points = [
            (round(centre[0] + rng.uniform(-0.06, 0.06), 6),
             round(centre[1] + rng.uniform(-0.06, 0.06), 6))
            for _ in range(2 * stops)
        ]
        # One shipment through the service; the others are copies of its rows
        # with their own pickup place and door (what the service writes, minus
        # the event log), so seeding takes a second instead of minutes.
        template = shipment_create(
            shipper=shipper, consignee=consignee, reference=f"R12-{index:02d}-000",
            origin={"address": "Pickup", "latitude": points[0][0], "longitude": points[0][1]},
            destination={
                "address": "Door", "latitude": points[1][0], "longitude": points[1][1],
                "contact_name": "R12", "contact_phone": "+33600000000",
            },
            parcels=[ParcelInput(weight_kg=Decimal("2.5"))],
            delivery_window_start=window[0], delivery_window_end=window[1],
            origin_hub=hub, destination_hub=hub,
        ).shipment
        shipment_ids = [template.pk]
        copies = stops - 1
        places = Location.objects.bulk_create(
            Location(
                address="Pickup" if k % 2 == 0 else "Door", latitude=lat, longitude=lng,
                **({} if k % 2 == 0 else {"contact_name": "R12", "contact_phone": "+33600000000"}),
            )
            for k, (lat, lng) in enumerate(points[2:])
        )
        fields = [f.attname for f in Shipment._meta.concrete_fields if f.attname != "id"]
        shipments = Shipment.objects.bulk_create(
            Shipment(**{
                **{name: getattr(template, name) for name in fields},
                "reference": f"R12-{index:02d}-{n + 1:03d}",
                "origin_id": places[2 * n].pk, "destination_id": places[2 * n + 1].pk,
                "tracking_token_hash": secrets.token_hex(32),
                "tracking_salt": secrets.token_hex(16)[: len(template.tracking_salt)],
            })
            for n in range(copies)
        )
        shipment_ids += [shipment.pk for shipment in shipments]
        Parcel.objects.bulk_create(
            Parcel(shipment=shipment, barcode=secrets.token_hex(12), weight_kg=Decimal("2.5"))
            for shipment in shipments
        )
        leg_fields = [f.attname for f in Leg._meta.concrete_fields if f.attname != "id"]
        previous = {}
        for template_leg in Leg.objects.filter(shipment=template).order_by("sequence"):
            swap = {template.origin_id: "origin_id", template.destination_id: "destination_id"}
            rows = []
            for shipment in shipments:
                row = {name: getattr(template_leg, name) for name in leg_fields}
                row["shipment_id"] = shipment.pk
                for end in ("from_location_id", "to_location_id"):
                    if row[end] in swap:
                        row[end] = getattr(shipment, swap[row[end]])
                if row.get("depends_on_id") is not None:
                    row["depends_on_id"] = previous[shipment.pk]
                rows.append(Leg(**row))
            Leg.objects.bulk_create(rows)
            previous = {leg.shipment_id: leg.pk for leg in rows}
        legs = list(
            Leg.objects.filter(shipment_id__in=shipment_ids, mile=Mile.LAST)
            .order_by("pk").values_list("pk", flat=True)
        )
    jobs.append({"hub": hub.pk, "vehicles": vehicles, "legs": legs})
print("R12-SEED " + json.dumps({"token": token.key, "day": day.isoformat(), "jobs": jobs}))
"""


def _seed_start(stack: Stack, db: str, stops: list[int], seed: int,
                workdir) -> subprocess.Popen:
    spec = workdir / "seed-spec.json"
    spec.write_text(json.dumps({"stops": stops, "seed": seed}))
    with spec.open() as stdin:
        return subprocess.Popen(
            [sys.executable, "manage.py", "shell", "-c", SEED_SCRIPT],
            cwd=ROOT, env=stack.env(db), stdin=stdin, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )


def _seed_result(seeding: subprocess.Popen) -> dict:
    stdout, stderr = seeding.communicate(timeout=600)
    line = next((ln for ln in stdout.splitlines() if ln.startswith("R12-SEED ")), None)
    if seeding.returncode != 0 or line is None:
        raise RuntimeError(f"seeding failed:\n{stderr[-3000:]}")
    return json.loads(line.removeprefix("R12-SEED "))


def _rss_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler(threading.Thread):
    """Resident memory of the current worker every second: the sum over its
    master and pool processes (what the host must hold at once), and the
    largest single process's peak (VmHWM)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.worker: Process | None = None
        self.peak_sum_kib = 0
        self.peak_process_kib = 0
        self._halt = threading.Event()

    def sample(self) -> None:
        worker = self.worker
        if worker is None or not worker.alive():
            return
        pids = [worker.pid, *worker.children()]
        self.peak_sum_kib = max(self.peak_sum_kib, sum(_rss_kib(p, "VmRSS") for p in pids))
        self.peak_process_kib = max(
            self.peak_process_kib, *(_rss_kib(p, "VmHWM") for p in pids)
        )

    def run(self) -> None:
        while not self._halt.wait(1.0):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def _submit(client: httpx.Client, body: dict) -> dict:
    """One job: two concurrent sends with one key, then the same request again."""
    key = str(uuid.uuid4())
    headers = {"Idempotency-Key": key}

    def send() -> httpx.Response:
        return client.post("/api/v1/optimizations/", json=body, headers=headers)

    with ThreadPoolExecutor(max_workers=2) as pool:
        concurrent = list(pool.map(lambda _: send(), range(2)))
    again = send()
    answers = [*concurrent, again]
    ids = {r.json().get("id") for r in answers if r.status_code == 202}
    return {
        "key": key,
        "statuses": [r.status_code for r in answers],
        "job_ids": sorted(ids, key=str),
        "replayed": sum(r.headers.get("Idempotent-Replayed") == "true" for r in answers),
    }


def _query(conn, sql: str, params: tuple = ()) -> list[tuple]:
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _connect(stack: Stack, db: str):
    conn = psycopg2.connect(
        host="127.0.0.1", port=stack.pg_port, user="postgres", dbname=db
    )
    conn.autocommit = True
    return conn


def _wait_mid_solve(conn, *, job_ids: list[int], min_age: float, max_age: float,
                    deadline: float) -> bool:
    """Until a job's current attempt is between ``min_age`` and ``max_age``
    seconds old: mid-search, not building or saving."""
    while time.monotonic() < deadline:
        rows = _query(
            conn,
            "SELECT count(*) FROM routing_optimizationjob j "
            "JOIN routing_optimizationattempt a ON a.run_token = j.run_token "
            "WHERE j.id = ANY(%s) AND j.status = 'running' AND a.ended_at IS NULL "
            "AND now() - a.started_at BETWEEN make_interval(secs => %s) "
            "AND make_interval(secs => %s)",
            (job_ids, min_age, max_age),
        )
        if rows[0][0]:
            return True
        time.sleep(POLL_SECONDS)
    return False


def _finished_count(conn, job_ids: list[int]) -> int:
    return _query(
        conn,
        "SELECT count(*) FROM routing_optimizationjob WHERE id = ANY(%s) "
        "AND status IN ('succeeded', 'failed', 'cancelled')",
        (job_ids,),
    )[0][0]


def run(stack: Stack, context: RunContext) -> list[Figure]:
    log = context.logger
    rng = context.rng()
    started = time.monotonic()
    deadline = started + BUDGET_SECONDS - 15
    job_count = 6 if context.quick else 20
    time_limit = int(context.seconds(20, 10))
    stops = [rng.randint(*((20, 60) if context.quick else (50, 200))) for _ in range(job_count)]

    db = ID.lower()
    stack.database_create(db)
    # Seeding and starting the processes overlap: setup is most of the budget.
    seeding = _seed_start(stack, db, stops, context.seed, context.workdir)
    workers = [stack.celery_worker(db, concurrency=WORKER_CONCURRENCY, name="worker-1",
                                   wait=False)]
    stack.celery_beat(db)
    web = stack.gunicorn(db, workers=2)
    seeded = _seed_result(seeding)
    log.info("seeded %d jobs, %d stops, by %.0f s", job_count, sum(stops),
             time.monotonic() - started)
    stack.celery_wait_ready(workers[0])
    rss = RssSampler()
    rss.worker = workers[0]
    rss.start()
    conn = _connect(stack, db)
    log.info("web, worker and beat up at %.0f s", time.monotonic() - started)

    # -- submit ---------------------------------------------------------------
    submitted = []
    client = httpx.Client(
        base_url=web.url, timeout=30,
        headers={"Authorization": f"Token {seeded['token']}"},
    )
    with client:
        for spec in seeded["jobs"]:
            submitted.append(_submit(client, {
                "service_date": seeded["day"], "hub": spec["hub"], "mile": "last",
                "vehicles": spec["vehicles"], "legs": spec["legs"],
                "time_limit_seconds": time_limit,
            }))
    job_ids = [s["job_ids"][0] for s in submitted if len(s["job_ids"]) == 1]
    submit_seconds = time.monotonic() - started
    log.info("submitted %d jobs (%d keys) by %.0f s", len(job_ids), len(submitted),
             submit_seconds)

    # -- two kills mid-solve ------------------------------------------------------
    kills = []
    for number, after_finished in enumerate((job_count // 5, job_count // 2), start=1):
        while (
            _finished_count(conn, job_ids) < after_finished
            and time.monotonic() < deadline
        ):
            time.sleep(POLL_SECONDS)
        min_age = rng.uniform(0.3, 0.6) * time_limit
        if not _wait_mid_solve(conn, job_ids=job_ids, min_age=min_age,
                               max_age=0.75 * time_limit, deadline=deadline):
            log.warning("kill %d: no job mid-solve before the deadline", number)
            break
        running = _query(
            conn,
            "SELECT j.id, extract(epoch FROM now() - a.started_at)::float8 "
            "FROM routing_optimizationjob j JOIN routing_optimizationattempt a "
            "ON a.run_token = j.run_token WHERE j.id = ANY(%s) AND j.status = 'running'",
            (job_ids,),
        )
        rss.sample()
        killed_at = _query(conn, "SELECT now()")[0][0]
        workers[-1].kill()
        restart = time.monotonic()
        workers.append(
            stack.celery_worker(db, concurrency=WORKER_CONCURRENCY, name=f"worker-{number + 1}")
        )
        rss.worker = workers[-1]
        kills.append({
            "killed_at": killed_at,
            "jobs_mid_solve": {job_id: round(float(age), 1) for job_id, age in running},
            "restart_seconds": round(time.monotonic() - restart, 1),
        })
        log.info("kill %d: %d jobs mid-solve %s; worker back in %.1f s", number,
                 len(running), kills[-1]["jobs_mid_solve"], kills[-1]["restart_seconds"])

    # -- drain ------------------------------------------------------------------
    while _finished_count(conn, job_ids) < len(job_ids) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    drained_at = time.monotonic()
    rss.stop()
    rss.sample()
    log.info("drained at %.0f s", drained_at - started)

    return _figures(conn, job_ids=job_ids, submitted=submitted, kills=kills,
                    time_limit=time_limit, rss=rss, job_count=job_count,
                    stops=stops, runtime=drained_at - started)


def _figures(conn, *, job_ids, submitted, kills, time_limit, rss, job_count, stops,
             runtime) -> list[Figure]:
    jobs = {
        row[0]: {"status": row[1], "attempts": row[2], "route_ids": row[3]}
        for row in _query(
            conn,
            "SELECT id, status, attempts, statistics->'route_ids' "
            "FROM routing_optimizationjob",
        )
    }
    attempts = _query(
        conn,
        "SELECT job_id, number, outcome, extract(epoch FROM started_at)::float8, "
        "extract(epoch FROM coalesce(ended_at, now()) - started_at)::float8, "
        "extract(epoch FROM last_seen_at - started_at)::float8, ended_at IS NULL "
        "FROM routing_optimizationattempt ORDER BY job_id, number",
    )
    # A stuck job: unfinished at the end, or "running" in one attempt for longer
    # than twice its limit (a dead attempt counts until it is given back).
    longest_running = max((a[4] for a in attempts), default=0.0)
    stuck = sorted(
        {job_id for job_id, info in jobs.items() if info["status"] != "succeeded"}
        | {a[0] for a in attempts if a[4] > STUCK_FACTOR * time_limit or a[6]}
    )

    # Results: routes per job by inserting transaction, and finish messages.
    route_sets = dict(_query(
        conn,
        "SELECT job_id, count(DISTINCT xmin::text::bigint) FROM routing_route "
        "WHERE job_id IS NOT NULL GROUP BY job_id",
    ))
    routes_of = {
        job_id: sorted(ids) for job_id, ids in _query(
            conn,
            "SELECT job_id, array_agg(id) FROM routing_route WHERE job_id IS NOT NULL "
            "GROUP BY job_id",
        )
    }
    succeeded_messages = dict(_query(
        conn,
        "SELECT (groups->>0), count(*) FROM shipments_outboxmessage "
        "WHERE type = 'optimization.status' AND payload->>'status' = 'succeeded' "
        "GROUP BY 1",
    ))
    doubled_legs = _query(
        conn,
        "SELECT r.job_id, l.leg_id, count(*) FROM routing_routestop_legs l "
        "JOIN routing_routestop s ON s.id = l.routestop_id "
        "JOIN routing_route r ON r.id = s.route_id GROUP BY 1, 2 HAVING count(*) > 1",
    )
    one_result = [
        job_id for job_id in job_ids
        if route_sets.get(job_id) == 1
        and routes_of.get(job_id) == sorted(jobs[job_id]["route_ids"] or [])
        and succeeded_messages.get(f"optimization.{job_id}") == 1
    ]
    keys_one_job = sum(
        len(s["job_ids"]) == 1 and all(code == 202 for code in s["statuses"])
        for s in submitted
    )

    finished = [a for a in attempts if a[2] == "succeeded"]
    wall = [a[4] for a in finished]
    lost = [a for a in attempts if a[2] == "lost"]
    kill_epochs = [k["killed_at"].timestamp() for k in kills]

    def since_kill(attempt) -> float | None:
        """Seconds from the kill to the dead attempt being given back."""
        end = attempt[3] + attempt[4]
        before = [k for k in kill_epochs if k <= end]
        return round(end - before[-1], 1) if before else None

    recoveries = [since_kill(a) for a in lost]
    recoveries = [r for r in recoveries if r is not None]

    scale = {"jobs": job_count, "stops": stops, "time_limit_seconds": time_limit,
             "worker_concurrency": WORKER_CONCURRENCY, "runtime_seconds": round(runtime, 1)}
    return [
        Figure(
            name=f"Jobs still running after {STUCK_FACTOR}x limit",
            value=len(stuck),
            bar="0",
            passed=not stuck and len(jobs) == job_count and len(kills) == 2,
            details={
                "stuck_job_ids": stuck,
                "jobs_in_database": len(jobs),
                "statuses": {s: sum(j["status"] == s for j in jobs.values())
                             for s in {j["status"] for j in jobs.values()}},
                "longest_running_attempt_seconds": round(longest_running, 1),
                "limit_seconds": STUCK_FACTOR * time_limit,
                "kills": [
                    {**k, "killed_at": k["killed_at"].isoformat()} for k in kills
                ],
                "lost_attempts": len(lost),
                "kill_to_requeue_seconds": recoveries,
                **scale,
            },
        ),
        Figure(
            name="Jobs with exactly one saved result",
            value=f"{len(one_result)} of {job_count}",
            bar=f"{job_count} of {job_count}; 1 job per key",
            passed=len(one_result) == job_count and keys_one_job == job_count
            and not doubled_legs,
            details={
                "keys_answering_one_job": f"{keys_one_job} of {len(submitted)}",
                "sends_per_key": 3,
                "replayed_answers": sum(s["replayed"] for s in submitted),
                "route_sets_per_job": sorted(set(route_sets.values())),
                "legs_on_two_stops": len(doubled_legs),
                "jobs_not_one_result": sorted(set(job_ids) - set(one_result)),
            },
        ),
        Figure(
            name="Solve wall time per attempt, claim to saved result (max)",
            value=round(max(wall, default=float("nan")), 2),
            bar=f"<= {time_limit + WALL_MARGIN_SECONDS} s (limit {time_limit} s + "
                f"{WALL_MARGIN_SECONDS} s)",
            passed=bool(wall) and max(wall) <= time_limit + WALL_MARGIN_SECONDS,
            details={
                "succeeded_attempts": len(wall),
                "median_seconds": round(median(wall), 2) if wall else None,
                "lost_attempts_searched_seconds": [
                    round(a[5], 1) for a in lost if a[5] is not None
                ],
            },
        ),
        Figure(
            name="Peak RSS of the worker, master and pool together (MiB)",
            value=round(rss.peak_sum_kib / 1024, 1),
            bar="recorded (baseline)",
            passed=rss.peak_sum_kib > 0,
            details={
                "worker_concurrency": WORKER_CONCURRENCY,
                "largest_process_peak_mib": round(rss.peak_process_kib / 1024, 1),
            },
        ),
    ]
