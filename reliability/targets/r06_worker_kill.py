"""R6: worker SIGKILL with late ack; idempotent tasks; poison task [FAULT].

2,000 tasks of three real kinds, each with an effect counted in the database
or the media storage:

    notify a customer  notification_send_task(message_id)  "notification.sent" events of the message
    recompute an ETA   eta_route_refresh_task(route_id)    ETA history rows of the route's stop
    POD thumbnail      pod_thumbnail_make_task(pod_id)     thumbnail files beside the photo

are queued at a steady pace into a prefork worker (2 children, acks_late,
reject_on_worker_lost, prefetch 1, visibility timeout 60 s) while the harness
SIGKILLs a random pool child every 15 s and the main worker process twice
(cold: its children are left to die, a new worker is started). A poison task
that calls ``os._exit(1)`` on every run is queued first; the delivery cap
(``shipments.taskguard``) must stop it after 5 runs.

Deliveries are read from the workers' own logs ("Task …[id] received"), kills
and effects carry wall-clock times, so the time from a kill to the completion
of the tasks it interrupted is measured per kill.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from ..stack import ROOT, Stack
from . import Figure, RunContext

ID = "R6"
TITLE = "Worker SIGKILL with late ack; idempotent tasks; poison task"
BUDGET_SECONDS = 200

DATABASE = "r06"
VISIBILITY_TIMEOUT_SECONDS = 60
MAX_DELIVERIES = 5  # the product's default delivery cap
WORKER_ENV = {
    "CELERY_VISIBILITY_TIMEOUT_SECONDS": str(VISIBILITY_TIMEOUT_SECONDS),
    "DB_CONN_MAX_AGE": "60",  # a worker keeps its connection, as deployed
}
POISON_TASK_ID = "r06-poison"
KINDS = ("notify", "eta", "thumb")
RECEIVED = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] Task [\w.]+\[([\w-]+)\] received"
)


# ---------------------------------------------------------------------------
# Run inside Django (a subprocess with the stack's environment)
# ---------------------------------------------------------------------------


def seed(*, notify: int, eta: int, thumb: int, media_dir: str) -> dict:
    """Messages to send, routes to re-time, proofs to thumbnail (bulk inserts)."""
    import io
    from datetime import timedelta

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from django.utils import timezone
    from PIL import Image

    from dispatch.models import ProofOfDelivery
    from notifications.models import (
        Channel,
        Message,
        NotificationRule,
        RecipientRole,
        Trigger,
    )
    from routing.models import Route, RouteStop
    from shipments.models import ShipmentEvent
    from shipments.states import Mile
    from tests.factories import driver_make, hub_network, location_make, shipment_make

    _origin_hub, hub = hub_network()
    driver = driver_make(hub)
    rule = NotificationRule.objects.create(
        name="R6 out for delivery", trigger=Trigger.OUT_FOR_DELIVERY,
        recipient_role=RecipientRole.CONSIGNEE, channel=Channel.EMAIL,
    )
    # Ten messages per shipment (one event each): what a busy afternoon looks like.
    messages = []
    for first in range(0, notify, 10):
        shipment = shipment_make().shipment
        event = ShipmentEvent.objects.filter(shipment=shipment).order_by("id").first()
        messages += [
            Message(
                shipment=shipment, event=event, rule=rule, channel=Channel.EMAIL,
                recipient_role=RecipientRole.CONSIGNEE, recipient=f"r06-{n}@example.com",
                subject="Your parcel is out for delivery", body="Arriving between 14:00 and 16:00.",
                status=Message.Status.QUEUED,
            )
            for n in range(first, min(first + 10, notify))
        ]
    messages = Message.objects.bulk_create(messages)

    # Published routes that start tomorrow, never re-timed: the first refresh
    # writes one ETA history row for the stop, a repeat finds nothing moved.
    tomorrow = timezone.localdate() + timedelta(days=1)
    start = timezone.make_aware(datetime.combine(tomorrow, datetime.min.time())) + timedelta(hours=9)
    stop_location = location_make((43.7384, 7.4246))
    routes = Route.objects.bulk_create(
        Route(
            service_date=tomorrow, hub=hub, mile=Mile.LAST, status=Route.Status.PUBLISHED,
            planned_start=start, planned_end=start + timedelta(hours=1),
        )
        for _ in range(eta)
    )
    RouteStop.objects.bulk_create(
        RouteStop(
            route=route, sequence=1, kind=RouteStop.Kind.DELIVERY, location=stop_location,
            planned_arrival=start + timedelta(minutes=20),
            planned_departure=start + timedelta(minutes=23),
        )
        for route in routes
    )

    # Proofs with a phone-sized photo each, on one stop of a finished route.
    pod_route = Route.objects.create(
        service_date=timezone.localdate(), hub=hub, mile=Mile.LAST, status=Route.Status.COMPLETED,
        planned_start=timezone.now(),
    )
    pod_stop = RouteStop.objects.create(
        route=pod_route, sequence=1, kind=RouteStop.Kind.DELIVERY, location=stop_location,
    )
    photo = io.BytesIO()
    Image.radial_gradient("L").resize((1600, 1200)).convert("RGB").save(photo, "JPEG", quality=85)
    pods = ProofOfDelivery.objects.bulk_create(
        ProofOfDelivery(
            stop=pod_stop, driver=driver,
            photo=default_storage.save(f"{media_dir}/{n:05d}.jpg", ContentFile(photo.getvalue())),
        )
        for n in range(thumb)
    )
    return {
        "notify": [m.pk for m in messages],
        "eta": [r.pk for r in routes],
        "thumb": [p.pk for p in pods],
        "photos": {str(p.pk): default_storage.path(p.photo.name) for p in pods},
    }


def enqueue(*, tasks: list[list], seconds: float) -> dict:
    """Send the poison task, then ``tasks`` ([kind, key], shuffled) at a steady pace."""
    from dispatch.pod_tasks import pod_thumbnail_make_task
    from notifications.tasks import notification_send_task
    from reliability.tasks import poison_task
    from tracking.tasks import eta_route_refresh_task

    by_kind = {
        "notify": notification_send_task,
        "eta": eta_route_refresh_task,
        "thumb": pod_thumbnail_make_task,
    }
    poison_task.apply_async(args=[POISON_TASK_ID], task_id=POISON_TASK_ID)
    started = time.monotonic()
    for index, (kind, key) in enumerate(tasks):
        due = started + seconds * index / len(tasks)
        if (pause := due - time.monotonic()) > 0:
            time.sleep(pause)
        by_kind[kind].apply_async(args=[key], task_id=task_id(kind, key))
    return {"sent": len(tasks) + 1, "seconds": round(time.monotonic() - started, 1)}


def task_id(kind: str, key: int) -> str:
    return f"r06-{kind}-{key}"


# ---------------------------------------------------------------------------
# The harness side
# ---------------------------------------------------------------------------


def _django_command(function: str, kwargs: dict) -> list[str]:
    code = (
        "import django, json, sys; django.setup(); "
        f"from reliability.targets.r06_worker_kill import {function}; "
        f"print('R06:' + json.dumps({function}(**json.loads(sys.argv[1]))))"
    )
    return [sys.executable, "-c", code, json.dumps(kwargs)]


def _django_output(stdout: str, stderr: str, function: str) -> dict:
    for line in reversed(stdout.splitlines()):
        if line.startswith("R06:"):
            return json.loads(line[4:])
    raise RuntimeError(f"{function} failed:\n{stderr[-3000:]}")


def _django_run(stack: Stack, function: str, **kwargs) -> dict:
    result = subprocess.run(
        _django_command(function, kwargs), cwd=ROOT, env=stack.env(DATABASE, **WORKER_ENV),
        capture_output=True, text=True, timeout=180, check=False,
    )
    return _django_output(result.stdout, result.stderr, function)


class Effects:
    """Effects per task key, read straight from PostgreSQL and the media directory."""

    def __init__(self, stack: Stack, seeded: dict):
        self.stack = stack
        self.seeded = seeded
        self.photos = {int(k): Path(v) for k, v in seeded["photos"].items()}
        self.media_root = next(iter(self.photos.values())).parent

    def _rows(self, sql: str) -> dict[int, tuple[int, float]]:
        out = self.stack.psql(DATABASE, sql)
        rows = {}
        for line in out.splitlines():
            key, count, first = line.split("|")
            rows[int(key)] = (int(count), float(first) if first else 0.0)
        return rows

    def notify(self) -> dict[int, tuple[int, float]]:
        return self._rows(
            "SELECT (payload->>'message_id')::int, count(*), extract(epoch FROM min(recorded_at))"
            " FROM shipments_shipmentevent WHERE type = 'notification.sent' GROUP BY 1"
        )

    def eta(self) -> dict[int, tuple[int, float]]:
        ids = self.seeded["eta"]
        return self._rows(
            "SELECT s.route_id, count(r.id), extract(epoch FROM min(r.computed_at))"
            " FROM routing_routestop s JOIN tracking_etarecord r ON r.stop_id = s.id"
            f" WHERE s.route_id BETWEEN {min(ids)} AND {max(ids)} GROUP BY 1"
        )

    def thumb(self, *, check_content: bool = True) -> dict[int, tuple[int, float]]:
        """Thumbnail files per proof (renamed second copies included); with
        ``check_content`` a file that does not decode is no thumbnail."""
        files_by_stem: dict[str, list[Path]] = {}
        for path in self.media_root.glob("*.thumb*.jpg"):
            files_by_stem.setdefault(path.name.split(".thumb")[0], []).append(path)
        rows = {}
        for pod_id, photo in self.photos.items():
            files = files_by_stem.get(photo.stem, [])
            if check_content:
                files = [p for p in files if _decodes(p)]
            if files:
                rows[pod_id] = (len(files), min(p.stat().st_mtime for p in files))
        return rows

    def all(self) -> dict[str, dict[int, tuple[int, float]]]:
        return {"notify": self.notify(), "eta": self.eta(), "thumb": self.thumb()}

    def done(self) -> int:
        """Progress, cheaply: keys with an effect (thumbnails not decoded)."""
        return len(self.notify()) + len(self.eta()) + len(self.thumb(check_content=False))


def _decodes(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, SyntaxError, ValueError):
        return False
    return True


def _receipts(stack: Stack) -> dict[str, list[float]]:
    """Every "received" line of every worker log: task id → epoch seconds."""
    zone = ZoneInfo(os.environ.get("TIME_ZONE", "Europe/Paris"))
    receipts: dict[str, list[float]] = {}
    for log in sorted(stack.logs.glob("worker*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if match := RECEIVED.match(line):
                at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=zone)
                receipts.setdefault(match[2], []).append(at.timestamp())
    return receipts


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def run(stack: Stack, context: RunContext) -> list[Figure]:
    log = context.logger
    rng = context.rng()
    counts = {"notify": 667, "eta": 667, "thumb": 666}
    if context.quick:
        counts = dict.fromkeys(KINDS, 200)
    total = sum(counts.values())
    enqueue_seconds = context.seconds(60, 20)
    child_kill_every = 15.0
    fault_window = context.seconds(80, 35)  # child kills every 15 s until then
    main_kills_at = [context.seconds(20, 10), context.seconds(50, 28)]
    deadline_after_last_kill = VISIBILITY_TIMEOUT_SECONDS + 60
    drain_limit = deadline_after_last_kill + context.seconds(120, 60)

    stack.database_create(DATABASE)
    media_dir = f"pod/r06-{datetime.now(UTC):%Y%m%d%H%M%S}-{context.seed}"
    started = time.monotonic()
    seeded = _django_run(stack, "seed", media_dir=media_dir, **counts)
    log.info("seeded %s tasks' rows in %.1f s", total, time.monotonic() - started)
    effects = Effects(stack, seeded)

    worker = stack.celery_worker(DATABASE, concurrency=2, name="worker", **WORKER_ENV)
    soft_shutdown = stack.manage(
        DATABASE, "shell", "-c",
        "from config.celery import app; print(app.conf.worker_soft_shutdown_timeout)",
    ).strip().splitlines()[-1]

    tasks = [[kind, key] for kind in KINDS for key in seeded[kind]]
    rng.shuffle(tasks)
    producer = subprocess.Popen(
        _django_command("enqueue", {"tasks": tasks, "seconds": enqueue_seconds}),
        cwd=ROOT, env=stack.env(DATABASE, **WORKER_ENV), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    t0 = time.monotonic()
    kills: list[dict] = []
    next_child_kill = child_kill_every
    pending_main = list(main_kills_at)
    orphans: list[int] = []  # children of a killed main, SIGKILLed 10 s later
    orphans_killed_at = 0.0
    restarts = 0

    def kill_record(kind: str, pid: int) -> None:
        kills.append({"kind": kind, "pid": pid, "at": time.time(), "t": round(time.monotonic() - t0, 1)})
        log.info("t=%.0f s: SIGKILL %s %s", kills[-1]["t"], kind, pid)

    # Faults while the work flows; every loop is bounded by the fault window.
    while time.monotonic() - t0 < fault_window:
        elapsed = time.monotonic() - t0
        if pending_main and elapsed >= pending_main[0]:
            pending_main.pop(0)
            children = worker.children()
            os.kill(worker.pid, signal.SIGKILL)
            kill_record("main", worker.pid)
            worker.popen.wait(timeout=10)
            orphans += children
            orphans_killed_at = time.monotonic() - t0 + 10
            restarts += 1
            worker = stack.celery_worker(
                DATABASE, concurrency=2, name=f"worker{restarts + 1}", **WORKER_ENV
            )
            continue
        if elapsed >= next_child_kill:
            next_child_kill = elapsed + child_kill_every
            children = [pid for pid in worker.children() if _alive(pid)]
            if children:
                victim = rng.choice(children)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
                kill_record("child", victim)
        # Children of a killed main may finish what they hold (their acks are
        # lost with the main); whatever lingers is killed like the rest of it.
        if orphans and elapsed >= orphans_killed_at:
            for pid in [p for p in orphans if _alive(p)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if not pending_main and producer.poll() is not None and effects.done() >= total:
            break
        time.sleep(1)

    produced = _django_output(*producer.communicate(timeout=120), "enqueue")
    last_kill_at = max(k["at"] for k in kills)
    bar_at = last_kill_at + deadline_after_last_kill

    def poison_dead_lettered() -> bool:
        sql = f"SELECT count(*) FROM shipments_deadletter WHERE task_id = '{POISON_TASK_ID}'"
        return stack.psql(DATABASE, sql) == "1"

    log.info("faults over at t=%.0f s; waiting for the rest (bar: %s s after the last kill)",
             time.monotonic() - t0, deadline_after_last_kill)
    # Past the bar, keep waiting while the queue drains (bounded), so a task
    # still queued on a slow machine is told apart from a task lost.
    done_at_bar = None
    while time.time() < last_kill_at + drain_limit:
        done = effects.done()
        if done_at_bar is None and time.time() >= bar_at:
            done_at_bar = done
            log.info("%s of %s done at the bar; draining", done, total)
        if done >= total and poison_dead_lettered():
            break
        time.sleep(2)
    for pid in orphans:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    # -- figures ------------------------------------------------------------------
    observed = effects.all()
    receipts = _receipts(stack)
    missing = {kind: [k for k in seeded[kind] if k not in observed[kind]] for kind in KINDS}
    doubled = {kind: [k for k, (n, _) in observed[kind].items() if n > 1] for kind in KINDS}
    lost_total = sum(len(v) for v in missing.values())
    doubled_total = sum(len(v) for v in doubled.values())

    completion = {task_id(kind, key): first for kind in KINDS for key, (_, first) in observed[kind].items()}
    deliveries = Counter({tid: len(times) for tid, times in receipts.items() if tid.startswith("r06-")})
    redeliveries = sum(n - 1 for tid, n in deliveries.items() if tid != POISON_TASK_ID)
    # A delivery that did not finish was ended by the first kill after it (a
    # child kill, or the cold kill of the worker holding it); the task's next
    # delivery is its recovery, its effect the completion.
    hits: dict[int, list[str]] = {index: [] for index in range(len(kills))}
    for tid, times in receipts.items():
        if not tid.startswith("r06-") or tid == POISON_TASK_ID:
            continue
        times = sorted(times)
        for received, again in zip(times, times[1:], strict=False):
            cause = next((i for i, k in enumerate(kills) if received <= k["at"] < again), None)
            if cause is not None and tid not in hits[cause]:
                hits[cause].append(tid)
    per_kill = []
    for index, kill in enumerate(kills):
        hit = hits[index]
        never = [tid for tid in hit if tid not in completion]
        # Killed after its effect committed, before the ack: delivered again,
        # and the repeat must add nothing (counted in "tasks with >1 effect").
        effect_before_kill = [tid for tid in hit if completion.get(tid, kill["at"]) < kill["at"]]
        worst = max((completion[tid] - kill["at"] for tid in hit if tid in completion), default=0.0)
        per_kill.append({**kill, "interrupted": len(hit), "never_completed": never,
                         "redelivered_after_its_effect": effect_before_kill,
                         "worst_seconds": round(max(0.0, worst), 1)})
    never_completed = sum(len(k["never_completed"]) for k in per_kill)
    worst_kill_to_done = max((k["worst_seconds"] for k in per_kill), default=0.0)
    last_done_at = max(completion.values(), default=time.time())
    first_done_at = min(completion.values(), default=last_done_at)
    total_done = len(completion)
    done_after_last_kill = round(max(0.0, last_done_at - last_kill_at), 1)

    poison_runs = int(stack.psql(DATABASE, f"SELECT count(*) FROM reliability_proberun WHERE token = '{POISON_TASK_ID}'"))
    poison_letter = stack.psql(
        DATABASE,
        f"SELECT deliveries || ' deliveries; ' || last_error FROM shipments_deadletter WHERE task_id = '{POISON_TASK_ID}'",
    )
    with contextlib.suppress(OSError):
        for path in effects.media_root.glob("*"):
            path.unlink()
        effects.media_root.rmdir()

    common = {
        "tasks": counts, "kills": per_kill, "worker_restarts": restarts,
        "enqueue": produced, "visibility_timeout_seconds": VISIBILITY_TIMEOUT_SECONDS,
        "worker_soft_shutdown_timeout": soft_shutdown,
    }
    bar_seconds = f"≤ {deadline_after_last_kill} s (visibility timeout {VISIBILITY_TIMEOUT_SECONDS} s + 60 s)"
    return [
        Figure("tasks with 0 effects (after the queue drained)", lost_total, f"0 of {total}",
               lost_total == 0,
               {"by_kind": {k: len(v) for k, v in missing.items()},
                "examples": {k: v[:10] for k, v in missing.items() if v},
                "drain_limit_after_last_kill_seconds": drain_limit, **common}),
        Figure("tasks with >1 effect", doubled_total, "0", doubled_total == 0,
               {"by_kind": {k: len(v) for k, v in doubled.items()},
                "examples": {k: v[:10] for k, v in doubled.items() if v}}),
        Figure("worst time from a kill to completion of the tasks it interrupted (s)",
               worst_kill_to_done if not never_completed else f"never ({never_completed} tasks)",
               bar_seconds, not never_completed and worst_kill_to_done <= deadline_after_last_kill,
               {"per_kill": per_kill}),
        Figure("all tasks done after the last kill (s)",
               done_after_last_kill if not lost_total else f"never ({lost_total} tasks)",
               bar_seconds, not lost_total and done_after_last_kill <= deadline_after_last_kill,
               {"done_at_the_bar": done_at_bar if done_at_bar is not None else total,
                "throughput_tasks_per_second": round(total_done / max(1.0, last_done_at - first_done_at), 1)}),
        Figure("redeliveries", redeliveries, "≥ 1 (the kills interrupted running tasks)",
               redeliveries >= 1,
               {"tasks_delivered_more_than_once": sum(1 for t, n in deliveries.items()
                                                       if n > 1 and t != POISON_TASK_ID),
                "max_deliveries_of_one_task": max(
                    (n for t, n in deliveries.items() if t != POISON_TASK_ID), default=0)}),
        Figure("poison task executions", poison_runs,
               f"1..{MAX_DELIVERIES}, then in the dead-letter table",
               1 <= poison_runs <= MAX_DELIVERIES and bool(poison_letter),
               {"dead_letter": poison_letter or "none",
                "deliveries_seen_by_workers": deliveries.get(POISON_TASK_ID, 0)}),
    ]

