"""Figures from samples, shared by the benchmarks and the reliability targets."""

from __future__ import annotations


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile by nearest rank; None without samples."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
