"""The solver's input: a vehicle routing problem as frozen dataclasses.

Pure Python: no Django, no solver library. Keys are opaque strings that the Django
side maps back to its rows. Every quantity carries its unit in its name; times are
seconds since a common origin (for a day plan, midnight of the depot's timezone).

A job is one of three kinds, decided by which visits it has:
* only ``delivery``: the goods leave with the vehicle from its start;
* only ``pickup``: the goods ride to the vehicle's end;
* both: a paired pickup and delivery, same vehicle, pickup first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Dropping a job costs this much (in cost units, see ``Vehicle``) unless the job
# says otherwise: far above any route cost, so jobs are dropped only when they
# cannot be served at all.
DEFAULT_UNASSIGNED_PENALTY = 1_000_000_000


@dataclass(frozen=True)
class Location:
    """A place. Either coordinates (for haversine/OSRM) or an index into an
    explicit matrix, or both."""

    key: str
    lat: float | None = None
    lng: float | None = None


@dataclass(frozen=True)
class TimeWindow:
    start_seconds: int
    end_seconds: int  # inclusive: service may start at exactly this instant


@dataclass(frozen=True)
class Visit:
    location_index: int  # index into Problem.locations
    service_seconds: int = 0
    # Service must start inside one of these; empty means "any time in the shift".
    time_windows: tuple[TimeWindow, ...] = ()


@dataclass(frozen=True)
class Job:
    key: str
    pickup: Visit | None = None
    delivery: Visit | None = None
    # One amount per Problem.capacity_dimensions, in integer units (grams, cm³, count).
    demand: tuple[int, ...] = ()
    required_skills: frozenset[str] = frozenset()
    # Dropping a job costs unassigned_penalty * (1 + priority): a higher priority
    # is dropped later.
    priority: int = 0
    unassigned_penalty: int = DEFAULT_UNASSIGNED_PENALTY

    @property
    def is_paired(self) -> bool:
        return self.pickup is not None and self.delivery is not None

    @property
    def visits(self) -> tuple[Visit, ...]:
        return tuple(v for v in (self.pickup, self.delivery) if v is not None)

    @property
    def drop_penalty(self) -> int:
        return self.unassigned_penalty * (1 + self.priority)


@dataclass(frozen=True)
class Break:
    """The driver must pause ``duration_seconds`` starting inside the window,
    never during a service."""

    window_start_seconds: int
    window_end_seconds: int  # latest start of the break
    duration_seconds: int


@dataclass(frozen=True)
class Vehicle:
    """Costs are in currency units; the solvers work in integer milli-units
    (one unit of cost_per_km = one milli-unit per meter)."""

    key: str
    start_location_index: int
    # None: open-ended route, the vehicle stops at its last visit.
    end_location_index: int | None
    capacity: tuple[int, ...] = ()
    skills: frozenset[str] = frozenset()
    shift_start_seconds: int = 0
    shift_end_seconds: int = 86_400
    max_duration_seconds: int | None = None
    break_: Break | None = None
    fixed_cost: float = 0.0
    cost_per_km: float = 1.0
    cost_per_hour: float = 0.0
    profile: str = "car"  # which duration matrix of the Matrix applies


@dataclass(frozen=True)
class HubLink:
    """Cross-vehicle precedence at a hub: the route that delivers
    ``delivery_job_key`` (a delivery-only job, loaded at its vehicle's start = the
    hub) may leave its start only ``handling_seconds`` after the route that picks
    up ``pickup_job_key`` (a pickup-only job, unloaded at its vehicle's end = the
    hub) has arrived there."""

    pickup_job_key: str
    delivery_job_key: str
    handling_seconds: int = 0


@dataclass(frozen=True)
class Matrix:
    """Travel between locations, indexed like Problem.locations. Asymmetric is
    fine. ``duration_seconds`` has one matrix per vehicle profile."""

    distance_meters: tuple[tuple[int, ...], ...]
    duration_seconds: dict[str, tuple[tuple[int, ...], ...]] = field(
        default_factory=dict, hash=False, compare=False
    )

    def durations_for(self, profile: str) -> tuple[tuple[int, ...], ...]:
        return self.duration_seconds[profile]


@dataclass(frozen=True)
class Problem:
    locations: tuple[Location, ...]
    jobs: tuple[Job, ...]
    vehicles: tuple[Vehicle, ...]
    matrix: Matrix
    capacity_dimensions: tuple[str, ...] = ()  # e.g. ("grams", "cm3", "parcels")
    hub_links: tuple[HubLink, ...] = ()

    def job_by_key(self) -> dict[str, Job]:
        return {job.key: job for job in self.jobs}


@dataclass(frozen=True)
class StopRef:
    """Names one visit of a job: ``kind`` is "pickup" or "delivery"."""

    job_key: str
    kind: str


@dataclass(frozen=True)
class WarmStart:
    """Routes to start the search from, per vehicle key. The first
    ``fixed_stop_counts[vehicle]`` stops of a route are done (or committed) and
    stay where they are, on that vehicle, in that order."""

    routes: dict[str, tuple[StopRef, ...]] = field(hash=False)
    fixed_stop_counts: dict[str, int] = field(default_factory=dict, hash=False)


def validate_problem(problem: Problem) -> list[str]:
    """Shape errors that would make any solve meaningless (empty list when fine)."""
    errors: list[str] = []
    n = len(problem.locations)
    dims = len(problem.capacity_dimensions)
    if len(problem.matrix.distance_meters) != n:
        errors.append(f"distance matrix has {len(problem.matrix.distance_meters)} rows, {n} locations")
    for vehicle in problem.vehicles:
        if vehicle.profile not in problem.matrix.duration_seconds:
            errors.append(f"vehicle {vehicle.key}: no duration matrix for profile {vehicle.profile}")
        if len(vehicle.capacity) != dims:
            errors.append(f"vehicle {vehicle.key}: {len(vehicle.capacity)} capacities, {dims} dimensions")
        for index in (vehicle.start_location_index, vehicle.end_location_index):
            if index is not None and not 0 <= index < n:
                errors.append(f"vehicle {vehicle.key}: location {index} out of range")
        if vehicle.shift_end_seconds < vehicle.shift_start_seconds:
            errors.append(f"vehicle {vehicle.key}: shift ends before it starts")
    keys: set[str] = set()
    for job in problem.jobs:
        if job.key in keys:
            errors.append(f"job {job.key}: duplicate key")
        keys.add(job.key)
        if not job.visits:
            errors.append(f"job {job.key}: neither pickup nor delivery")
        if len(job.demand) != dims:
            errors.append(f"job {job.key}: {len(job.demand)} demands, {dims} dimensions")
        for visit in job.visits:
            if not 0 <= visit.location_index < n:
                errors.append(f"job {job.key}: location {visit.location_index} out of range")
            for window in visit.time_windows:
                if window.end_seconds < window.start_seconds:
                    errors.append(f"job {job.key}: window ends before it starts")
    jobs = problem.job_by_key()
    for link in problem.hub_links:
        pickup_job = jobs.get(link.pickup_job_key)
        delivery_job = jobs.get(link.delivery_job_key)
        if pickup_job is None or pickup_job.delivery is not None or pickup_job.pickup is None:
            errors.append(f"hub link: {link.pickup_job_key} is not a pickup-only job")
        if delivery_job is None or delivery_job.pickup is not None or delivery_job.delivery is None:
            errors.append(f"hub link: {link.delivery_job_key} is not a delivery-only job")
    return errors
