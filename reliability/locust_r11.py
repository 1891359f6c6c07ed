"""R11 load (RELIABILITY.md): drivers posting ping batches, dispatchers polling lists.

Run by ``reliability/targets/r11_ping_load.py`` as its own process::

    locust -f reliability/locust_r11.py --headless --host URL --csv PREFIX -t …

Environment (set by the target):

* ``R11_SEED_FILE``  JSON with the driver and dispatcher tokens
* ``R11_OUT_DIR``    where ``requests.csv`` (one row per request) and
                     ``ledger.json`` (every ping each device made and which
                     ones the server acknowledged) are written at the end
* ``R11_T0``         epoch second the scenario starts (first batches after it)
* ``R11_DURATION``   seconds of load; afterwards drivers only flush their queues
* ``R11_BATCH_SECONDS`` (10), ``R11_PINGS_PER_BATCH`` (5), ``R11_POLL_SECONDS`` (5)

A driver behaves like the phone app: every batch gets its own Idempotency-Key
and waits in a queue until the server answers 200; a 503 or 429 is retried
after ``Retry-After`` (plus jitter) with the *same* key, a connection error
after a short backoff. Every loop is bounded: no new batch after the scenario,
at most ``MAX_ATTEMPTS`` sends a batch.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import random
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

from locust import FastHttpUser, events, task

SEED = json.loads(Path(os.environ["R11_SEED_FILE"]).read_text())
OUT_DIR = Path(os.environ["R11_OUT_DIR"])
T0 = float(os.environ["R11_T0"])
DURATION = float(os.environ["R11_DURATION"])
BATCH_SECONDS = float(os.environ.get("R11_BATCH_SECONDS", 10))
PINGS_PER_BATCH = int(os.environ.get("R11_PINGS_PER_BATCH", 5))
POLL_SECONDS = float(os.environ.get("R11_POLL_SECONDS", 5))
# Long enough to see a request hang (the bar is 10 s), short enough to end.
REQUEST_TIMEOUT_SECONDS = 30
MAX_ATTEMPTS = 60
HUB = (43.7311, 7.4167)
DISPATCHER_LISTS = (
    ("/api/v1/shipments/?page_size=50", "shipments list"),
    ("/api/v1/routes/", "routes list"),
    ("/api/v1/drivers/", "drivers list"),
)

_driver_numbers = itertools.count()
_dispatcher_numbers = itertools.count()
REQUESTS: list[tuple] = []  # (start epoch, name, status, ms, retry_after, replayed)
LEDGER: dict[str, dict] = {}  # device_id -> {"made": [epoch…], "acked": [epoch…], …}


def _log(name: str, started: float, response) -> None:
    status = response.status_code or 0
    headers = response.headers or {}
    REQUESTS.append(
        (
            round(started, 3),
            name,
            status,
            round((time.time() - started) * 1000, 1),
            headers.get("Retry-After", ""),
            headers.get("Idempotent-Replayed", ""),
        )
    )


class DriverUser(FastHttpUser):
    """One phone: a batch of fixes every BATCH_SECONDS, sent through a queue."""

    fixed_count = len(SEED["drivers"])
    network_timeout = REQUEST_TIMEOUT_SECONDS
    connection_timeout = REQUEST_TIMEOUT_SECONDS
    max_retries = 0

    def on_start(self) -> None:
        number = next(_driver_numbers)
        token = SEED["drivers"][number % len(SEED["drivers"])]
        self.device_id = f"r11-{number}"
        self.headers = {"Authorization": f"Token {token}"}
        rng = random.Random(number)
        self.next_batch_at = T0 + rng.uniform(0, BATCH_SECONDS)
        self.retry_at = 0.0
        self.queue: deque[dict] = deque()
        self.rng = rng
        self.heading = rng.uniform(0, 2 * math.pi)
        self.origin = (HUB[0] + rng.uniform(-0.02, 0.02), HUB[1] + rng.uniform(-0.02, 0.02))
        self.ping_index = 0
        self.ledger = LEDGER.setdefault(
            self.device_id, {"made": [], "acked": [], "gave_up": [], "attempts": 0}
        )

    def _fix(self, at: float) -> dict:
        """A van driving straight at 8 m/s: every fix plausible after the last."""
        meters = 8.0 * (at - T0)
        dlat = meters * math.cos(self.heading) / 111_320
        dlng = meters * math.sin(self.heading) / (111_320 * math.cos(math.radians(HUB[0])))
        return {
            "latitude": round(self.origin[0] + dlat, 6),
            "longitude": round(self.origin[1] + dlng, 6),
            "accuracy": 6.0,
            "speed": 8.0,
            "heading": round(math.degrees(self.heading) % 360, 1),
            "recorded_at": datetime.fromtimestamp(at, UTC).isoformat(),
        }

    def _make_batch(self, due: float) -> None:
        # Fixes every BATCH_SECONDS / PINGS_PER_BATCH seconds up to the batch's due time.
        step = BATCH_SECONDS / PINGS_PER_BATCH
        times = [round(due - BATCH_SECONDS + step * (i + 1), 3) for i in range(PINGS_PER_BATCH)]
        self.ledger["made"].extend(times)
        self.queue.append(
            {
                "key": f"r11-{uuid.uuid4()}",
                "times": times,
                "body": json.dumps(
                    {"device_id": self.device_id, "pings": [self._fix(t) for t in times]}
                ),
                "attempts": 0,
            }
        )

    def wait_time(self) -> float:
        now = time.time()
        wake = self.next_batch_at if now < T0 + DURATION else now + 1.0
        if self.queue:
            wake = min(wake, max(self.retry_at, now))
        return max(0.0, min(wake - now, 5.0))

    @task
    def tick(self) -> None:
        now = time.time()
        # The phone records fixes on schedule whatever the uploads are doing:
        # every batch that fell due while it waited on the server is made now.
        while now >= self.next_batch_at and self.next_batch_at < T0 + DURATION:
            self._make_batch(self.next_batch_at)
            self.next_batch_at += BATCH_SECONDS
        while self.queue and time.time() >= self.retry_at:
            if not self._send(self.queue[0]):
                break
            self.queue.popleft()

    def _send(self, batch: dict) -> bool:
        """One attempt; True when the batch is done (acknowledged or given up)."""
        batch["attempts"] += 1
        self.ledger["attempts"] += 1
        started = time.time()
        with self.client.post(
            "/api/v1/driver/pings/",
            data=batch["body"],
            headers={
                **self.headers,
                "Content-Type": "application/json",
                "Idempotency-Key": batch["key"],
            },
            name="pings",
            catch_response=True,
        ) as response:
            _log("pings", started, response)
            status = response.status_code or 0
            if status == 200:
                answer = response.json()
                if answer.get("rejected"):
                    self.ledger.setdefault("rejected", []).extend(answer["rejected"])
                self.ledger["acked"].extend(batch["times"])
                return True
            response.failure(f"status {status}")
            if status in (503, 429, 409):
                try:
                    wait = float(response.headers.get("Retry-After") or 2)
                except ValueError:
                    wait = 2.0
            else:  # connection error or an unexpected answer: back off briefly
                wait = 2.0
            self.retry_at = time.time() + min(wait, 30) + self.rng.uniform(0, 1)
            if batch["attempts"] >= MAX_ATTEMPTS or 400 <= status < 500 and status not in (
                409,
                429,
            ):
                self.ledger["gave_up"].extend(batch["times"])
                return True
            return False

    def on_stop(self) -> None:
        self.ledger["pending"] = [t for b in self.queue for t in b["times"]]


class DispatcherUser(FastHttpUser):
    """A dispatcher's dashboard polling the list endpoints every POLL_SECONDS."""

    fixed_count = len(SEED["dispatchers"])
    network_timeout = REQUEST_TIMEOUT_SECONDS
    connection_timeout = REQUEST_TIMEOUT_SECONDS
    max_retries = 0

    def on_start(self) -> None:
        number = next(_dispatcher_numbers)
        token = SEED["dispatchers"][number % len(SEED["dispatchers"])]
        self.headers = {"Authorization": f"Token {token}"}
        self.next_poll_at = T0 + random.Random(1000 + number).uniform(0, POLL_SECONDS)

    def wait_time(self) -> float:
        return max(0.0, min(self.next_poll_at - time.time(), 5.0))

    @task
    def poll(self) -> None:
        now = time.time()
        if now < self.next_poll_at:
            return
        self.next_poll_at += POLL_SECONDS
        if now > T0 + DURATION:
            return
        for path, name in DISPATCHER_LISTS:
            started = time.time()
            with self.client.get(
                path, headers=self.headers, name=name, catch_response=True
            ) as response:
                _log(name, started, response)
                if response.status_code != 200:
                    response.failure(f"status {response.status_code}")


@events.test_stop.add_listener
def _write_results(**kwargs) -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with (OUT_DIR / "requests.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["started", "name", "status", "ms", "retry_after", "replayed"])
        writer.writerows(REQUESTS)
    (OUT_DIR / "ledger.json").write_text(json.dumps(LEDGER))
