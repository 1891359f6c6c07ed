"""The [FAULT] and [LOAD] targets of RELIABILITY.md, one module each.

A target module defines ``ID`` ("R2"), ``TITLE``, ``BUDGET_SECONDS`` (its share
of the 45-minute run) and ``run(stack, context) -> list[Figure]``. It creates
its own database on the stack (``stack.database_create(ID.lower())``), starts
the processes it needs through the stack, and may kill or restart anything; the
runner stops its processes and brings PostgreSQL and Redis back afterwards.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    """One measured figure and its bar; ``passed`` is decided by the target."""

    name: str
    value: Any
    bar: str
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    seed: int
    quick: bool  # shortened durations while developing; the real run is not quick
    workdir: Path
    logger: logging.Logger

    def rng(self) -> random.Random:
        return random.Random(self.seed)

    def seconds(self, full: float, quick: float) -> float:
        """A duration: the scenario's in a real run, a short one in a quick run."""
        return quick if self.quick else full
