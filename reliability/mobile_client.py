"""The driver app's outbound queue, as it should behave on a bad network (R2).

A phone must never lose a status event and never report one twice, whatever
the network does to a request:

* every event is written to an on-disk queue (SQLite, one file per device)
  before anything is sent, with its own ``event_id`` and the device's next
  ``seq``; the queue survives the app being killed;
* events leave in batches, oldest first, one batch in flight per device; a batch
  is frozen when first formed (its ``Idempotency-Key`` and its exact body are
  stored with it), so every retry sends the same bytes under the same key;
* an attempt without a trustworthy answer (no connection, a timeout, a reset, a
  cut or unparsable body, 408/409/425/429/5xx) is retried after an exponential
  backoff with full jitter, capped; ``Retry-After`` is honoured;
* a batch is done when the server answered 2xx with one result per item
  (``applied``, ``duplicate`` or ``rejected``: each is the server's final word);
* bounded: after ``max_attempts``, or on an answer no retry can change (another
  4xx), the batch is given up and its events are counted as given up.

    queue = DeviceQueue.open(workdir / "device-7.sqlite", device_id="device-7")
    queue.enqueue({"type": "arrived", "stop_id": 12, "occurred_at": "…"})
    client = MobileClient(queue=queue, base_url=url, token=token, rng=random.Random(7))
    await client.run(until=stop_event)   # sends until stopped and empty
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

EVENTS_PATH = "/api/v1/driver/events/"
RETRYABLE_STATUS = {408, 409, 425, 429}  # and every 5xx
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_at REAL NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | done | given_up
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    batch_id INTEGER REFERENCES batches(id),
    outcome TEXT  -- applied | duplicate | rejected | seq_taken | given_up; NULL until known
);
"""


@dataclass(frozen=True)
class Batch:
    id: int
    idempotency_key: str
    body: bytes
    attempts: int
    next_try_at: float
    event_ids: tuple[str, ...]


class DeviceQueue:
    """The events of one device, on disk. WAL with ``synchronous=NORMAL``: a
    commit survives the app being killed (only a power cut may lose the last
    ones), which is the failure a phone app sees every day."""

    def __init__(self, connection: sqlite3.Connection, device_id: str):
        self._db = connection
        self.device_id = device_id

    @classmethod
    def open(cls, path: Path, *, device_id: str | None = None) -> DeviceQueue:
        """Open (or create) the queue at ``path``; a new queue takes
        ``device_id`` (a fresh one when None), an existing one keeps its own."""
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        with _transaction(db):
            db.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES ('device_id', ?)",
                (device_id or f"device-{uuid.uuid4()}",),
            )
        stored = db.execute("SELECT value FROM meta WHERE name = 'device_id'").fetchone()[0]
        return cls(db, stored)

    def close(self) -> None:
        self._db.close()

    def enqueue(self, event: dict) -> tuple[int, str]:
        """Store one event with the next ``seq`` and a new ``event_id``."""
        with _transaction(self._db):
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM events").fetchone()[0]
            event_id = str(uuid.uuid4())
            body = json.dumps({"event_id": event_id, "seq": seq, **event}, separators=(",", ":"))
            self._db.execute(
                "INSERT INTO events (seq, event_id, body) VALUES (?, ?, ?)", (seq, event_id, body)
            )
        return seq, event_id

    def head_batch(self, max_events: int) -> Batch | None:
        """The oldest unfinished batch; else a new one frozen from the oldest
        unsent events; None when there is nothing to send."""
        with _transaction(self._db):
            row = self._db.execute(
                "SELECT id FROM batches WHERE state = 'pending' ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None:
                events = self._db.execute(
                    "SELECT seq, body FROM events WHERE batch_id IS NULL AND outcome IS NULL"
                    " ORDER BY seq LIMIT ?",
                    (max_events,),
                ).fetchall()
                if not events:
                    return None
                body = json.dumps(
                    {"device_id": self.device_id, "events": [json.loads(b) for _, b in events]},
                    separators=(",", ":"),
                )
                cursor = self._db.execute(
                    "INSERT INTO batches (idempotency_key, body) VALUES (?, ?)",
                    (f"{self.device_id}-{uuid.uuid4()}", body),
                )
                self._db.execute(
                    f"UPDATE events SET batch_id = ? WHERE seq IN ({','.join('?' * len(events))})",
                    (cursor.lastrowid, *(seq for seq, _ in events)),
                )
                row = (cursor.lastrowid,)
            return self._batch(row[0])

    def _batch(self, batch_id: int) -> Batch:
        key, body, attempts, next_try_at = self._db.execute(
            "SELECT idempotency_key, body, attempts, next_try_at FROM batches WHERE id = ?",
            (batch_id,),
        ).fetchone()
        event_ids = tuple(
            event_id
            for (event_id,) in self._db.execute(
                "SELECT event_id FROM events WHERE batch_id = ? ORDER BY seq", (batch_id,)
            )
        )
        return Batch(batch_id, key, body.encode(), attempts, next_try_at, event_ids)

    def attempt_begin(self, batch: Batch) -> int:
        """Count an attempt before it is made (a killed app still counted it)."""
        with _transaction(self._db):
            self._db.execute("UPDATE batches SET attempts = attempts + 1 WHERE id = ?", (batch.id,))
        return batch.attempts + 1

    def attempt_failed(self, batch: Batch, *, error: str, next_try_at: float) -> None:
        with _transaction(self._db):
            self._db.execute(
                "UPDATE batches SET last_error = ?, next_try_at = ? WHERE id = ?",
                (error[:300], next_try_at, batch.id),
            )

    def batch_done(self, batch: Batch, outcomes: dict[str, str]) -> None:
        with _transaction(self._db):
            self._db.execute("UPDATE batches SET state = 'done' WHERE id = ?", (batch.id,))
            self._db.executemany(
                "UPDATE events SET outcome = ? WHERE event_id = ?",
                [(outcome, event_id) for event_id, outcome in outcomes.items()],
            )

    def batch_give_up(self, batch: Batch, *, error: str) -> None:
        with _transaction(self._db):
            self._db.execute(
                "UPDATE batches SET state = 'given_up', last_error = ? WHERE id = ?",
                (error[:300], batch.id),
            )
            self._db.execute("UPDATE events SET outcome = 'given_up' WHERE batch_id = ?", (batch.id,))

    def pending(self) -> int:
        """Events whose outcome the server has not told yet."""
        return self._db.execute("SELECT COUNT(*) FROM events WHERE outcome IS NULL").fetchone()[0]

    def outcomes(self) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT COALESCE(outcome, 'pending'), COUNT(*) FROM events GROUP BY 1"
        ).fetchall()
        return dict(rows)

    def events(self) -> list[tuple[int, str]]:
        """``(seq, event_id)`` of every event ever queued."""
        return self._db.execute("SELECT seq, event_id FROM events ORDER BY seq").fetchall()

    def batch_attempts(self) -> list[int]:
        return [n for (n,) in self._db.execute("SELECT attempts FROM batches ORDER BY id")]


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection):
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 0.5
    cap_seconds: float = 10.0
    max_attempts: int = 20
    timeout: httpx.Timeout = field(
        # A phone waits long for an answer: a retry of a request the server is
        # still working on only queues behind it.
        default_factory=lambda: httpx.Timeout(30.0, connect=5.0)
    )

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base · 2^(attempt-1))]."""
        return rng.uniform(0, min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1)))


@dataclass
class ClientStats:
    requests: int = 0
    answers: Counter = field(default_factory=Counter)  # status code or error name
    replays: int = 0  # answers marked Idempotent-Replayed: the server had it already
    batches_done: int = 0
    batches_given_up: int = 0


class AnswerNotTrusted(Exception):
    """A response that cannot be taken as the server's word on the batch."""


class MobileClient:
    """Sends one device's queue, oldest batch first, until told to stop."""

    def __init__(
        self,
        *,
        queue: DeviceQueue,
        base_url: str,
        token: str,
        rng: random.Random,
        policy: RetryPolicy | None = None,
        max_batch_events: int = 25,
        stats: ClientStats | None = None,
    ):
        self.queue = queue
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.rng = rng
        self.policy = policy or RetryPolicy()
        self.max_batch_events = max_batch_events
        self.stats = stats or ClientStats()

    async def run(self, *, until: asyncio.Event, poll_seconds: float = 0.2) -> None:
        """Send until ``until`` is set and nothing is left to send."""
        # No connection reuse: every request is its own connection, as after a
        # network change on a phone (and each draws its own fault at the proxy).
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=self.policy.timeout, limits=limits) as http:
            while True:
                batch = self.queue.head_batch(self.max_batch_events)
                if batch is None:
                    if until.is_set():
                        return
                    await asyncio.sleep(poll_seconds)
                    continue
                wait = batch.next_try_at - time.time()
                if wait > 0:
                    await asyncio.sleep(min(wait, poll_seconds * 5))
                    continue
                await self.send(http, batch)

    async def send(self, http: httpx.AsyncClient, batch: Batch) -> None:
        """One attempt at ``batch``; the queue records what came of it."""
        attempt = self.queue.attempt_begin(batch)
        self.stats.requests += 1
        retry_after = 0.0
        try:
            response = await http.post(
                f"{self.base_url}{EVENTS_PATH}",
                content=batch.body,
                headers={
                    "Authorization": f"Token {self.token}",
                    "Idempotency-Key": batch.idempotency_key,
                    "Content-Type": "application/json",
                },
            )
        except httpx.TransportError as exc:
            error = type(exc).__name__
            self.stats.answers[error] += 1
        else:
            self.stats.answers[response.status_code] += 1
            if response.status_code in RETRYABLE_STATUS or response.status_code >= 500:
                error = f"HTTP {response.status_code}"
                retry_after = _retry_after_seconds(response)
            elif 200 <= response.status_code < 300:
                try:
                    outcomes = _outcomes(response, batch)
                except AnswerNotTrusted as exc:
                    error = f"untrusted answer: {exc}"
                    self.stats.answers["untrusted answer"] += 1
                else:
                    if response.headers.get("Idempotent-Replayed") == "true":
                        self.stats.replays += 1
                    self.queue.batch_done(batch, outcomes)
                    self.stats.batches_done += 1
                    return
            else:  # 400, 401, 403, 404, 413, 422: no retry can change this answer
                self._give_up(batch, f"HTTP {response.status_code}: {response.text[:200]}")
                return
        if attempt >= self.policy.max_attempts:
            self._give_up(batch, f"{attempt} attempts, last: {error}")
            return
        delay = max(self.policy.backoff(attempt, self.rng), retry_after)
        self.queue.attempt_failed(batch, error=error, next_try_at=time.time() + delay)

    def _give_up(self, batch: Batch, error: str) -> None:
        self.queue.batch_give_up(batch, error=error)
        self.stats.batches_given_up += 1


def _outcomes(response: httpx.Response, batch: Batch) -> dict[str, str]:
    """The per-item outcomes, only from a complete answer about exactly this batch."""
    try:
        results = response.json()["results"]
    except (ValueError, KeyError, TypeError) as exc:
        raise AnswerNotTrusted(type(exc).__name__) from exc
    outcomes = {}
    for item in results if isinstance(results, list) else []:
        if not isinstance(item, dict) or item.get("status") not in ("applied", "duplicate", "rejected"):
            raise AnswerNotTrusted("an item without a known status")
        status = item["status"]
        original = item.get("original") or {}
        if status == "duplicate" and original.get("event_id") != item.get("event_id"):
            # Its (device_id, seq) already holds another event: this one was not stored.
            status = "seq_taken"
        outcomes[str(item.get("event_id"))] = status
    if set(outcomes) != set(batch.event_ids):
        raise AnswerNotTrusted("results do not match the batch")
    return outcomes


def _retry_after_seconds(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", 0)))
    except ValueError:
        return 0.0
