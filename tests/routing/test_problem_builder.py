"""From the database to the solver's problem: scope, windows, units, links."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from routing import problem_builder
from routing.problem_builder import (
    CAPACITY_DIMENSIONS,
    DELIVERY,
    PICKUP,
    REASON_WINDOW_OUTSIDE_DAY,
    hub_opening_seconds,
    job_key,
    leg_list_in_scope,
    problem_build,
)
from routing.solver.problem import validate_problem
from shipments.states import LegStatus, Mile
from tests import factories
from tests.routing.test_jobs_support import (
    at,
    closed_day,
    hub_close_on_sundays,
    first_mile_day,
    last_mile_day,
    mile_legs,
    return_make,
    service_day,
)

pytestmark = pytest.mark.django_db


def build(day, mile, legs=None, **kwargs):
    legs = (
        legs
        if legs is not None
        else list(leg_list_in_scope(service_date=day.day, hub=day.hub, mile=mile))
    )
    return problem_build(
        service_date=day.day,
        hub=day.hub,
        mile=mile,
        vehicles=day.vehicles,
        legs=legs,
        **kwargs,
    )


def test_last_mile_plans_deliveries_from_the_hub_in_the_customers_windows(hubs):
    day = last_mile_day(hubs, count=4, window=(9, 13))

    built = build(day, Mile.LAST)

    assert validate_problem(built.problem) == []
    assert {leg.pk for leg in built.legs.values()} == {
        leg.pk for leg in day.legs(Mile.LAST)
    }
    assert set(built.kinds.values()) == {DELIVERY}
    for job in built.problem.jobs:
        assert job.pickup is None
        (window,) = job.delivery.time_windows
        assert (window.start_seconds, window.end_seconds) == (9 * 3600, 13 * 3600)
        assert job.delivery.location_index != 0  # 0 is the hub
    assert built.locations[0] == day.hub.location
    assert built.at(9 * 3600) == at(day.day, 9)


def test_first_mile_plans_pickups_at_producers_ending_at_the_hub(hubs):
    day = first_mile_day(hubs, count=3)

    built = build(day, Mile.FIRST)

    assert {leg.pk for leg in built.legs.values()} == {
        leg.pk for leg in day.legs(Mile.FIRST)
    }
    for job in built.problem.jobs:
        assert job.delivery is None
        assert job.pickup is not None
        (window,) = job.pickup.time_windows
        assert (window.start_seconds, window.end_seconds) == (8 * 3600, 16 * 3600)
    for vehicle in built.problem.vehicles:
        assert vehicle.start_location_index == vehicle.end_location_index == 0


def test_last_mile_collects_returns_as_pickups_on_the_same_tours(hubs):
    day = last_mile_day(hubs, count=2)
    parcel_back = return_make(
        customer=factories.MONACO_CASINO, shipper=factories.NICE_CENTER, day=day.day
    )
    collect = mile_legs(parcel_back)[Mile.RETURN][0]
    assert collect.to_hub_id == day.hub.pk

    built = build(day, Mile.LAST)

    assert built.kinds[job_key(collect.pk)] == PICKUP
    assert built.problem.job_by_key()[job_key(collect.pk)].pickup is not None
    assert list(built.kinds.values()).count(DELIVERY) == 2


def test_return_collected_and_sent_back_the_same_day_is_linked_at_the_hub(hubs):
    day = service_day()
    monaco = hubs[1]
    shipment = return_make(
        customer=factories.MONACO_CASINO, shipper=(43.7350, 7.4200), day=day
    )
    collect, send_back = mile_legs(shipment)[Mile.RETURN]
    vehicle = factories.vehicle_make(monaco)

    built = problem_build(
        service_date=day,
        hub=monaco,
        mile=Mile.RETURN,
        vehicles=[vehicle],
        legs=list(leg_list_in_scope(service_date=day, hub=monaco, mile=Mile.RETURN)),
    )

    assert built.kinds == {job_key(collect.pk): PICKUP, job_key(send_back.pk): DELIVERY}
    (link,) = built.problem.hub_links
    assert link.pickup_job_key == job_key(collect.pk)
    assert link.delivery_job_key == job_key(send_back.pk)
    assert link.handling_seconds == monaco.handling_minutes * 60


def test_scope_holds_only_open_legs_of_the_day(hubs):
    day = last_mile_day(hubs, count=3)
    tomorrow = last_mile_day(hubs, count=1, day=day.day + timedelta(days=1), seed=99)
    taken = day.legs(Mile.LAST)[0]
    taken.status = LegStatus.ASSIGNED  # already on a published route
    taken.save(update_fields=["status"])

    in_scope = set(leg_list_in_scope(service_date=day.day, hub=day.hub, mile=Mile.LAST))

    assert taken not in in_scope
    assert set(tomorrow.legs(Mile.LAST)).isdisjoint(in_scope)
    assert in_scope == set(day.legs(Mile.LAST)[1:])
    assert not in_scope & set(day.legs(Mile.FIRST))


def test_demand_and_capacity_are_integers_in_grams_cubic_centimetres_and_parcels(hubs):
    day = last_mile_day(hubs, count=1, weight_kg="2.5005")
    vehicle = day.vehicles[0]

    built = build(day, Mile.LAST)

    assert built.problem.capacity_dimensions == CAPACITY_DIMENSIONS
    (job,) = built.problem.jobs
    assert job.demand == (2501, 0, 1)  # rounded up: never under-reserve a van
    solver_vehicle = built.problem.vehicles[0]
    assert solver_vehicle.capacity == (
        int(vehicle.capacity_kg * 1000),
        int(vehicle.capacity_m3 * 1_000_000),
        vehicle.capacity_parcels,
    )
    assert solver_vehicle.profile == "van"


def test_objective_weights_scale_the_vehicle_costs(hubs):
    day = last_mile_day(hubs, count=1)
    vehicle = day.vehicles[0]
    vehicle.fixed_cost, vehicle.cost_per_km, vehicle.cost_per_hour = (
        Decimal("40"),
        Decimal("0.5"),
        Decimal("25"),
    )

    built = build(day, Mile.LAST, objective_weights={"distance": 2, "vehicles": 0})

    solver_vehicle = built.problem.vehicles[0]
    assert solver_vehicle.cost_per_km == 1.0
    assert solver_vehicle.fixed_cost == 0.0
    assert solver_vehicle.cost_per_hour == 25.0


def test_shift_is_the_hubs_opening_hours_of_that_day(hubs):
    day = last_mile_day(hubs, count=1)
    day.hub.opening_hours = {
        key: ["07:30", "19:00"] for key in ("mon", "tue", "wed", "thu", "fri", "sat")
    }

    built = build(day, Mile.LAST)

    vehicle = built.problem.vehicles[0]
    assert (vehicle.shift_start_seconds, vehicle.shift_end_seconds) == (27_000, 68_400)


def test_a_hub_is_closed_on_a_day_missing_from_its_hours(hubs):
    dc = hub_close_on_sundays(hubs[0])
    hub_close_on_sundays(hubs[1])
    assert hub_opening_seconds(dc, closed_day()) is None
    dc.opening_hours = {}
    assert hub_opening_seconds(dc, closed_day()) == (6 * 3600, 22 * 3600)

    with pytest.raises(ValueError, match="closed"):
        problem_build(
            service_date=closed_day(), hub=hubs[1], mile=Mile.LAST, vehicles=[], legs=[]
        )


def test_a_window_wholly_before_the_day_is_left_out_with_its_reason(hubs):
    day = last_mile_day(hubs, count=2)
    late = day.shipments[0]
    late.delivery_window_start = at(day.day - timedelta(days=1), 9)
    late.delivery_window_end = at(day.day - timedelta(days=1), 12)
    late.save(update_fields=["delivery_window_start", "delivery_window_end"])

    built = build(day, Mile.LAST, legs=day.legs(Mile.LAST))

    late_leg = mile_legs(late)[Mile.LAST][0]
    assert job_key(late_leg.pk) not in built.problem.job_by_key()
    assert built.excluded == [
        {
            "leg_id": late_leg.pk,
            "shipment_id": late.pk,
            "reason": REASON_WINDOW_OUTSIDE_DAY,
        }
    ]
    assert len(built.problem.jobs) == 1


def test_matrix_comes_from_osrm_when_configured_and_falls_back_when_it_is_down(
    hubs, settings
):
    day = last_mile_day(hubs, count=2)
    settings.OSRM_BASE_URL = "http://127.0.0.1:9"  # discard port: nothing answers

    built = build(day, Mile.LAST)

    assert built.matrix_source.startswith("haversine (OSRM unavailable")
    size = len(built.problem.locations)
    assert len(built.problem.matrix.distance_meters) == size
    assert built.problem.matrix.distance_meters[0][1] > 0


def test_same_door_twice_is_one_location(hubs):
    day = last_mile_day(hubs, count=2)
    legs = day.legs(Mile.LAST)
    legs[1].to_location = legs[0].to_location
    legs[1].save(update_fields=["to_location"])

    built = build(day, Mile.LAST, legs=legs)

    assert len(built.problem.locations) == 2  # the hub and the one door
    indices = {job.delivery.location_index for job in built.problem.jobs}
    assert indices == {1}


def test_keys_round_trip():
    assert problem_builder.key_id(problem_builder.job_key(42)) == 42
    assert problem_builder.key_id(problem_builder.vehicle_key(7)) == 7
