"""Matrix providers: haversine, explicit, OSRM table client, cache."""

from __future__ import annotations

import httpx
import pytest

from routing.solver.matrix import (
    MatrixCache,
    MatrixError,
    OsrmUnavailable,
    explicit_matrix,
    haversine_matrix,
    osrm_matrix,
)
from routing.solver.problem import Location

BERLIN = Location("berlin", 52.5200, 13.4050)
POTSDAM = Location("potsdam", 52.3906, 13.0645)


def test_haversine_distance_and_per_profile_durations():
    matrix = haversine_matrix(
        [BERLIN, POTSDAM], speeds_kmh={"car": 36.0, "bike": 18.0}, detour_factor=1.0
    )
    # Great-circle Berlin-Potsdam is about 26.9 km.
    assert 26_500 < matrix.distance_meters[0][1] < 27_300
    assert matrix.distance_meters[0][0] == 0
    assert matrix.duration_seconds["bike"][0][1] == pytest.approx(
        2 * matrix.duration_seconds["car"][0][1], abs=1
    )


def test_explicit_matrix_keeps_asymmetry_and_rejects_ragged_input():
    matrix = explicit_matrix([[0, 5], [9, 0]])
    assert matrix.distance_meters[0][1] == 5
    assert matrix.distance_meters[1][0] == 9
    assert matrix.duration_seconds["car"] == matrix.distance_meters
    with pytest.raises(MatrixError):
        explicit_matrix([[0, 1], [1]])


def point_index(coordinate: str) -> int:
    """The test points sit at latitude 52.5 + i/100: recover i from "lng,lat"."""
    return round((float(coordinate.split(",")[1]) - 52.5) * 100)


def fake_osrm(requests: list[httpx.Request]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        block = [point_index(c) for c in request.url.path.rsplit("/", 1)[1].split(";")]
        sources = [block[int(x)] for x in request.url.params["sources"].split(";")]
        destinations = [
            block[int(x)] for x in request.url.params["destinations"].split(";")
        ]
        # Asymmetric on purpose: from i to j costs 10*i + j.
        return httpx.Response(
            200,
            json={
                "code": "Ok",
                "durations": [[10.0 * i + j for j in destinations] for i in sources],
                "distances": [[100.0 * i + j for j in destinations] for i in sources],
                "sources": [{"distance": 3.0} for _ in sources],
                "destinations": [{"distance": 3.0} for _ in destinations],
            },
        )

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_osrm_table_is_chunked_and_reassembled():
    locations = [Location(f"p{i}", 52.5 + i / 100, 13.4) for i in range(5)]
    requests: list[httpx.Request] = []

    matrix = osrm_matrix(
        locations, base_url="http://osrm.test", chunk_size=2, client=fake_osrm(requests)
    )

    assert len(requests) == 9  # 3 row blocks x 3 column blocks
    assert matrix.duration_seconds["car"][3][1] == 31
    assert matrix.distance_meters[1][4] == 104
    assert "/table/v1/driving/" in str(requests[0].url)


def test_each_osrm_request_carries_only_its_block_coordinates():
    """A whole set in every URL overflows OSRM's header limit past ~1,250 points."""
    locations = [Location(f"p{i}", 52.5 + i / 100, 13.4) for i in range(5)]
    requests: list[httpx.Request] = []

    osrm_matrix(
        locations, base_url="http://osrm.test", chunk_size=2, client=fake_osrm(requests)
    )

    sizes = [len(r.url.path.rsplit("/", 1)[1].split(";")) for r in requests]
    assert max(sizes) == 4  # two rows + two other columns
    # The diagonal block (rows 0-1 x columns 0-1) lists its points once.
    assert sizes[0] == 2


def test_a_location_far_from_any_road_is_refused():
    def far_snap(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "code": "Ok",
                "durations": [[0.0, 60.0], [60.0, 0.0]],
                "distances": [[0.0, 500.0], [500.0, 0.0]],
                "sources": [{"distance": 2.0}, {"distance": 26_000.0}],
                "destinations": [{"distance": 2.0}, {"distance": 26_000.0}],
            },
        )

    client = httpx.Client(transport=httpx.MockTransport(far_snap))
    with pytest.raises(MatrixError, match="potsdam is 26000 m from the nearest road"):
        osrm_matrix([BERLIN, POTSDAM], base_url="http://osrm.test", client=client)
    matrix = osrm_matrix(
        [BERLIN, POTSDAM],
        base_url="http://osrm.test",
        client=client,
        max_snap_meters=None,
    )
    assert matrix.distance_meters[1][0] == 500


def test_unreachable_osrm_raises_a_clear_error():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = httpx.Client(transport=httpx.MockTransport(refuse))
    with pytest.raises(OsrmUnavailable, match="unreachable"):
        osrm_matrix([BERLIN, POTSDAM], base_url="http://osrm.test", client=client)


def test_cache_asks_the_provider_once_per_location_set():
    calls = []

    def provider(locations):
        calls.append(len(locations))
        return haversine_matrix(locations)

    cache = MatrixCache(provider)
    cache([BERLIN, POTSDAM])
    cache([BERLIN, POTSDAM])
    cache([POTSDAM, BERLIN])
    assert calls == [2, 2]
    assert (cache.hits, cache.misses) == (1, 2)
