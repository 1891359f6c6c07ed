"""Matrix providers: where travel distances and durations come from.

* ``haversine_matrix``: great-circle distance times a detour factor, durations
  from a speed per vehicle profile. No network, good enough to plan a demo day.
* ``osrm_matrix``: the OSRM ``table`` service over HTTP, chunked for big sets.
* ``explicit_matrix``: given numbers (benchmarks, tests).
* ``MatrixCache``: memoises any provider by the set of locations.

Every provider returns a ``Matrix``; asymmetric values are kept as they are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import httpx

from routing.solver.problem import Location, Matrix

EARTH_RADIUS_METERS = 6_371_008.8
# Roads are longer than the straight line; 1.3 is a common urban average for
# legs of a few km. Measured on Monaco (bench/osrm_detour.py, OSRM car profile,
# 89,538 pairs): road/great-circle 2.62 as a ratio of sums (2.1 above 2 km) and
# 14.8 km/h of straight line per hour, against 23 km/h here (30 km/h / 1.3).
# A hilly town of one-way loops is the extreme case: pass detour_factor and
# speeds_kmh for such an area, or serve OSRM (tools/osrm.py).
DEFAULT_DETOUR_FACTOR = 1.3
DEFAULT_SPEEDS_KMH: Mapping[str, float] = {
    "car": 30.0,
    "van": 27.0,
    "truck": 22.0,
    "bike": 15.0,
}


class MatrixError(Exception):
    """A matrix could not be produced (bad input or an unreachable service)."""


class OsrmUnavailable(MatrixError):
    """The OSRM server did not answer, or answered with an error."""


def _require_coordinates(locations: Sequence[Location]) -> list[tuple[float, float]]:
    points = []
    for location in locations:
        if location.lat is None or location.lng is None:
            raise MatrixError(f"location {location.key} has no coordinates")
        points.append((location.lat, location.lng))
    return points


def haversine_meters(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lng1 = map(math.radians, a)
    lat2, lng2 = map(math.radians, b)
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lng2 - lng1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_METERS * math.asin(min(1.0, math.sqrt(h)))


def haversine_matrix(
    locations: Sequence[Location],
    *,
    speeds_kmh: Mapping[str, float] = DEFAULT_SPEEDS_KMH,
    detour_factor: float = DEFAULT_DETOUR_FACTOR,
) -> Matrix:
    points = _require_coordinates(locations)
    distance = tuple(
        tuple(round(haversine_meters(a, b) * detour_factor) for b in points)
        for a in points
    )
    durations = {
        profile: tuple(tuple(round(d * 3.6 / speed) for d in row) for row in distance)
        for profile, speed in speeds_kmh.items()
    }
    return Matrix(distance_meters=distance, duration_seconds=durations)


def explicit_matrix(
    distance_meters: Sequence[Sequence[int]],
    duration_seconds: Sequence[Sequence[int]]
    | Mapping[str, Sequence[Sequence[int]]]
    | None = None,
    *,
    profiles: Sequence[str] = ("car",),
) -> Matrix:
    """Durations default to the distances (benchmarks where time = distance)."""
    distance = tuple(tuple(int(x) for x in row) for row in distance_meters)
    n = len(distance)
    if any(len(row) != n for row in distance):
        raise MatrixError("distance matrix is not square")
    if duration_seconds is None:
        durations = dict.fromkeys(profiles, distance)
    elif isinstance(duration_seconds, Mapping):
        durations = {
            p: tuple(tuple(int(x) for x in row) for row in m)
            for p, m in duration_seconds.items()
        }
    else:
        same = tuple(tuple(int(x) for x in row) for row in duration_seconds)
        durations = dict.fromkeys(profiles, same)
    return Matrix(distance_meters=distance, duration_seconds=durations)


# A location further than this from any road the OSRM server knows is almost
# certainly outside its extract (OSRM would otherwise snap a Paris stop onto a
# Monaco street without complaint).
DEFAULT_MAX_SNAP_METERS = 1_000.0


def osrm_matrix(
    locations: Sequence[Location],
    *,
    base_url: str,
    profiles: Mapping[str, str] | None = None,
    chunk_size: int = 100,
    timeout_seconds: float = 30.0,
    client: httpx.Client | None = None,
    max_snap_meters: float | None = DEFAULT_MAX_SNAP_METERS,
) -> Matrix:
    """Distances and durations from OSRM's ``/table/v1/{profile}/`` service.

    ``profiles`` maps our vehicle profile to the OSRM profile name (default
    {"car": "driving"}). Large sets are fetched in chunk_size × chunk_size blocks
    because OSRM caps the table size (``--max-table-size``, 100 by default); each
    request carries only its block's coordinates, so the URL stays under the
    server's header limit (about 1,250 coordinates by default) whatever the
    size of the set. Distances come from the first profile; unreachable pairs
    (null) raise, and so does a location that snaps further than
    ``max_snap_meters`` from its coordinates (None turns the check off).
    """
    points = _require_coordinates(locations)
    if chunk_size < 1:
        raise MatrixError("chunk_size must be at least 1")
    profiles = dict(profiles or {"car": "driving"})
    n = len(points)
    owns_client = client is None
    http = client or httpx.Client(timeout=timeout_seconds)
    try:
        distance: list[list[int]] = [[0] * n for _ in range(n)]
        durations: dict[str, list[list[int]]] = {}
        for index, (profile, osrm_profile) in enumerate(profiles.items()):
            duration = [[0] * n for _ in range(n)]
            for row0 in range(0, n, chunk_size):
                rows = list(range(row0, min(n, row0 + chunk_size)))
                for col0 in range(0, n, chunk_size):
                    cols = list(range(col0, min(n, col0 + chunk_size)))
                    body = _osrm_table(http, base_url, osrm_profile, points, rows, cols)
                    if max_snap_meters is not None:
                        _check_snapping(body, locations, rows, cols, max_snap_meters)
                    for i, row in zip(rows, body["durations"], strict=True):
                        for j, value in zip(cols, row, strict=True):
                            if value is None:
                                raise MatrixError(
                                    f"no road from {locations[i].key} to {locations[j].key}"
                                )
                            duration[i][j] = round(value)
                    if index == 0:
                        for i, row in zip(rows, body["distances"], strict=True):
                            for j, value in zip(cols, row, strict=True):
                                distance[i][j] = round(value or 0)
            durations[profile] = duration
    finally:
        if owns_client:
            http.close()
    return Matrix(
        distance_meters=tuple(tuple(r) for r in distance),
        duration_seconds={p: tuple(tuple(r) for r in m) for p, m in durations.items()},
    )


def _osrm_table(
    http: httpx.Client,
    base_url: str,
    profile: str,
    points: Sequence[tuple[float, float]],
    rows: list[int],
    cols: list[int],
) -> dict:
    """One block: the request lists the block's own coordinates (rows, then the
    columns not already among them) and names sources/destinations within it."""
    block = list(dict.fromkeys(rows + cols))
    position = {point_index: k for k, point_index in enumerate(block)}
    coordinates = ";".join(f"{points[k][1]:.6f},{points[k][0]:.6f}" for k in block)
    url = f"{base_url.rstrip('/')}/table/v1/{profile}/{coordinates}"
    params = {
        "sources": ";".join(str(position[i]) for i in rows),
        "destinations": ";".join(str(position[j]) for j in cols),
        "annotations": "duration,distance",
        "generate_hints": "false",  # we never send hints back; they are most of the body
    }
    try:
        response = http.get(url, params=params)
    except httpx.HTTPError as error:
        raise OsrmUnavailable(f"OSRM at {base_url} unreachable: {error}") from error
    if response.status_code != 200:
        raise OsrmUnavailable(
            f"OSRM answered {response.status_code}: {response.text[:200]}"
        )
    try:
        body = response.json()
    except ValueError as error:
        raise OsrmUnavailable(
            f"OSRM answered something that is not JSON: {response.text[:200]}"
        ) from error
    if body.get("code") != "Ok":
        raise OsrmUnavailable(f"OSRM error {body.get('code')}: {body.get('message')}")
    return body


def _check_snapping(
    body: dict,
    locations: Sequence[Location],
    rows: list[int],
    cols: list[int],
    max_snap_meters: float,
) -> None:
    """OSRM reports how far it moved each coordinate to reach a road (``distance``
    of each waypoint); a long move means the location is off this network."""
    for key, indices in (("sources", rows), ("destinations", cols)):
        for i, waypoint in zip(indices, body.get(key) or (), strict=False):
            snapped_meters = waypoint.get("distance")
            if snapped_meters is not None and snapped_meters > max_snap_meters:
                raise MatrixError(
                    f"location {locations[i].key} is {snapped_meters:.0f} m from the nearest road "
                    f"of the OSRM network (limit {max_snap_meters:.0f} m): outside its map?"
                )


class MatrixCache:
    """Memoises a provider by the ordered set of location coordinates/keys, so a
    re-optimisation of the same day does not ask OSRM again."""

    def __init__(
        self, provider: Callable[[Sequence[Location]], Matrix], max_entries: int = 32
    ):
        self._provider = provider
        self._max_entries = max_entries
        self._entries: dict[tuple, Matrix] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key_of(locations: Sequence[Location]) -> tuple:
        return tuple((loc.key, loc.lat, loc.lng) for loc in locations)

    def __call__(self, locations: Sequence[Location]) -> Matrix:
        key = self.key_of(locations)
        if key in self._entries:
            self.hits += 1
            return self._entries[key]
        self.misses += 1
        matrix = self._provider(locations)
        if len(self._entries) >= self._max_entries:
            self._entries.pop(next(iter(self._entries)))  # oldest first
        self._entries[key] = matrix
        return matrix
