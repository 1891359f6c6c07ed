"""How big a reliability run is.

``RELIABILITY_SCALE`` multiplies every count (default 1, the CI size; each test's
docstring names the full bar size, reached at the scale given there). The seed
comes from ``RELIABILITY_SEED`` (default fixed, so CI runs repeat exactly).
"""

from __future__ import annotations

import os

DEFAULT_SEED = 20261126


def scale() -> float:
    raw = os.environ.get("RELIABILITY_SCALE", "1")
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"RELIABILITY_SCALE must be a number, not {raw!r}") from exc
    if not 0 < value <= 100:
        raise ValueError("RELIABILITY_SCALE must be in (0, 100]")
    return value


def scaled(ci_count: int, *, full: int | None = None) -> int:
    """``ci_count`` times the scale, capped at ``full`` when given (the bar size)."""
    count = max(1, round(ci_count * scale()))
    return min(count, full) if full is not None else count


def seed() -> int:
    return int(os.environ.get("RELIABILITY_SEED", DEFAULT_SEED))
