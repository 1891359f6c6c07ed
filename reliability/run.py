"""``make reliability``: the [FAULT] and [LOAD] tiers of RELIABILITY.md in one run.

Starts a private PostgreSQL (port 5440) and Redis (port 6390, the shipped
configuration) in a temporary directory, runs each target against real
processes it starts there, and writes ``reliability/results/<ID>.json`` and a
summary table (``summary.md`` and ``summary.json``).

    python -m reliability.run                 # every target, the scenario sizes
    python -m reliability.run R2 R8 --quick   # some targets, shortened
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import socket
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from .stack import Stack, stack_remove
from .targets import Figure, RunContext

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "reliability" / "results"
TARGETS = {
    "R2": "reliability.targets.r02_lost_response",
    "R3": "reliability.targets.r03_outbox_crash",
    "R5": "reliability.targets.r05_redis_outage",
    "R6": "reliability.targets.r06_worker_kill",
    "R8": "reliability.targets.r08_dashboard_converges",
    "R11": "reliability.targets.r11_ping_load",
    "R12": "reliability.targets.r12_optimization_jobs",
}
DEFAULT_SEED = 20261126
logger = logging.getLogger("reliability")


def host_facts() -> dict:
    return {
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }


def _stack_healthy(stack: Stack) -> None:
    """After a target: PostgreSQL and Redis up again, no process left."""
    stack.stop_processes()
    if not stack.postgres_ready():
        stack.postgres_start()
    if stack.redis_process is None or stack.redis_process.poll() is not None or not stack.redis_ready():
        stack.redis_start()
    stack.redis_cli("flushall")


def run_target(stack: Stack, target_id: str, context: RunContext) -> dict:
    module = importlib.import_module(TARGETS[target_id])
    started = time.monotonic()
    logger.info("%s %s: started (budget %s s)", target_id, module.TITLE, module.BUDGET_SECONDS)
    try:
        figures: list[Figure] = module.run(stack, context)
        error = ""
    except Exception:  # noqa: BLE001 - one target's crash is its failure, not the run's
        figures = []
        error = traceback.format_exc()
        logger.error("%s crashed:\n%s", target_id, error)
    finally:
        _stack_healthy(stack)
    runtime = time.monotonic() - started
    passed = bool(figures) and not error and all(f.passed for f in figures)
    record = {
        "id": target_id,
        "title": module.TITLE,
        "figure": figures[0].name if figures else "crashed",
        "value": figures[0].value if figures else None,
        "bar": figures[0].bar if figures else "",
        "pass": passed,
        "seed": context.seed,
        "quick": context.quick,
        "host": host_facts(),
        "runtime_seconds": round(runtime, 1),
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "figures": [
            {"figure": f.name, "value": f.value, "bar": f.bar, "pass": f.passed, **(
                {"details": f.details} if f.details else {})}
            for f in figures
        ],
        **({"error": error} if error else {}),
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{target_id}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    logger.info("%s: %s in %.0f s", target_id, "PASS" if passed else "FAIL", runtime)
    return record


def summary_table(records: list[dict]) -> str:
    lines = ["| Target | Figure | Value | Bar | Pass |", "|---|---|---|---|---|"]
    for record in records:
        rows = record["figures"] or [{"figure": "crashed", "value": "", "bar": "", "pass": False}]
        for row in rows:
            value = json.dumps(row["value"], default=str) if not isinstance(row["value"], str) else row["value"]
            lines.append(
                f"| {record['id']} | {row['figure']} | {value} | {row['bar']} | "
                f"{'yes' if row['pass'] else 'NO'} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", help=f"some of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="shortened durations (development)")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("RELIABILITY_SEED", DEFAULT_SEED)))
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args(argv)
    unknown = [t for t in args.targets if t.upper() not in TARGETS]
    if unknown:
        parser.error(f"unknown targets: {unknown}")
    chosen = [t.upper() for t in args.targets] or list(TARGETS)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    workdir = Path(tempfile.mkdtemp(prefix="allmile-reliability-"))
    logger.info("working in %s", workdir)
    started = time.monotonic()
    records = []
    with Stack(workdir) as stack:
        stack.postgres_start()
        stack.redis_start()
        for target_id in chosen:
            context = RunContext(
                seed=args.seed, quick=args.quick, workdir=workdir / target_id.lower(),
                logger=logging.getLogger(f"reliability.{target_id}"),
            )
            context.workdir.mkdir(parents=True, exist_ok=True)
            records.append(run_target(stack, target_id, context))
    table = summary_table(records)
    total = time.monotonic() - started
    summary = {
        "targets": [{k: r[k] for k in ("id", "title", "figure", "value", "bar", "pass", "runtime_seconds")}
                    for r in records],
        "all_pass": all(r["pass"] for r in records),
        "quick": args.quick,
        "seed": args.seed,
        "total_seconds": round(total, 1),
        "host": host_facts(),
    }
    (RESULTS_DIR / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (RESULTS_DIR / "summary.md").write_text(
        f"# make reliability: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {total / 60:.1f} min"
        f"{' (quick)' if args.quick else ''}, seed {args.seed}\n\n{table}\n"
    )
    print(table)
    print(f"\n{len(records)} targets in {total / 60:.1f} min; "
          f"{'all bars met' if summary['all_pass'] else 'some bars NOT met'}")
    if args.keep:
        print(f"logs kept in {workdir}")
    else:
        stack_remove(workdir)
    return 0 if summary["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
