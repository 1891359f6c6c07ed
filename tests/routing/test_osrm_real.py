"""The OSRM matrix provider against a real osrm-routed on Monaco's road network.

The module builds the network from data/monaco.osm.pbf in a temporary directory
with tools/osrm.py (the venv with the OSRM programs is made once, in
.local/osrm-venv), serves it on a free loopback port, and checks
``routing.solver.matrix.osrm_matrix`` against it: real addresses, one-way
streets, chunking, snapping, a server that is down, and a small optimisation
verified by the independent checker.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import httpx
import pytest

from routing.models import OptimizationJob, Route
from routing.problem_builder import matrix_default
from routing.services import optimization_job_create, optimization_job_run
from routing.solver import (
    Job,
    Location,
    Problem,
    TimeWindow,
    Vehicle,
    Visit,
    check_solution,
    solve,
)
from routing.solver.matrix import (
    MatrixError,
    OsrmUnavailable,
    haversine_meters,
    osrm_matrix,
)
from shipments.states import Mile
from tests.routing.test_jobs_support import first_mile_day, last_mile_day
from tools.osrm import (
    OsrmSetupError,
    ensure_osrm,
    free_loopback_port,
    start_osrm_routed,
    stop_osrm_routed,
)

# Real places, with the coordinates of their street entrance.
MONACO_ADDRESSES = [
    Location("place-du-casino", 43.7394, 7.4276),
    Location("place-du-palais", 43.7312, 7.4199),
    Location("musee-oceanographique", 43.7307, 7.4253),
    Location("stade-louis-ii", 43.7277, 7.4162),
    Location("gare-de-monaco", 43.7387, 7.4206),
    Location("grimaldi-forum", 43.7437, 7.4311),
    Location("avenue-princesse-grace-larvotto", 43.7465, 7.4335),
    Location("jardin-exotique", 43.7311, 7.4110),
    Location("hopital-princesse-grace", 43.7357, 7.4134),
    Location("fontvieille-centre-commercial", 43.7284, 7.4150),
    Location("monte-carlo-bay", 43.7497, 7.4396),
    Location("beausoleil-marche", 43.7436, 7.4236),
]
KEYS = [location.key for location in MONACO_ADDRESSES]
PROMENADE_DES_ANGLAIS_NICE = Location(
    "promenade-des-anglais", 43.6950, 7.2650
)  # off this map


@pytest.fixture(scope="module")
def osrm_build(tmp_path_factory) -> Path:
    return ensure_osrm(tmp_path_factory.mktemp("osrm"))


@pytest.fixture(scope="module")
def osrm_url(osrm_build):
    port = free_loopback_port()
    process = start_osrm_routed(port, osrm_file=osrm_build)
    yield f"http://127.0.0.1:{port}"
    assert stop_osrm_routed(process) == 0


@pytest.fixture(scope="module")
def osrm_http(osrm_url):
    """One keep-alive connection for the tests' own questions to OSRM."""
    with httpx.Client(base_url=osrm_url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def monaco(osrm_url):
    # Addresses must lie on the network: at most 60 m from a road.
    return osrm_matrix(MONACO_ADDRESSES, base_url=osrm_url, max_snap_meters=60)


def snapped(http: httpx.Client, locations: list[Location]) -> list[tuple[float, float]]:
    """Where OSRM's table service puts each location on its roads (``nearest``
    may pick a tiny disconnected piece that the table would not use)."""
    coordinates = ";".join(f"{loc.lng},{loc.lat}" for loc in locations)
    body = http.get(
        f"/table/v1/driving/{coordinates}",
        params={"sources": "0", "generate_hints": "false"},
    ).json()
    return [
        (lat, lng)
        for lng, lat in (waypoint["location"] for waypoint in body["destinations"])
    ]


def route_of(http: httpx.Client, a: Location, b: Location) -> dict:
    body = http.get(
        f"/route/v1/driving/{a.lng},{a.lat};{b.lng},{b.lat}",
        params={"overview": "false"},
    ).json()
    return body["routes"][0]


# ---------------------------------------------------------------------------
# The build
# ---------------------------------------------------------------------------


def test_the_build_is_reused_while_its_input_is_unchanged(osrm_build):
    made_at = osrm_build.with_suffix(".osrm.mldgr").stat().st_mtime_ns

    started = time.monotonic()
    again = ensure_osrm(osrm_build.parent)

    assert again == osrm_build
    assert osrm_build.with_suffix(".osrm.mldgr").stat().st_mtime_ns == made_at
    assert time.monotonic() - started < 5


def test_a_broken_road_file_fails_the_build_with_the_tools_message(tmp_path):
    broken = tmp_path / "broken.osm.pbf"
    broken.write_bytes(b"this is not a protobuf file")

    with pytest.raises(OsrmSetupError, match="osrm-extract"):
        ensure_osrm(tmp_path / "work", pbf=broken)


# ---------------------------------------------------------------------------
# A matrix of real addresses
# ---------------------------------------------------------------------------


def test_the_matrix_matches_osrm_route_for_each_direction(osrm_http, monaco):
    casino, palais, fontvieille = (
        KEYS.index(k)
        for k in ("place-du-casino", "place-du-palais", "fontvieille-centre-commercial")
    )

    for i, j in (
        (casino, palais),
        (palais, casino),
        (fontvieille, palais),
        (palais, fontvieille),
    ):
        route = route_of(osrm_http, MONACO_ADDRESSES[i], MONACO_ADDRESSES[j])
        assert monaco.distance_meters[i][j] == pytest.approx(route["distance"], abs=1)
        assert monaco.duration_seconds["car"][i][j] == pytest.approx(
            route["duration"], abs=1
        )


def test_one_way_streets_make_the_matrix_asymmetric(monaco):
    durations = monaco.duration_seconds["car"]
    casino, forum = KEYS.index("place-du-casino"), KEYS.index("grimaldi-forum")

    # Down to the seafront is direct; back up climbs round the one-way loops
    # of Monte-Carlo (measured: 118 s and 838 m there, 285 s and 2,578 m back).
    assert durations[forum][casino] > 1.5 * durations[casino][forum]
    assert (
        monaco.distance_meters[forum][casino]
        > 2 * monaco.distance_meters[casino][forum]
    )
    n = len(KEYS)
    lopsided = [
        (i, j)
        for i in range(n)
        for j in range(i + 1, n)
        if abs(durations[i][j] - durations[j][i])
        > 0.25 * max(durations[i][j], durations[j][i])
    ]
    assert len(lopsided) >= 5


def test_roads_are_never_shorter_than_the_straight_line(osrm_http, monaco):
    points = snapped(osrm_http, MONACO_ADDRESSES)
    n = len(points)

    for i in range(n):
        assert monaco.distance_meters[i][i] == 0
        assert monaco.duration_seconds["car"][i][i] == 0
        for j in range(n):
            if i == j:
                continue
            straight = haversine_meters(points[i], points[j])
            road = monaco.distance_meters[i][j]
            assert road >= straight - 1, (
                f"{KEYS[i]} -> {KEYS[j]}: {road} m < {straight:.0f} m"
            )
            assert road <= 8 * straight + 1_000, (
                f"{KEYS[i]} -> {KEYS[j]}: {road} m for {straight:.0f} m"
            )


def test_average_speeds_are_those_of_a_town(monaco):
    n = len(KEYS)
    speeds_kmh = [
        monaco.distance_meters[i][j] / monaco.duration_seconds["car"][i][j] * 3.6
        for i in range(n)
        for j in range(n)
        if i != j
    ]

    assert min(speeds_kmh) > 8
    assert max(speeds_kmh) < 80
    assert 20 < sorted(speeds_kmh)[len(speeds_kmh) // 2] < 55


def test_a_location_off_the_map_is_refused_not_snapped(osrm_url):
    with pytest.raises(
        MatrixError, match="promenade-des-anglais is .* m from the nearest road"
    ):
        osrm_matrix(
            [MONACO_ADDRESSES[0], PROMENADE_DES_ANGLAIS_NICE], base_url=osrm_url
        )


def test_the_configured_provider_uses_osrm_and_falls_back_off_the_map(
    osrm_url, settings
):
    settings.OSRM_BASE_URL = osrm_url

    matrix, source = matrix_default(MONACO_ADDRESSES[:3])
    assert source == "osrm"
    assert matrix.distance_meters[0][1] > 0

    _, source = matrix_default([MONACO_ADDRESSES[0], PROMENADE_DES_ANGLAIS_NICE])
    assert source.startswith(
        "haversine (OSRM unavailable: location promenade-des-anglais is "
    )


# ---------------------------------------------------------------------------
# Chunking
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def points_on_roads(osrm_http) -> list[Location]:
    """120 random points of Monaco's streets (random spots snapped onto them)."""
    rng = random.Random(120)
    spots = [
        Location(f"s{k}", rng.uniform(43.7270, 43.7500), rng.uniform(7.4100, 7.4380))
        for k in range(120)
    ]
    on_roads = snapped(osrm_http, spots[:60]) + snapped(osrm_http, spots[60:])
    return [Location(f"road-{k}", lat, lng) for k, (lat, lng) in enumerate(on_roads)]


def counting_client(requests: list[httpx.Request]) -> httpx.Client:
    return httpx.Client(timeout=30, event_hooks={"request": [requests.append]})


def test_a_large_set_is_fetched_in_blocks_that_agree_with_each_other(
    osrm_url, points_on_roads
):
    by_100: list[httpx.Request] = []
    by_37: list[httpx.Request] = []

    with counting_client(by_100) as client:
        blocks_of_100 = osrm_matrix(points_on_roads, base_url=osrm_url, client=client)
    with counting_client(by_37) as client:
        blocks_of_37 = osrm_matrix(
            points_on_roads, base_url=osrm_url, chunk_size=37, client=client
        )

    assert len(by_100) == 4  # 2 x 2 blocks: 100 + 20
    assert len(by_37) == 16  # 4 x 4 blocks: 37 + 37 + 37 + 9
    assert blocks_of_100.distance_meters == blocks_of_37.distance_meters
    assert blocks_of_100.duration_seconds == blocks_of_37.duration_seconds


def test_blocks_are_put_back_in_the_right_place(osrm_url, osrm_http, points_on_roads):
    matrix = osrm_matrix(points_on_roads, base_url=osrm_url, chunk_size=50)

    rng = random.Random(7)
    for _ in range(6):  # pairs from different blocks, both directions
        i, j = rng.randrange(0, 50), rng.randrange(100, 120)
        for a, b in ((i, j), (j, i)):
            route = route_of(osrm_http, points_on_roads[a], points_on_roads[b])
            assert matrix.distance_meters[a][b] == pytest.approx(
                route["distance"], abs=1
            )
            assert matrix.duration_seconds["car"][a][b] == pytest.approx(
                route["duration"], abs=1
            )


def test_the_server_refuses_a_table_above_its_size_limit(osrm_url, points_on_roads):
    with pytest.raises(OsrmUnavailable, match="TooBig"):
        osrm_matrix(points_on_roads, base_url=osrm_url, chunk_size=120)


def test_requests_stay_under_the_header_limit_whatever_the_size_of_the_set(
    osrm_url, osrm_build, points_on_roads
):
    """osrm-routed drops a request line longer than its header limit (about 1,250
    coordinates by default). A server with a 2,000-byte limit shows it on 120 points:
    the whole set in one URL (about 2,400 bytes) is refused, while blocks of 25
    carry at most 50 coordinates."""
    port = free_loopback_port()
    process = start_osrm_routed(
        port, osrm_file=osrm_build, extra_args=["--max-header-size", "2000"]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        everything = ";".join(f"{p.lng:.6f},{p.lat:.6f}" for p in points_on_roads)
        with pytest.raises(httpx.HTTPError):
            httpx.get(
                f"{url}/table/v1/driving/{everything}",
                params={"sources": "0", "destinations": "1"},
            )

        matrix = osrm_matrix(points_on_roads, base_url=url, chunk_size=25)
    finally:
        stop_osrm_routed(process)

    reference = osrm_matrix(points_on_roads, base_url=osrm_url)
    assert matrix.distance_meters == reference.distance_meters
    assert matrix.duration_seconds == reference.duration_seconds


# ---------------------------------------------------------------------------
# A server that is down
# ---------------------------------------------------------------------------


def test_a_server_that_is_down_gives_a_clear_error_quickly():
    nobody = f"http://127.0.0.1:{free_loopback_port()}"

    started = time.monotonic()
    with pytest.raises(OsrmUnavailable, match=f"OSRM at {nobody} unreachable"):
        osrm_matrix(MONACO_ADDRESSES, base_url=nobody)
    assert time.monotonic() - started < 5


def test_a_stopped_server_stops_answering(osrm_build):
    port = free_loopback_port()
    process = start_osrm_routed(port, osrm_file=osrm_build)
    url = f"http://127.0.0.1:{port}"
    assert osrm_matrix(MONACO_ADDRESSES[:2], base_url=url).distance_meters[0][1] > 0

    assert stop_osrm_routed(process) == 0

    with pytest.raises(OsrmUnavailable, match="unreachable"):
        osrm_matrix(MONACO_ADDRESSES[:2], base_url=url)


def test_a_port_already_in_use_is_refused(osrm_url, osrm_build):
    taken = int(osrm_url.rsplit(":", 1)[1])

    with pytest.raises(OsrmSetupError, match=f"port {taken} on 127.0.0.1 is taken"):
        start_osrm_routed(taken, osrm_file=osrm_build)


# ---------------------------------------------------------------------------
# An optimisation on real roads
# ---------------------------------------------------------------------------

HOUR = 3_600


def monaco_day(matrix) -> Problem:
    """Two vans from Fontvieille deliver the eleven other addresses, 08:00-12:00,
    two of them with a morning window; neither van can carry everything."""
    depot = KEYS.index("fontvieille-centre-commercial")
    windows = {
        "musee-oceanographique": (8 * HOUR, 9 * HOUR),
        "monte-carlo-bay": (9 * HOUR, 10 * HOUR),
    }
    jobs = tuple(
        Job(
            key=key,
            delivery=Visit(
                location_index=index,
                service_seconds=180,
                time_windows=(TimeWindow(*windows[key]),) if key in windows else (),
            ),
            demand=(20 + 5 * index,),
        )
        for index, key in enumerate(KEYS)
        if index != depot
    )
    vans = tuple(
        Vehicle(
            key=f"van-{k}",
            start_location_index=depot,
            end_location_index=depot,
            capacity=(300,),
            shift_start_seconds=8 * HOUR,
            shift_end_seconds=12 * HOUR,
            cost_per_km=1.0,
            cost_per_hour=20.0,
        )
        for k in (1, 2)
    )
    return Problem(
        locations=tuple(MONACO_ADDRESSES),
        jobs=jobs,
        vehicles=vans,
        matrix=matrix,
        capacity_dimensions=("kg",),
    )


def test_a_day_solved_on_real_roads_passes_the_independent_checker(monaco):
    problem = monaco_day(monaco)
    assert sum(job.demand[0] for job in problem.jobs) > 300  # one van is not enough

    solution = solve(problem, time_limit_seconds=2, seed=1)

    assert check_solution(problem, solution) == []
    assert solution.unassigned == ()
    assert len(solution.routes) == 2
    # The reported kilometres are those of the road matrix, one-way streets included.
    for route in solution.routes:
        path = [
            route.start_location_index,
            *(s.location_index for s in route.stops),
            route.end_location_index,
        ]
        assert route.distance_meters == sum(
            monaco.distance_meters[a][b] for a, b in zip(path, path[1:], strict=False)
        )


@pytest.mark.django_db
def test_a_monaco_last_mile_job_is_planned_and_saved_on_road_distances(
    hubs, osrm_url, settings
):
    settings.OSRM_BASE_URL = osrm_url
    day = last_mile_day(hubs, count=8, vehicles=2)
    job = optimization_job_create(
        service_date=day.day,
        hub=day.hub,
        mile=Mile.LAST,
        vehicles=day.vehicles,
        time_limit_seconds=1,
    )

    job = optimization_job_run(job_id=job.pk)

    assert job.status == OptimizationJob.Status.SUCCEEDED, job.error
    assert job.statistics["matrix"] == "osrm"
    assert job.statistics["checker_violations"] == 0
    routes = list(Route.objects.filter(job=job))
    assert routes
    for route in routes:  # geometry: hub, stops in order, hub
        path = [
            Location(f"g{k}", lat, lng) for k, (lat, lng) in enumerate(route.geometry)
        ]
        roads = osrm_matrix(path, base_url=osrm_url)
        legs = range(len(path) - 1)
        assert route.distance_meters == sum(
            roads.distance_meters[k][k + 1] for k in legs
        )


@pytest.mark.django_db
def test_a_nice_first_mile_job_says_why_it_fell_back_to_haversine(
    hubs, osrm_url, settings
):
    settings.OSRM_BASE_URL = osrm_url  # serves Monaco only
    day = first_mile_day(hubs, count=3, vehicles=1)
    job = optimization_job_create(
        service_date=day.day,
        hub=day.hub,
        mile=Mile.FIRST,
        vehicles=day.vehicles,
        time_limit_seconds=1,
    )

    job = optimization_job_run(job_id=job.pk)

    assert job.status == OptimizationJob.Status.SUCCEEDED, job.error
    assert job.statistics["matrix"].startswith("haversine (OSRM unavailable: location ")
    assert "m from the nearest road" in job.statistics["matrix"]
