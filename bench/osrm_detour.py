"""How far roads are from the straight line, and how fast a car covers them.

    python bench/osrm_detour.py [--points 300] [--seed 1] [--json bench/results/osrm_detour_monaco.json]

Calibrates the haversine provider (``routing.solver.matrix.haversine_matrix``:
great circle x ``DEFAULT_DETOUR_FACTOR``, durations from ``DEFAULT_SPEEDS_KMH``)
against a real road network: OSRM, car profile, on ``data/monaco.osm.pbf``.

Method: random spots in the area are snapped onto the network by OSRM's
``table`` service (``nearest`` may pick a tiny disconnected piece that the
table service would not use); spots further than ``--max-snap-meters`` from a road (the
sea, parks, buildings far from a street) are dropped, so every point lies on a
road. The full matrix of the points comes from our own OSRM provider
(``osrm_matrix``), so every ordered pair is measured (300 points = 89,700 pairs).
Pairs closer than ``--min-straight-meters`` are left out of the ratios (two
points on the same street corner say nothing about detours).

Figures, overall and by straight-line distance band:
* detour: road metres / great-circle metres, per pair (median, p10, p90) and
  as a ratio of sums (what a route's total distance sees);
* speed: road km per hour of driving (ratio of sums), and the straight-line
  speed (great-circle km per hour), which is what a haversine estimate needs;
* asymmetry: share of pairs whose two directions differ by more than 25 %;
* error of the haversine provider, with today's defaults and with the fitted
  factor and speed: median absolute error on distance and duration per pair.

OSRM's car profile is free-flow driving: no traffic, no parking, no stops at
the door. Its speeds are an upper bound for a delivery van.

Starts its own osrm-routed (tools/osrm.py) on a free loopback port unless
``--base-url`` names a running one; stops it on exit.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from routing.solver.matrix import (  # noqa: E402
    DEFAULT_DETOUR_FACTOR,
    DEFAULT_SPEEDS_KMH,
    haversine_meters,
    osrm_matrix,
)
from routing.solver.problem import Location  # noqa: E402
from tools.osrm import (  # noqa: E402
    DATA_PBF,
    DEFAULT_WORKDIR,
    ensure_osrm,
    free_loopback_port,
    start_osrm_routed,
    stop_osrm_routed,
)

# Monaco and the edges of Cap-d'Ail and Beausoleil, where the extract has roads.
MONACO_BOX = {"south": 43.7240, "north": 43.7520, "west": 7.4080, "east": 7.4400}
# Straight-line bands, metres: legs between neighbouring stops sit in the first
# ones, hub-to-area legs in the last.
BANDS_METERS = ((50, 250), (250, 500), (500, 1_000), (1_000, 2_000), (2_000, 10_000))
ASYMMETRY_SHARE = 0.25
MAX_SPOT_TRIES_PER_POINT = 20
SNAP_BATCH = 100  # spots per snapping request (osrm-routed's default table size)


def snap_onto_roads(http: httpx.Client, spots: list[tuple[float, float]]) -> list[dict]:
    """Where the table service puts each spot (it snaps to the well-connected
    network, which ``nearest`` does not always do): one waypoint per spot."""
    coordinates = ";".join(f"{lng:.6f},{lat:.6f}" for lat, lng in spots)
    body = http.get(
        f"/table/v1/driving/{coordinates}",
        params={"sources": "0", "generate_hints": "false"},
    ).json()
    if body.get("code") != "Ok":
        raise SystemExit(
            f"OSRM refused the snapping request: {body.get('code')} {body.get('message')}"
        )
    return body["destinations"]


def sample_points_on_roads(
    http: httpx.Client, *, count: int, seed: int, max_snap_meters: float
) -> tuple[list[Location], int]:
    """``count`` points on the road network, and how many spots were tried."""
    rng = random.Random(seed)
    points: list[Location] = []
    seen: set[tuple[float, float]] = set()
    tries = 0
    while len(points) < count:
        if tries >= count * MAX_SPOT_TRIES_PER_POINT:
            raise SystemExit(
                f"only {len(points)} of {count} spots landed on a road; widen --max-snap-meters"
            )
        spots = [
            (
                rng.uniform(MONACO_BOX["south"], MONACO_BOX["north"]),
                rng.uniform(MONACO_BOX["west"], MONACO_BOX["east"]),
            )
            for _ in range(SNAP_BATCH)
        ]
        tries += len(spots)
        for waypoint in snap_onto_roads(http, spots):
            snapped_lng, snapped_lat = waypoint["location"]
            if (
                waypoint["distance"] > max_snap_meters
                or (snapped_lat, snapped_lng) in seen
            ):
                continue
            seen.add((snapped_lat, snapped_lng))
            points.append(Location(f"p{len(points)}", snapped_lat, snapped_lng))
            if len(points) == count:
                break
    return points, tries


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summarise(pairs: list[dict]) -> dict:
    ratios = [p["road_m"] / p["straight_m"] for p in pairs]
    road_m = sum(p["road_m"] for p in pairs)
    straight_m = sum(p["straight_m"] for p in pairs)
    seconds = sum(p["seconds"] for p in pairs)
    return {
        "pairs": len(pairs),
        "detour_median": round(statistics.median(ratios), 3),
        "detour_p10": round(percentile(ratios, 0.10), 3),
        "detour_p90": round(percentile(ratios, 0.90), 3),
        "detour_of_sums": round(road_m / straight_m, 3),
        "road_speed_kmh": round(road_m / seconds * 3.6, 1),
        "straight_line_speed_kmh": round(straight_m / seconds * 3.6, 1),
        "seconds_per_road_km": round(seconds / road_m * 1_000, 1),
    }


def haversine_errors(
    pairs: list[dict], *, detour_factor: float, speed_kmh: float
) -> dict:
    """Median absolute relative error of a haversine estimate against the road."""
    distance_errors = [
        abs(p["straight_m"] * detour_factor - p["road_m"]) / p["road_m"] for p in pairs
    ]
    duration_errors = [
        abs(p["straight_m"] * detour_factor * 3.6 / speed_kmh - p["seconds"])
        / p["seconds"]
        for p in pairs
    ]
    total_seconds = sum(p["seconds"] for p in pairs)
    estimated_seconds = sum(
        p["straight_m"] * detour_factor * 3.6 / speed_kmh for p in pairs
    )
    return {
        "detour_factor": detour_factor,
        "speed_kmh": speed_kmh,
        "distance_median_abs_error": round(statistics.median(distance_errors), 3),
        "duration_median_abs_error": round(statistics.median(duration_errors), 3),
        "total_duration_bias": round(estimated_seconds / total_seconds - 1, 3),
    }


def measure(
    base_url: str,
    *,
    points_count: int,
    seed: int,
    max_snap_meters: float,
    min_straight_meters: float,
) -> dict:
    with httpx.Client(base_url=base_url, timeout=30) as http:
        started = time.monotonic()
        points, tries = sample_points_on_roads(
            http, count=points_count, seed=seed, max_snap_meters=max_snap_meters
        )
        sampling_seconds = time.monotonic() - started
        started = time.monotonic()
        matrix = osrm_matrix(
            points, base_url=base_url, client=http, max_snap_meters=max_snap_meters
        )
        matrix_seconds = time.monotonic() - started

    durations = matrix.duration_seconds["car"]
    n = len(points)
    pairs: list[dict] = []
    too_close = 0
    lopsided = 0
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            straight_m = haversine_meters(
                (points[i].lat, points[i].lng), (points[j].lat, points[j].lng)
            )
            if straight_m < min_straight_meters:
                too_close += 1
                continue
            road_m, seconds = matrix.distance_meters[i][j], durations[i][j]
            if road_m <= 0 or seconds <= 0:
                too_close += 1  # the same node of the network
                continue
            pairs.append(
                {"straight_m": straight_m, "road_m": road_m, "seconds": seconds}
            )
            if i < j and abs(seconds - durations[j][i]) > ASYMMETRY_SHARE * max(
                seconds, durations[j][i]
            ):
                lopsided += 1

    overall = summarise(pairs)
    fitted_factor = overall["detour_of_sums"]
    fitted_speed = overall["road_speed_kmh"]
    return {
        "id": "osrm_detour",
        "region": DATA_PBF.name,
        "osrm_profile": "car (free flow)",
        "seed": seed,
        "points": n,
        "spots_tried": tries,
        "max_snap_meters": max_snap_meters,
        "min_straight_meters": min_straight_meters,
        "pairs_measured": len(pairs),
        "pairs_left_out_too_close": too_close,
        "asymmetric_share": round(lopsided / (len(pairs) / 2), 3),
        "overall": overall,
        "bands": [
            {"straight_m": f"{low}-{high}", **summarise(band)}
            for low, high in BANDS_METERS
            if (band := [p for p in pairs if low <= p["straight_m"] < high])
        ],
        "haversine_today": haversine_errors(
            pairs,
            detour_factor=DEFAULT_DETOUR_FACTOR,
            speed_kmh=DEFAULT_SPEEDS_KMH["car"],
        ),
        "haversine_fitted": haversine_errors(
            pairs, detour_factor=fitted_factor, speed_kmh=fitted_speed
        ),
        "seconds": {
            "sampling": round(sampling_seconds, 1),
            "matrix": round(matrix_seconds, 1),
        },
        "host": {
            "machine": platform.machine(),
            "python": platform.python_version(),
            "node": platform.node(),
        },
    }


def print_table(result: dict) -> None:
    print(
        f"{result['region']}: {result['points']} points on roads ({result['spots_tried']} spots tried), "
        f"{result['pairs_measured']} ordered pairs, {result['pairs_left_out_too_close']} left out as too close"
    )
    print(
        f"matrix {result['seconds']['matrix']} s, sampling {result['seconds']['sampling']} s; "
        f"pairs whose directions differ by >{ASYMMETRY_SHARE:.0%}: {result['asymmetric_share']:.1%}"
    )
    header = (
        f"{'straight line':>14} {'pairs':>7} {'detour p10':>10} {'median':>7} {'p90':>6} {'of sums':>8} "
        f"{'road km/h':>10} {'line km/h':>10} {'s/road km':>10}"
    )
    print(header)
    print("-" * len(header))
    for label, row in [
        *((b["straight_m"] + " m", b) for b in result["bands"]),
        ("all", result["overall"]),
    ]:
        print(
            f"{label:>14} {row['pairs']:>7} {row['detour_p10']:>10.2f} {row['detour_median']:>7.2f} "
            f"{row['detour_p90']:>6.2f} {row['detour_of_sums']:>8.2f} {row['road_speed_kmh']:>10.1f} "
            f"{row['straight_line_speed_kmh']:>10.1f} {row['seconds_per_road_km']:>10.1f}"
        )
    print()
    for name in ("haversine_today", "haversine_fitted"):
        e = result[name]
        print(
            f"{name:>17}: factor {e['detour_factor']:.2f}, {e['speed_kmh']:.1f} km/h -> median |error| "
            f"distance {e['distance_median_abs_error']:.0%}, duration {e['duration_median_abs_error']:.0%}; "
            f"total duration bias {e['total_duration_bias']:+.0%}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--points",
        type=int,
        default=300,
        help="points on roads; pairs = points x (points - 1)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-snap-meters", type=float, default=25.0)
    parser.add_argument("--min-straight-meters", type=float, default=50.0)
    parser.add_argument(
        "--base-url",
        help="a running OSRM serving the Monaco extract; else one is started",
    )
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    process = None
    base_url = args.base_url
    if base_url is None:
        port = free_loopback_port()
        process = start_osrm_routed(port, osrm_file=ensure_osrm(args.workdir))
        base_url = f"http://127.0.0.1:{port}"
    try:
        result = measure(
            base_url,
            points_count=args.points,
            seed=args.seed,
            max_snap_meters=args.max_snap_meters,
            min_straight_meters=args.min_straight_meters,
        )
    finally:
        if process is not None:
            stop_osrm_routed(process)

    print_table(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
