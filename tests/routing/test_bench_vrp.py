"""bench/vrp.py end to end on two small instances (correctness, not speed)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INSTANCES = ROOT / "bench" / "instances"


def test_benchmark_runs_and_writes_checked_results(tmp_path):
    data = tmp_path / "instances"
    data.mkdir()
    for name in ("solomon/C101.txt", "solomon/C101.sol", "pdptw/lc201.txt", "pdptw/bks_pdptw.csv"):
        shutil.copy(INSTANCES / name, data / Path(name).name)
    out = tmp_path / "out.json"

    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "vrp.py"), "--instances", str(data), "--time-limit", "2",
         "--solvers", "allmile,pyvrp,vroom", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )

    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(out.read_text())
    by = {(r["instance"], r["solver"]): r for r in rows}
    assert set(by) == {(i, s) for i in ("C101", "lc201") for s in ("allmile", "pyvrp", "vroom")}
    for row in rows:
        assert {"instance", "solver", "cost", "vehicles", "gap_pct", "seconds", "feasible"} <= set(row)
    for instance in ("C101", "lc201"):
        mine = by[(instance, "allmile")]
        assert mine["feasible"] is True
        assert mine["gap_pct"] is not None and mine["gap_pct"] > -0.01
        assert mine["seconds"] < 10
    assert by[("C101", "allmile")]["vehicles"] >= 10
    assert "mean gap" in run.stdout
