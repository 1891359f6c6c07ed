"""Writing a target's figures to ``test-artifacts/reliability/<ID>.json``.

Each file holds ``{id, figure, value, bar, pass, seed, host}`` for the target's
headline figure, and every figure the target's tests recorded under
``figures``. A file is rewritten from scratch the first time a target records
in a process, so it never mixes two runs.
"""

from __future__ import annotations

import json
import os
import platform
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .sizing import scale

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "test-artifacts" / "reliability"

_started_this_run: set[str] = set()


def host_facts() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(load[0], 2) if load else None,
        "python": platform.python_version(),
        "scale": scale(),
    }


def result_record(
    *,
    target: str,
    figure: str,
    value: Any,
    bar: str,
    passed: bool,
    seed: int | None = None,
    runtime_seconds: float | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Add one figure to the target's file and return the entry written."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{target}.json"
    if target in _started_this_run and path.exists():
        data = json.loads(path.read_text())
    else:
        data = {"id": target, "figures": []}
        _started_this_run.add(target)
    entry = {
        "figure": figure,
        "value": value,
        "bar": bar,
        "pass": bool(passed),
        "seed": seed,
        "runtime_seconds": round(runtime_seconds, 2) if runtime_seconds else None,
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **({"details": details} if details else {}),
    }
    data["figures"] = [f for f in data["figures"] if f["figure"] != figure] + [entry]
    headline = data["figures"][0]
    data.update(
        {
            "figure": headline["figure"],
            "value": headline["value"],
            "bar": headline["bar"],
            "pass": all(f["pass"] for f in data["figures"]),
            "seed": headline["seed"],
            "host": host_facts(),
        }
    )
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return entry
