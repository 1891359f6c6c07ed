"""Independent solution checker.

Recomputes everything from the problem and its matrix and compares it with what
a solution claims. It deliberately shares no code with the engines or with
``routing.solver.solution`` (only the dataclass shapes): a bug in how a model is
built or how a route is timed cannot hide itself here.

``check_solution`` returns a list of violations; an empty list means feasible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Cost is a float sum of per-route terms; allow for rounding in the last digits.
COST_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Violation:
    kind: str
    subject: str  # vehicle or job key
    detail: str


def check_solution(problem: Any, solution: Any) -> list[Violation]:
    out: list[Violation] = []

    def bad(kind: str, subject: str, detail: str) -> None:
        out.append(Violation(kind, subject, detail))

    jobs = {job.key: job for job in problem.jobs}
    vehicles = {vehicle.key: vehicle for vehicle in problem.vehicles}
    dist = problem.matrix.distance_meters
    ndims = len(problem.capacity_dimensions)

    # Where each visit is: (job_key, kind) -> (route position, stop position)
    seen: dict[tuple[str, str], tuple[int, int]] = {}
    used_vehicles: set[str] = set()
    route_by_job: dict[str, int] = {}
    for r, route in enumerate(solution.routes):
        vkey = route.vehicle_key
        if vkey not in vehicles:
            bad("unknown_vehicle", vkey, "route for a vehicle not in the problem")
            continue
        if vkey in used_vehicles:
            bad("vehicle_reused", vkey, "vehicle has more than one route")
        used_vehicles.add(vkey)
        for s, stop in enumerate(route.stops):
            job = jobs.get(stop.job_key)
            if job is None:
                bad("unknown_job", stop.job_key, "stop for a job not in the problem")
                continue
            if stop.kind not in ("pickup", "delivery"):
                bad("bad_stop_kind", stop.job_key, f"kind {stop.kind!r}")
                continue
            visit = job.pickup if stop.kind == "pickup" else job.delivery
            if visit is None:
                bad("bad_stop_kind", stop.job_key, f"job has no {stop.kind}")
                continue
            if (stop.job_key, stop.kind) in seen:
                bad("visited_twice", stop.job_key, f"{stop.kind} appears more than once")
            seen[(stop.job_key, stop.kind)] = (r, s)
            if stop.job_key in route_by_job and route_by_job[stop.job_key] != r:
                bad("pair_split", stop.job_key, "pickup and delivery on different vehicles")
            route_by_job[stop.job_key] = r
            if stop.location_index != visit.location_index:
                bad("wrong_location", stop.job_key, f"{stop.location_index} != {visit.location_index}")

    unassigned_keys = [u.job_key for u in solution.unassigned]
    if len(set(unassigned_keys)) != len(unassigned_keys):
        bad("unassigned_twice", ",".join(unassigned_keys), "a job is listed unassigned twice")
    for u in solution.unassigned:
        if not getattr(u, "reason", ""):
            bad("unassigned_without_reason", u.job_key, "no reason given")
    for job in problem.jobs:
        kinds = [k for k, v in (("pickup", job.pickup), ("delivery", job.delivery)) if v is not None]
        present = [k for k in kinds if (job.key, k) in seen]
        if present and len(present) != len(kinds):
            bad("pair_incomplete", job.key, f"only {present} of {kinds} served")
        if len(present) == 2:
            rp, sp = seen[(job.key, "pickup")]
            rd, sd = seen[(job.key, "delivery")]
            if rp == rd and sp > sd:
                bad("delivery_before_pickup", job.key, "delivery precedes pickup")
        if present and job.key in unassigned_keys:
            bad("served_and_unassigned", job.key, "job both served and unassigned")
        if not present and job.key not in unassigned_keys:
            bad("job_lost", job.key, "job neither served nor listed unassigned")
    for key in unassigned_keys:
        if key not in jobs:
            bad("unknown_job", key, "unassigned job not in the problem")

    total_distance = 0
    total_duration = 0
    total_cost = 0.0
    for route in solution.routes:
        vehicle = vehicles.get(route.vehicle_key)
        if vehicle is None or not route.stops:
            if vehicle is not None and not route.stops:
                bad("empty_route", route.vehicle_key, "solution lists an empty route")
            continue
        vkey = vehicle.key
        travel = problem.matrix.duration_seconds[vehicle.profile]
        if route.start_location_index != vehicle.start_location_index:
            bad("wrong_start_depot", vkey, f"{route.start_location_index} != {vehicle.start_location_index}")
        if route.end_location_index != vehicle.end_location_index:
            bad("wrong_end_depot", vkey, f"{route.end_location_index} != {vehicle.end_location_index}")

        # Skills
        for stop in route.stops:
            job = jobs.get(stop.job_key)
            if job is not None and not set(job.required_skills) <= set(vehicle.skills):
                bad("skill_missing", vkey, f"job {job.key} needs {sorted(job.required_skills)}")

        # Loads: what leaves the start is every delivery-only job on the route.
        load = [0] * ndims
        for stop in route.stops:
            job = jobs.get(stop.job_key)
            if job is not None and job.pickup is None:
                for d in range(ndims):
                    load[d] += job.demand[d]
        if tuple(load) != tuple(route.load_at_start):
            bad("load_mismatch", vkey, f"load at start {tuple(route.load_at_start)} != {tuple(load)}")
        for d in range(ndims):
            if load[d] > vehicle.capacity[d]:
                bad("capacity", vkey, f"{problem.capacity_dimensions[d]} at start {load[d]} > {vehicle.capacity[d]}")
        for stop in route.stops:
            job = jobs.get(stop.job_key)
            if job is None:
                continue
            for d in range(ndims):
                load[d] += job.demand[d] if stop.kind == "pickup" else -job.demand[d]
                if load[d] > vehicle.capacity[d]:
                    bad("capacity", vkey, f"{problem.capacity_dimensions[d]} {load[d]} > {vehicle.capacity[d]} after {stop.job_key}")
                if load[d] < 0:
                    bad("negative_load", vkey, f"{problem.capacity_dimensions[d]} {load[d]} after {stop.job_key}")
            if tuple(load) != tuple(stop.load_after):
                bad("load_mismatch", vkey, f"after {stop.job_key}: {tuple(stop.load_after)} != {tuple(load)}")

        # Break: where it sits decides which leg must be long enough to hold it.
        brk = vehicle.break_
        b = route.break_start_seconds
        break_leg = None  # index of the stop whose inbound leg holds the break; len(stops) = way back
        if brk is not None:
            if b is None:
                bad("break_missing", vkey, "vehicle has a break but the route has none")
            else:
                b_end = b + brk.duration_seconds
                if not brk.window_start_seconds <= b <= brk.window_end_seconds:
                    bad("break_window", vkey, f"break at {b} outside [{brk.window_start_seconds}, {brk.window_end_seconds}]")
                if b < vehicle.shift_start_seconds or b_end > vehicle.shift_end_seconds:
                    bad("break_shift", vkey, "break outside the shift")
                for stop in route.stops:
                    if b < stop.departure_seconds and stop.start_seconds < b_end:
                        bad("break_overlaps_service", vkey, f"break overlaps service at {stop.job_key}")
                departures = [route.start_seconds] + [s.departure_seconds for s in route.stops]
                for k, dep in enumerate(departures):
                    nxt = route.stops[k].start_seconds if k < len(route.stops) else route.end_seconds
                    if dep <= b and b_end <= nxt:
                        break_leg = k
                        break
                before_route = b_end <= route.start_seconds
                after_route = b >= route.end_seconds
                if break_leg is None and not (before_route or after_route):
                    bad("break_placement", vkey, f"break at {b} fits no gap of the route")

        # Times
        if route.start_seconds < vehicle.shift_start_seconds:
            bad("shift_start", vkey, f"leaves at {route.start_seconds} before shift {vehicle.shift_start_seconds}")
        position = vehicle.start_location_index
        clock = route.start_seconds
        distance = 0
        for k, stop in enumerate(route.stops):
            job = jobs.get(stop.job_key)
            visit = None if job is None else (job.pickup if stop.kind == "pickup" else job.delivery)
            if visit is None:
                continue
            leg = travel[position][visit.location_index]
            distance += dist[position][visit.location_index]
            needed = leg + (brk.duration_seconds if break_leg == k and brk is not None else 0)
            if stop.arrival_seconds < clock + leg:
                bad("arrival_too_early", vkey, f"{stop.job_key}: arrives {stop.arrival_seconds} < {clock + leg}")
            if stop.start_seconds < stop.arrival_seconds:
                bad("service_before_arrival", vkey, f"{stop.job_key}")
            if stop.start_seconds - clock < needed:
                bad("travel_too_short", vkey, f"{stop.job_key}: {stop.start_seconds - clock} < {needed}")
            if stop.waiting_seconds != stop.start_seconds - stop.arrival_seconds:
                bad("waiting_mismatch", vkey, f"{stop.job_key}")
            windows = list(visit.time_windows) or [
                type("W", (), {"start_seconds": vehicle.shift_start_seconds, "end_seconds": vehicle.shift_end_seconds})()
            ]
            if not any(w.start_seconds <= stop.start_seconds <= w.end_seconds for w in windows):
                bad("time_window", vkey, f"{stop.job_key} {stop.kind} starts at {stop.start_seconds}, outside its windows")
            if stop.departure_seconds != stop.start_seconds + visit.service_seconds:
                bad("service_time", vkey, f"{stop.job_key}: departure != start + service")
            clock = stop.departure_seconds
            position = visit.location_index
        if vehicle.end_location_index is None:
            needed_end = clock
        else:
            leg = travel[position][vehicle.end_location_index]
            distance += dist[position][vehicle.end_location_index]
            needed_end = clock + leg + (brk.duration_seconds if break_leg == len(route.stops) and brk is not None else 0)
        if route.end_seconds < needed_end:
            bad("end_too_early", vkey, f"ends {route.end_seconds} < {needed_end}")
        if route.end_seconds > vehicle.shift_end_seconds:
            bad("shift_end", vkey, f"ends {route.end_seconds} after shift {vehicle.shift_end_seconds}")
        duration = route.end_seconds - route.start_seconds
        if vehicle.max_duration_seconds is not None and duration > vehicle.max_duration_seconds:
            bad("max_duration", vkey, f"{duration} s > {vehicle.max_duration_seconds} s")
        if duration != route.duration_seconds:
            bad("duration_mismatch", vkey, f"reported {route.duration_seconds} != {duration}")
        if distance != route.distance_meters:
            bad("distance_mismatch", vkey, f"reported {route.distance_meters} != {distance}")
        cost = vehicle.fixed_cost + distance / 1000 * vehicle.cost_per_km + duration / 3600 * vehicle.cost_per_hour
        if abs(cost - route.cost) > COST_TOLERANCE * max(1.0, abs(cost)):
            bad("cost_mismatch", vkey, f"reported {route.cost} != {cost}")
        total_distance += distance
        total_duration += duration
        total_cost += cost

    if total_distance != solution.distance_meters:
        bad("total_distance_mismatch", "solution", f"{solution.distance_meters} != {total_distance}")
    if total_duration != solution.duration_seconds:
        bad("total_duration_mismatch", "solution", f"{solution.duration_seconds} != {total_duration}")
    if abs(total_cost - solution.cost) > COST_TOLERANCE * max(1.0, abs(total_cost)):
        bad("total_cost_mismatch", "solution", f"{solution.cost} != {total_cost}")

    # Hub synchronisation: a linked delivery's route leaves after the feeder arrives.
    route_times = {
        r: (route.start_seconds, route.end_seconds, route.vehicle_key)
        for r, route in enumerate(solution.routes)
    }
    for link in problem.hub_links:
        feeder = route_by_job.get(link.pickup_job_key)
        fed = route_by_job.get(link.delivery_job_key)
        if fed is None:
            continue
        if feeder is None:
            bad("hub_feeder_missing", link.delivery_job_key, f"delivered but {link.pickup_job_key} was never picked up")
            continue
        feeder_end = route_times[feeder][1]
        fed_start = route_times[fed][0]
        if fed_start < feeder_end + link.handling_seconds:
            bad(
                "hub_sync",
                link.delivery_job_key,
                f"route {route_times[fed][2]} leaves at {fed_start}, parcel arrives {feeder_end} + {link.handling_seconds} s handling",
            )
    return out
