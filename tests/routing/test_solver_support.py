"""Builders for small solver problems (no tests here; shared by test_solver_*)."""

from __future__ import annotations

import math
from dataclasses import replace

from routing.solver.matrix import explicit_matrix
from routing.solver.problem import Job, Location, Problem, TimeWindow, Vehicle, Visit


def grid_problem(
    points: list[tuple[int, int]],
    *,
    jobs: list[Job] | None = None,
    vehicles: list[Vehicle] | None = None,
    dims: tuple[str, ...] = ("parcels",),
    **problem_kwargs,
) -> Problem:
    """Locations at integer points; 1 unit of distance = 100 m = 100 s (36 km/h)."""
    distance = [[round(math.dist(a, b) * 100) for b in points] for a in points]
    if jobs is None:
        jobs = [Job(f"j{i}", delivery=Visit(i, 0), demand=(1,) * len(dims)) for i in range(1, len(points))]
    if vehicles is None:
        vehicles = [vehicle("v0", capacity=(100,) * len(dims))]
    return Problem(
        locations=tuple(Location(f"p{i}") for i in range(len(points))),
        jobs=tuple(jobs),
        vehicles=tuple(vehicles),
        matrix=explicit_matrix(distance),
        capacity_dimensions=dims,
        **problem_kwargs,
    )


def vehicle(key: str, **kwargs) -> Vehicle:
    base = Vehicle(key=key, start_location_index=0, end_location_index=0, capacity=(100,), shift_end_seconds=100_000)
    return replace(base, **kwargs)


def delivery(key: str, location: int, *, demand=(1,), window: tuple[int, int] | None = None, **kwargs) -> Job:
    windows = () if window is None else (TimeWindow(*window),)
    return Job(key, delivery=Visit(location, kwargs.pop("service_seconds", 0), windows), demand=demand, **kwargs)


def pickup(key: str, location: int, *, demand=(1,), window: tuple[int, int] | None = None, **kwargs) -> Job:
    windows = () if window is None else (TimeWindow(*window),)
    return Job(key, pickup=Visit(location, kwargs.pop("service_seconds", 0), windows), demand=demand, **kwargs)


def pair(key: str, frm: int, to: int, *, demand=(1,), **kwargs) -> Job:
    return Job(key, pickup=Visit(frm, 0), delivery=Visit(to, 0), demand=demand, **kwargs)


def stop_keys(solution) -> list[list[tuple[str, str]]]:
    return [[(s.job_key, s.kind) for s in route.stops] for route in solution.routes]
