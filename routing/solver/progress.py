"""Progress reporting and cancellation shared by the engines."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    best_cost: float  # in the engine's objective units (milli-currency incl. penalties)
    elapsed_fraction: float  # of the time limit, 0..1
    engine: str


ProgressCallback = Callable[[Progress], None]
StopCheck = Callable[[], bool]

# A UI cannot use more, and calling back into Python costs search time.
MAX_PROGRESS_CALLS_PER_SECOND = 4.0
# How often the engines ask should_stop(); it may do I/O (a Redis flag).
STOP_POLL_SECONDS = 0.05


class SearchWatch:
    """Throttles progress calls and cancel polls for one search."""

    def __init__(
        self,
        *,
        engine: str,
        time_limit_seconds: float,
        on_progress: ProgressCallback | None,
        should_stop: StopCheck | None,
    ):
        self.engine = engine
        self.time_limit_seconds = max(time_limit_seconds, 1e-9)
        self.on_progress = on_progress
        self.should_stop = should_stop
        self.started = time.monotonic()
        self.best_cost = float("inf")
        self._last_progress = -1.0
        self._last_poll = -1.0
        self.cancelled = False

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def solution(self, cost: float) -> None:
        self.best_cost = min(self.best_cost, cost)
        if self.on_progress is None:
            return
        now = self.elapsed()
        if now - self._last_progress >= 1.0 / MAX_PROGRESS_CALLS_PER_SECOND:
            self._last_progress = now
            self.report(now)

    def report(self, now: float | None = None) -> None:
        if self.on_progress is None or self.best_cost == float("inf"):
            return
        now = self.elapsed() if now is None else now
        self.on_progress(
            Progress(
                best_cost=self.best_cost,
                elapsed_fraction=min(1.0, now / self.time_limit_seconds),
                engine=self.engine,
            )
        )

    def stop_requested(self) -> bool:
        if self.cancelled:
            return True
        if self.should_stop is None:
            return False
        now = self.elapsed()
        if now - self._last_poll < STOP_POLL_SECONDS:
            return False
        self._last_poll = now
        self.cancelled = bool(self.should_stop())
        return self.cancelled
