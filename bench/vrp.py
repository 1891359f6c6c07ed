"""VRP benchmark: Allmile's solver against PyVRP and VROOM on public instances.

    python bench/vrp.py --instances DIR --time-limit SECONDS \
        --solvers allmile,pyvrp,vroom --json OUT.json

Reads every instance under DIR (recursively) in Solomon text, VRPLIB (.vrp) or
Li & Lim (PDPTW) text format, detected from the content; best-known solutions
come from ``bks.csv`` / ``bks_pdptw.csv`` anywhere under DIR, else from a
``.sol`` file beside the instance. Each solver runs single-threaded with the
same wall-clock limit, one after the other; every solution goes through the
independent checker (``routing.solver.checker``).

Integer conventions (see bench/instances/README.md):
* VRPTW (Solomon, Gehring & Homberger): DIMACS, distance = floor(10 d) / 10;
  the solvers get distances, windows and service times times 10.
* CVRP (X): EUC_2D, distance = round(d); unlimited fleet (we give enough).
* PDPTW (Li & Lim): the solvers get ceil(100 d), times 100; the reported
  distance is recomputed with exact Euclidean distances (BKS has 4 decimals);
  vehicles first (a large fixed cost per vehicle).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from routing.solver.checker import check_solution  # noqa: E402
from routing.solver.matrix import explicit_matrix  # noqa: E402
from routing.solver.portfolio import solve  # noqa: E402
from routing.solver.problem import Job, Location, Problem, StopRef, TimeWindow, Vehicle, Visit  # noqa: E402
from routing.solver.solution import DELIVERY, PICKUP, Solution, assemble_solution, timed_route  # noqa: E402

# Vehicles-first objective for PDPTW: one vehicle costs more than any distance
# saving it could buy (1e7 scaled units = 100,000 instance distance units).
PDPTW_FIXED_COST = 10_000.0


@dataclass
class Instance:
    name: str
    kind: str  # "vrptw", "cvrp", "pdptw"
    xy: list[tuple[float, float]]  # node 0 = depot
    demand: list[int]
    ready: list[float]
    due: list[float]
    service: list[float]
    capacity: int
    fleet: int
    pickup_of: dict[int, int]  # delivery node -> pickup node (PDPTW)
    scale: int  # integer units per instance unit
    path: Path


# ---------------------------------------------------------------- readers
def read_instance(path: Path) -> Instance | None:
    text = path.read_text(errors="replace")
    if "NODE_COORD_SECTION" in text:
        return _read_vrplib(path, text)
    if "CUSTOMER" in text and "VEHICLE" in text:
        return _read_solomon(path, text)
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if lines and len(lines[0]) == 3 and all(len(ln) == 9 for ln in lines[1:]):
        return _read_lilim(path, lines)
    return None


def _read_solomon(path: Path, text: str) -> Instance:
    lines = text.splitlines()
    name = lines[0].strip() or path.stem
    numbers = [ln.split() for ln in lines if ln.split() and ln.split()[0].isdigit()]
    fleet, capacity = int(numbers[0][0]), int(numbers[0][1])
    rows = [list(map(float, r)) for r in numbers[1:] if len(r) == 7]
    return Instance(
        name=name, kind="vrptw",
        xy=[(r[1], r[2]) for r in rows], demand=[int(r[3]) for r in rows],
        ready=[r[4] for r in rows], due=[r[5] for r in rows], service=[r[6] for r in rows],
        capacity=capacity, fleet=fleet, pickup_of={}, scale=10, path=path,
    )


def _read_vrplib(path: Path, text: str) -> Instance:
    import vrplib

    data = vrplib.read_instance(str(path))
    xy = [tuple(map(float, c)) for c in data["node_coord"]]
    n = len(xy)
    has_tw = "time_window" in data
    service = data.get("service_time", 0)
    service = [float(service)] * n if np.isscalar(service) else list(map(float, service))
    if has_tw:
        service[0] = 0.0
        tw = data["time_window"]
        ready, due = [float(a) for a, _ in tw], [float(b) for _, b in tw]
    else:
        ready, due = [0.0] * n, [1e9] * n
    demand = [int(d) for d in data["demand"]]
    capacity = int(np.max(data["capacity"])) if not np.isscalar(data["capacity"]) else int(data["capacity"])
    if "vehicles" in data:
        fleet = int(data["vehicles"])
    else:  # CVRP: unlimited fleet; enough vehicles, with room to spare
        fleet = math.ceil(sum(demand) / capacity) + max(3, n // 20)
    return Instance(
        name=str(data.get("name", path.stem)).strip(), kind="vrptw" if has_tw else "cvrp",
        xy=xy, demand=demand, ready=ready, due=due, service=service,
        capacity=capacity, fleet=fleet, pickup_of={}, scale=10 if has_tw else 1, path=path,
    )


def _read_lilim(path: Path, lines: list[list[str]]) -> Instance:
    fleet, capacity = int(lines[0][0]), int(lines[0][1])
    rows = [list(map(float, r)) for r in lines[1:]]
    pickup_of = {int(r[0]): int(r[7]) for r in rows if int(r[7]) != 0}
    return Instance(
        name=path.stem, kind="pdptw",
        xy=[(r[1], r[2]) for r in rows], demand=[int(r[3]) for r in rows],
        ready=[r[4] for r in rows], due=[r[5] for r in rows], service=[r[6] for r in rows],
        capacity=capacity, fleet=fleet, pickup_of=pickup_of, scale=100, path=path,
    )


def integer_matrix(inst: Instance) -> np.ndarray:
    xy = np.asarray(inst.xy)
    d = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(axis=2))
    if inst.kind == "vrptw":
        return np.floor(d * 10 + 1e-9).astype(np.int64)  # DIMACS truncation, times 10
    if inst.kind == "pdptw":
        return np.ceil(d * 100 - 1e-9).astype(np.int64)
    return np.floor(d + 0.5).astype(np.int64)  # TSPLIB nint


def exact_distance(inst: Instance, routes: list[list[int]]) -> float:
    """Instance-unit distance of routes of node ids under the instance's convention."""
    total = 0.0
    for nodes in routes:
        path = [0, *nodes, 0]
        for a, b in zip(path, path[1:], strict=False):
            d = math.dist(inst.xy[a], inst.xy[b])
            if inst.kind == "vrptw":
                d = math.floor(d * 10 + 1e-9) / 10
            elif inst.kind == "cvrp":
                d = math.floor(d + 0.5)
            total += d
    return total


# ---------------------------------------------------------------- problem
def to_problem(inst: Instance) -> Problem:
    s = inst.scale if inst.kind != "cvrp" else 1
    matrix = integer_matrix(inst)
    n = len(inst.xy)
    locations = tuple(Location(key=f"n{i}") for i in range(n))
    jobs = []
    delivery_of = {p: d for d, p in inst.pickup_of.items()}

    def visit(i: int) -> Visit:
        windows = () if inst.kind == "cvrp" else (TimeWindow(round(inst.ready[i] * s), round(inst.due[i] * s)),)
        return Visit(i, round(inst.service[i] * s), windows)

    for i in range(1, n):
        if inst.kind == "pdptw":
            if i in inst.pickup_of:
                continue  # added with its pickup
            jobs.append(Job(f"n{i}", pickup=visit(i), delivery=visit(delivery_of[i]), demand=(inst.demand[i],)))
        else:
            jobs.append(Job(f"n{i}", delivery=visit(i), demand=(inst.demand[i],)))
    horizon = round(inst.due[0] * s) if inst.kind != "cvrp" else 10**9
    vehicle = Vehicle(
        key="v0", start_location_index=0, end_location_index=0, capacity=(inst.capacity,),
        shift_start_seconds=round(inst.ready[0] * s) if inst.kind != "cvrp" else 0,
        shift_end_seconds=horizon,
        fixed_cost=PDPTW_FIXED_COST if inst.kind == "pdptw" else 0.0,
        cost_per_km=1.0,
    )
    vehicles = tuple(replace(vehicle, key=f"v{k}") for k in range(inst.fleet))
    return Problem(locations, tuple(jobs), vehicles, explicit_matrix(matrix.tolist()), ("units",))


# ---------------------------------------------------------------- peers
def solve_pyvrp_peer(inst: Instance, problem: Problem, seconds: float, seed: int = 0) -> list[list[StopRef]] | None:
    import pyvrp
    from pyvrp.stop import MaxRuntime

    s = inst.scale if inst.kind != "cvrp" else 1
    n = len(inst.xy)
    matrix = integer_matrix(inst)
    big = 2**62
    clients = [
        pyvrp.Client(
            i, delivery=[inst.demand[i]], service_duration=round(inst.service[i] * s),
            tw_early=round(inst.ready[i] * s) if inst.kind != "cvrp" else 0,
            tw_late=round(inst.due[i] * s) if inst.kind != "cvrp" else big,
        )
        for i in range(1, n)
    ]
    depot_due = round(inst.due[0] * s) if inst.kind != "cvrp" else big
    data = pyvrp.ProblemData(
        [pyvrp.Location(x, y) for x, y in inst.xy],
        clients,
        [pyvrp.Depot(0)],
        [pyvrp.VehicleType(inst.fleet, capacity=[inst.capacity], tw_late=depot_due)],
        [matrix],
        [matrix],
    )
    result = pyvrp.solve(data, MaxRuntime(seconds), seed=seed, collect_stats=False, display=False)
    if not result.best.is_feasible():
        return None
    # Client k of the data is node k + 1 (the depot is node 0).
    return [
        [StopRef(f"n{a.idx + 1}", DELIVERY) for a in route.schedule() if a.type == pyvrp.ActivityType.CLIENT]
        for route in result.best.routes()
    ]


def solve_vroom_peer(inst: Instance, problem: Problem, seconds: float) -> list[list[StopRef]] | None:
    from datetime import timedelta

    import vroom

    s = inst.scale if inst.kind != "cvrp" else 1
    n = len(inst.xy)
    matrix = integer_matrix(inst)
    vi = vroom.Input()
    vi.set_durations_matrix(profile="car", matrix_input=matrix)
    depot_due = round(inst.due[0] * s) if inst.kind != "cvrp" else 2**31
    fixed = int(PDPTW_FIXED_COST * 1000) if inst.kind == "pdptw" else 0
    for k in range(inst.fleet):
        vi.add_vehicle(vroom.Vehicle(
            k, start=0, end=0, capacity=vroom.Amount([inst.capacity]),
            time_window=vroom.TimeWindow(0, depot_due), costs=vroom.VehicleCosts(fixed=fixed),
        ))

    def tws(i: int) -> list:
        return [] if inst.kind == "cvrp" else [vroom.TimeWindow(round(inst.ready[i] * s), round(inst.due[i] * s))]

    delivery_of = {p: d for d, p in inst.pickup_of.items()}
    for i in range(1, n):
        if inst.kind == "pdptw":
            if i in inst.pickup_of:
                continue
            d = delivery_of[i]
            vi.add_shipment(
                vroom.ShipmentStep(i, location=i, default_service=round(inst.service[i] * s), time_windows=tws(i)),
                vroom.ShipmentStep(d, location=d, default_service=round(inst.service[d] * s), time_windows=tws(d)),
                amount=vroom.Amount([inst.demand[i]]),
            )
        else:
            vi.add_job(vroom.Job(i, location=i, delivery=vroom.Amount([inst.demand[i]]),
                                 default_service=round(inst.service[i] * s), time_windows=tws(i)))
    sol = vi.solve(exploration_level=5, nb_threads=1, timeout=timedelta(seconds=seconds))
    routes: dict[int, list[StopRef]] = {}
    for row in sol.routes.itertuples():
        if row.type in ("job", "pickup", "delivery"):
            node = int(row.id)
            if inst.kind == "pdptw":
                key = node if row.type == "pickup" else inst.pickup_of[node]
                ref = StopRef(f"n{key}", PICKUP if row.type == "pickup" else DELIVERY)
            else:
                ref = StopRef(f"n{node}", DELIVERY)
            routes.setdefault(int(row.vehicle_id), []).append(ref)
    return list(routes.values())


def routes_to_solution(problem: Problem, routes: list[list[StopRef]], engine: str, seconds: float) -> Solution:
    timed = [
        timed_route(problem, vehicle, refs, departure_seconds=vehicle.shift_start_seconds)
        for vehicle, refs in zip(problem.vehicles, routes, strict=False)
        if refs
    ]
    served = {ref.job_key for refs in routes for ref in refs}
    return assemble_solution(problem, timed, served, engine=engine, search_seconds=seconds)


# ---------------------------------------------------------------- BKS
def load_bks(root: Path) -> dict[str, tuple[float, int]]:
    """instance name -> (cost or distance, vehicles)."""
    bks: dict[str, tuple[float, int]] = {}
    for path in root.rglob("bks.csv"):
        for row in csv.DictReader(path.open()):
            bks[row["instance"]] = (float(row["bks_cost"]), int(row["bks_vehicles"]))
    for path in root.rglob("bks_pdptw.csv"):
        for row in csv.DictReader(path.open()):
            bks[row["instance"]] = (float(row["bks_distance"]), int(row["bks_vehicles"]))
    return bks


def bks_from_sol(inst: Instance) -> tuple[float, int] | None:
    sol = inst.path.with_suffix(".sol")
    if not sol.exists():
        return None
    routes, cost = [], None
    for line in sol.read_text().splitlines():
        m = re.match(r"\s*Route\s*#?\s*\d+\s*:\s*(.*)", line)
        if m and m.group(1).split():
            routes.append([int(x) for x in m.group(1).split()])
        m = re.match(r"\s*Cost\s+([\d.]+)", line)
        if m:
            cost = float(m.group(1))
    if not routes:
        return None
    return (cost if cost is not None else exact_distance(inst, routes)), len(routes)


def instance_class(inst: Instance) -> str:
    name = inst.name.upper()
    m = re.match(r"([A-Z]+)(\d)", name)
    base = m.group(1) + m.group(2) if m else name
    if inst.kind == "vrptw" and "_" in name:
        return f"GH-{base}"
    if inst.kind == "cvrp":
        return "X"
    return base


# ---------------------------------------------------------------- run
def run_one(inst: Instance, problem: Problem, solver: str, seconds: float) -> dict:
    started = time.monotonic()
    note = ""
    if solver == "allmile":
        solution = solve(problem, time_limit_seconds=seconds, seed=0)
        engine = solution.engine
    elif solver == "pyvrp":
        if inst.kind == "pdptw":
            return {"skipped": True, "note": "PyVRP peer: PDPTW not modelled here (no paired requests)"}
        routes = solve_pyvrp_peer(inst, problem, seconds)
        elapsed = time.monotonic() - started
        if routes is None:
            return {"seconds": elapsed, "feasible": False, "note": "no feasible solution"}
        solution = routes_to_solution(problem, routes, "pyvrp", elapsed)
        engine = "pyvrp"
    elif solver == "vroom":
        routes = solve_vroom_peer(inst, problem, seconds)
        solution = routes_to_solution(problem, routes or [], "vroom", time.monotonic() - started)
        engine = "vroom"
    else:
        raise ValueError(f"unknown solver {solver}")
    elapsed = time.monotonic() - started
    violations = check_solution(problem, solution)
    served_all = not solution.unassigned
    node_routes = [[int(stop.job_key[1:]) if stop.kind == PICKUP or inst.kind != "pdptw" else _node_of(inst, stop)
                    for stop in route.stops] for route in solution.routes]
    cost = exact_distance(inst, node_routes)
    if violations:
        note = f"{len(violations)} violations, first: {violations[0].kind} {violations[0].detail}"
    elif not served_all:
        note = f"{len(solution.unassigned)} jobs unassigned"
    return {
        "cost": round(cost, 4),
        "vehicles": len(solution.routes),
        "seconds": round(elapsed, 2),
        "feasible": not violations and served_all,
        "engine": engine,
        "unassigned": len(solution.unassigned),
        "note": note,
    }


def _node_of(inst: Instance, stop) -> int:
    # A PDPTW job is keyed by its pickup node; its delivery visit is the paired node.
    pickup = int(stop.job_key[1:])
    return next(d for d, p in inst.pickup_of.items() if p == pickup)


# ---------------------------------------------------------------- hub sync study
def hub_sync_study(seconds: float, seed: int = 1) -> list[dict]:
    """Solve-time cost of hub synchronisation on a synthetic two-tier day:
    first-mile vans collect parcels and bring them to the hub, last-mile vans
    deliver them; with links a last-mile route leaves only after its parcels
    arrived plus 15 min handling. Same instance with and without links."""
    import random

    from routing.solver.matrix import haversine_matrix
    from routing.solver.problem import HubLink

    rng = random.Random(seed)
    hub = Location("hub", 48.137, 11.575)
    n_pickups, n_deliveries = 30, 60
    points = [hub] + [Location(f"c{i}", 48.137 + rng.uniform(-0.1, 0.1), 11.575 + rng.uniform(-0.15, 0.15))
                      for i in range(n_pickups + n_deliveries)]
    first, last = frozenset({"first"}), frozenset({"last"})
    # Collections happen 8:00-10:00; a third of the unlinked deliveries are due
    # 7:00-9:00, so they cannot share a van with parcels still being collected.
    collect = (TimeWindow(8 * 3600, 10 * 3600),)
    jobs = [Job(f"in{i}", pickup=Visit(1 + i, 180, collect), demand=(1,), required_skills=first)
            for i in range(n_pickups)]
    for i in range(n_deliveries):
        window = (TimeWindow(7 * 3600, 9 * 3600),) if i >= n_pickups and i % 3 == 0 else ()
        jobs.append(Job(f"out{i}", delivery=Visit(1 + n_pickups + i, 120, window), demand=(1,), required_skills=last))
    fleet = [Vehicle(f"fm{k}", 0, 0, capacity=(20,), skills=first, shift_start_seconds=6 * 3600,
                     shift_end_seconds=18 * 3600, fixed_cost=50.0, cost_per_hour=20.0) for k in range(3)]
    fleet += [Vehicle(f"lm{k}", 0, 0, capacity=(20,), skills=last, shift_start_seconds=6 * 3600,
                      shift_end_seconds=18 * 3600, fixed_cost=50.0, cost_per_hour=20.0) for k in range(6)]
    links = tuple(HubLink(f"in{i}", f"out{i}", handling_seconds=900) for i in range(n_pickups))
    base = Problem(tuple(points), tuple(jobs), tuple(fleet), haversine_matrix(points), ("parcels",))
    rows = []
    for label, problem in (("without_links", base), ("with_links", replace(base, hub_links=links))):
        first_seen: list[float] = []
        started = time.monotonic()
        solution = solve(problem, time_limit_seconds=seconds,
                         on_progress=lambda p: first_seen.append(time.monotonic() - started))
        violations = check_solution(problem, solution)
        last_mile_start = min((r.start_seconds for r in solution.routes if r.vehicle_key.startswith("lm")), default=None)
        rows.append({
            "case": label, "engine": solution.engine, "time_limit_seconds": seconds,
            "first_progress_seconds": round(first_seen[0], 3) if first_seen else None,
            "cost": round(solution.cost, 2), "vehicles": len(solution.routes),
            "unassigned": len(solution.unassigned), "feasible": not violations,
            "earliest_last_mile_departure_h": None if last_mile_start is None else round(last_mile_start / 3600, 2),
        })
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=Path)
    parser.add_argument("--hub-sync-study", action="store_true", help="measure hub synchronisation instead")
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--solvers", default="allmile,pyvrp,vroom")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", default="", help="comma-separated instance names to run")
    args = parser.parse_args(argv)

    if args.hub_sync_study:
        rows = hub_sync_study(args.time_limit)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return 0
    if args.instances is None:
        parser.error("--instances is required")
    solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    bks = load_bks(args.instances)
    paths = sorted(p for p in args.instances.rglob("*") if p.suffix in (".txt", ".vrp"))
    results = []
    for path in paths:
        inst = read_instance(path)
        if inst is None or (only and inst.name not in only):
            continue
        problem = to_problem(inst)
        best = bks.get(inst.name) or bks_from_sol(inst)
        for solver in solvers:
            outcome = run_one(inst, problem, solver, args.time_limit)
            row = {"instance": inst.name, "class": instance_class(inst), "kind": inst.kind, "solver": solver,
                   "time_limit_seconds": args.time_limit, **outcome}
            if outcome.get("skipped"):
                row.update(cost=None, vehicles=None, gap_pct=None, seconds=0.0, feasible=None)
            else:
                row["bks_cost"] = best[0] if best else None
                row["bks_vehicles"] = best[1] if best else None
                row["gap_pct"] = round(100 * (row["cost"] - best[0]) / best[0], 3) if best and "cost" in row else None
                row.setdefault("cost", None)
                row.setdefault("vehicles", None)
            results.append(row)
            print(_format_row(row), flush=True)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))
    print()
    print(summary(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def _format_row(row: dict) -> str:
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)
    extra = f"  {row['note']}" if row.get("note") else ""
    return (f"{row['instance']:<10} {row['solver']:<8} {fmt(row.get('cost'), '>11.2f')} "
            f"{fmt(row.get('vehicles'), '>4d')} {fmt(row.get('gap_pct'), '>8.2f')}% "
            f"{fmt(row.get('seconds'), '>7.1f')}s {str(row.get('feasible')):<6}{extra}")


def summary(results: list[dict]) -> str:
    lines = [f"{'instance':<10} {'solver':<8} {'cost':>11} {'veh':>4} {'gap':>9} {'seconds':>8} feasible"]
    lines += [_format_row(r) for r in results]
    lines.append("")
    lines.append("mean gap % (feasible runs) per solver and class; vehicles over BKS in brackets")
    classes = sorted({r["class"] for r in results})
    solvers = list(dict.fromkeys(r["solver"] for r in results))
    for solver in solvers:
        parts = []
        rows = [r for r in results if r["solver"] == solver and r.get("gap_pct") is not None and r.get("feasible")]
        for cls in classes + ["ALL"]:
            sel = [r for r in rows if cls == "ALL" or r["class"] == cls]
            if sel:
                extra_veh = sum(r["vehicles"] - r["bks_vehicles"] for r in sel if r.get("bks_vehicles"))
                parts.append(f"{cls}: {statistics.mean(r['gap_pct'] for r in sel):.2f} [{extra_veh:+d}]")
        n_feasible = sum(1 for r in results if r["solver"] == solver and r.get("feasible"))
        n_total = sum(1 for r in results if r["solver"] == solver and r.get("feasible") is not None)
        lines.append(f"{solver:<8} feasible {n_feasible}/{n_total}  " + "  ".join(parts))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
