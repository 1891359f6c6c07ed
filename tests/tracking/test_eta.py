"""The ETA engine and delay propagation on synthetic routes with known travel times."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from routing.models import RouteStop
from shipments.models import Shipment, ShipmentEvent
from shipments.services import leg_transition
from tests import factories
from tests.tracking.builders import (
    chain_plan,
    fixed_travel,
    legs_of,
    local_at,
    position_set,
    route_make,
)
from tracking.eta import StopInput, eta_route_refresh, stop_etas
from tracking.models import (
    DeliveryException,
    EtaRecord,
    ExceptionType,
    LegForecast,
    RouteForecast,
)

pytestmark = pytest.mark.django_db

HALF_HOUR = 1800.0
SERVICE = 120


def test_stop_etas_walks_travel_waits_for_windows_and_adds_service():
    start = local_at(1, 8)
    stops = [
        StopInput(key=1, point=(1.0, 1.0), service_seconds=60),
        StopInput(key=2, point=(2.0, 2.0), service_seconds=60, window_start=local_at(1, 10)),
        StopInput(key=3, point=(3.0, 3.0), service_seconds=60),
    ]
    etas, leave = stop_etas(start_at=start, start_point=(0.0, 0.0), stops=stops, travel=fixed_travel(600))
    assert etas == [local_at(1, 8, 10), local_at(1, 10), local_at(1, 10, 11)]
    assert leave == local_at(1, 10, 12)

    slower, _ = stop_etas(
        start_at=start, start_point=(0.0, 0.0), stops=stops[:1], travel=fixed_travel(600), pace_factor=1.5
    )
    assert slower == [local_at(1, 8, 15)]


@pytest.fixture
def first_mile(hubs):
    """Two shipments Grasse → Monaco; their first legs on one first-mile route from
    nce-dc (cut-offs 12:00 and 20:00, 30 min handling). Plan: route 08:00, at the
    hub 09:00; line-haul 12:00 → 13:00; last mile 14:00 → 15:00; promised 16:00."""
    dc, monaco = hubs
    driver = factories.driver_make(dc)
    shipments = [factories.shipment_make(origin=o).shipment for o in (factories.GRASSE, factories.NICE_CENTER)]
    for shipment in shipments:
        chain_plan(shipment, day=1, first=((8, 0), (9, 0)), middle=((12, 0), (13, 0)),
                   last=((14, 0), (15, 0)), promised=(16, 0))
    shipments = [Shipment.objects.get(pk=s.pk) for s in shipments]
    route = route_make(
        hub=dc,
        mile="first",
        driver=driver,
        planned_start=local_at(1, 8),
        stops=[("pickup", s.origin, [legs_of(s)["first"]]) for s in shipments],
        service_seconds=SERVICE,
    )
    stops = list(route.stops.order_by("sequence"))
    RouteStop.objects.filter(pk=stops[0].pk).update(planned_arrival=local_at(1, 8, 30))
    RouteStop.objects.filter(pk=stops[1].pk).update(planned_arrival=local_at(1, 9, 2))
    return {"dc": dc, "driver": driver, "shipments": shipments, "route": route, "stops": stops}


def _stop_etas(route):
    return list(route.stops.order_by("sequence").values_list("eta", flat=True))


def test_a_late_ping_shifts_every_remaining_stop_by_the_lateness(first_mile):
    route, driver, dc = first_mile["route"], first_mile["driver"], first_mile["dc"]
    travel = fixed_travel(HALF_HOUR)

    on_time = eta_route_refresh(route_id=route.pk, now=local_at(1, 8), travel=travel)
    planned = _stop_etas(route)
    assert planned == [local_at(1, 8, 30), local_at(1, 9, 2)]
    assert on_time.end_eta == local_at(1, 9, 34)
    assert on_time.delay_seconds == 0

    # 09:00: the driver pings from the hub, still not left: one hour late.
    hub_point = (dc.location.latitude, dc.location.longitude)
    position_set(driver, at=local_at(1, 9), lat_lng=hub_point, route=route)
    late = eta_route_refresh(route_id=route.pk, now=local_at(1, 9), travel=travel)

    shifted = _stop_etas(route)
    assert [(b - a).total_seconds() for a, b in zip(planned, shifted, strict=True)] == [3600, 3600]
    assert late.end_eta - on_time.end_eta == timedelta(hours=1)
    assert late.delay_seconds == 3600
    assert RouteForecast.objects.get(route=route).delay_seconds == 3600
    # The first legs end at the hub: they take the route's return to the hub.
    for shipment in first_mile["shipments"]:
        assert legs_of(shipment)["first"].eta == local_at(1, 10, 34)
    # History: the plan-time estimate and the late one, per stop.
    for stop in first_mile["stops"]:
        assert EtaRecord.objects.filter(stop=stop).count() == 2


def test_a_ping_on_the_way_counts_only_the_remaining_travel(first_mile):
    route, driver = first_mile["route"], first_mile["driver"]
    stop1 = first_mile["stops"][0]
    position_set(driver, at=local_at(1, 8, 20), lat_lng=(stop1.location.latitude, stop1.location.longitude), route=route)
    eta_route_refresh(route_id=route.pk, now=local_at(1, 8, 20), travel=fixed_travel(HALF_HOUR))
    assert _stop_etas(route) == [local_at(1, 8, 20), local_at(1, 8, 52)]


def test_first_mile_delay_past_the_cutoff_moves_the_line_haul_and_raises_one_exception(first_mile):
    route, driver, dc = first_mile["route"], first_mile["driver"], first_mile["dc"]
    a, b = first_mile["shipments"]
    travel = fixed_travel(HALF_HOUR)
    hub_point = (dc.location.latitude, dc.location.longitude)

    # 10:40, still at the hub: back at 12:14, ready 12:44, after the 12:00 cut-off.
    position_set(driver, at=local_at(1, 10, 40), lat_lng=hub_point, route=route)
    eta_route_refresh(route_id=route.pk, now=local_at(1, 10, 40), travel=travel)

    for shipment in (a, b):
        legs = legs_of(shipment)
        middle = LegForecast.objects.get(leg=legs["middle"])
        assert middle.missed_cutoff is True
        assert middle.expected_departure == local_at(1, 20)  # the next departure
        assert legs["middle"].eta == local_at(1, 21)
        # Ready at Monaco 21:30; the last mile shifts by the same 7.5 h.
        assert legs["last"].eta == local_at(1, 22, 30)
        shipment.refresh_from_db()
        assert shipment.is_at_risk is True
        assert shipment.eta == local_at(1, 22, 30)
    exceptions = DeliveryException.objects.exclude(status="resolved")
    assert exceptions.count() == 1
    exception = exceptions.get()
    assert exception.type == ExceptionType.MISSED_CUTOFF
    assert set(exception.shipments.values_list("pk", flat=True)) == {a.pk, b.pk}
    assert exception.severity == "critical"  # 6.5 h past the promise
    assert "20:00" in exception.suggested_action
    assert ShipmentEvent.objects.filter(type="exception.raised", shipment__in=[a, b]).count() == 2
    assert ShipmentEvent.objects.filter(type="shipment.at_risk", shipment__in=[a, b]).count() == 2

    # A second late estimate updates the same exception: still one.
    eta_route_refresh(route_id=route.pk, now=local_at(1, 10, 45), travel=travel)
    assert DeliveryException.objects.exclude(status="resolved").count() == 1
    assert ShipmentEvent.objects.filter(type="exception.raised").count() == 2

    # Recovery: A was picked up and the driver is at B at 10:45; back at the hub
    # 11:17, ready 11:47, before the cut-off: the promise holds again.
    stop1, stop2 = first_mile["stops"]
    leg_transition(leg_id=legs_of(a)["first"].pk, to="in_transit", source="driver",
                   occurred_at=local_at(1, 10, 30))
    RouteStop.objects.filter(pk=stop1.pk).update(
        status="completed", actual_arrival=local_at(1, 10, 25), actual_departure=local_at(1, 10, 30)
    )
    position_set(driver, at=local_at(1, 10, 45), lat_lng=(stop2.location.latitude, stop2.location.longitude), route=route)
    eta_route_refresh(route_id=route.pk, now=local_at(1, 10, 45), travel=travel)

    exception.refresh_from_db()
    assert exception.status == "resolved"
    assert exception.resolution == "recovered"
    assert exception.shipments.count() == 0
    for shipment in (a, b):
        shipment.refresh_from_db()
        assert shipment.is_at_risk is False
        legs = legs_of(shipment)
        assert LegForecast.objects.get(leg=legs["middle"]).missed_cutoff is False
        assert legs["middle"].eta == local_at(1, 13)
        assert legs["last"].eta == local_at(1, 15)
    assert ShipmentEvent.objects.filter(type="shipment.recovered").count() == 2
    assert ShipmentEvent.objects.filter(type="exception.cleared").count() == 2


def test_a_small_delay_that_still_makes_the_cutoff_raises_nothing(first_mile):
    route, driver, dc = first_mile["route"], first_mile["driver"], first_mile["dc"]
    position_set(driver, at=local_at(1, 9), lat_lng=(dc.location.latitude, dc.location.longitude), route=route)
    eta_route_refresh(route_id=route.pk, now=local_at(1, 9), travel=fixed_travel(HALF_HOUR))
    # Back 10:34, ready 11:04 < 12:00: the line-haul and the promise hold.
    assert not DeliveryException.objects.exists()
    for shipment in first_mile["shipments"]:
        shipment.refresh_from_db()
        assert shipment.is_at_risk is False
        assert legs_of(shipment)["middle"].eta == local_at(1, 13)


def test_late_line_haul_arrival_shifts_the_last_mile_and_raises_late_linehaul(hubs):
    dc, monaco = hubs
    driver = factories.driver_make(dc)
    shipment = factories.shipment_make().shipment
    chain_plan(shipment, day=1, first=((8, 0), (9, 0)), middle=((12, 0), (13, 0)),
               last=((14, 0), (15, 0)), promised=(16, 0))
    legs = legs_of(shipment)
    leg_transition(leg_id=legs["first"].pk, to="assigned", source="system")
    leg_transition(leg_id=legs["first"].pk, to="in_transit", source="system", occurred_at=local_at(1, 8))
    leg_transition(leg_id=legs["first"].pk, to="completed", source="system", occurred_at=local_at(1, 9))
    # The line-haul trip: a route from nce-dc with Monaco's hub stop at the end.
    trip = route_make(
        hub=dc, mile="middle", driver=driver, planned_start=local_at(1, 12),
        stops=[("hub", monaco.location, [legs_of(shipment)["middle"]])],
    )
    RouteStop.objects.filter(route=trip).update(hub=monaco)
    leg_transition(leg_id=legs["middle"].pk, to="in_transit", source="driver", occurred_at=local_at(1, 12))
    # 14:00 on the road, still 2 h from Monaco: arrival 16:00, ready 16:30.
    position_set(driver, at=local_at(1, 14), lat_lng=(43.70, 7.30), route=trip)
    eta_route_refresh(route_id=trip.pk, now=local_at(1, 14), travel=fixed_travel(7200))

    legs = legs_of(shipment)
    assert legs["middle"].eta == local_at(1, 16)
    assert legs["last"].eta == local_at(1, 17, 30)
    shipment.refresh_from_db()
    assert shipment.is_at_risk is True
    exception = DeliveryException.objects.get(status="open")
    assert exception.type == ExceptionType.LATE_LINEHAUL
    assert list(exception.shipments.values_list("pk", flat=True)) == [shipment.pk]


def test_the_sweep_flags_a_silent_driver_and_a_fresh_fix_clears_it(first_mile):
    from routing.models import Route
    from tracking.eta import eta_sweep_run

    route, driver, dc = first_mile["route"], first_mile["driver"], first_mile["dc"]
    Route.objects.filter(pk=route.pk).update(status=Route.Status.IN_PROGRESS, service_date=timezone.localdate())
    position_set(driver, at=timezone.now() - timedelta(minutes=25), lat_lng=(43.70, 7.20), route=route)

    result = eta_sweep_run(now=timezone.now())

    assert result["silent"] == 1
    exception = DeliveryException.objects.get(type=ExceptionType.DRIVER_SILENT)
    assert exception.status == "open" and exception.driver_id == driver.pk
    assert set(exception.shipments.values_list("pk", flat=True)) == {s.pk for s in first_mile["shipments"]}
    eta_sweep_run(now=timezone.now())
    assert DeliveryException.objects.filter(type=ExceptionType.DRIVER_SILENT).count() == 1  # not twice

    position_set(driver, at=timezone.now(), lat_lng=(43.70, 7.20), route=route)
    eta_route_refresh(route_id=route.pk, travel=fixed_travel(HALF_HOUR))
    exception.refresh_from_db()
    assert exception.status == "resolved" and exception.resolution == "recovered"


def test_pace_observed_on_finished_stops_stretches_the_remaining_travel(hubs):
    """Two stops done, each drive took twice the planned 30 min: the rest is
    estimated at twice the travel time too."""
    dc, _ = hubs
    driver = factories.driver_make(dc)
    shipments = [factories.shipment_make(origin=o).shipment for o in
                 (factories.GRASSE, factories.NICE_CENTER, (43.66, 7.15), (43.68, 7.10))]
    route = route_make(hub=dc, mile="first", driver=driver, planned_start=local_at(1, 8),
                       stops=[("pickup", s.origin, [legs_of(s)["first"]]) for s in shipments])
    s1, s2, s3, s4 = route.stops.order_by("sequence")
    RouteStop.objects.filter(pk=s1.pk).update(status="completed", actual_arrival=local_at(1, 9), actual_departure=local_at(1, 9, 2))
    RouteStop.objects.filter(pk=s2.pk).update(status="completed", actual_arrival=local_at(1, 10, 2), actual_departure=local_at(1, 10, 4))
    RouteStop.objects.filter(pk=s3.pk).update(status="completed", actual_arrival=local_at(1, 11, 4), actual_departure=local_at(1, 11, 6))

    result = eta_route_refresh(route_id=route.pk, now=local_at(1, 11, 6), travel=fixed_travel(HALF_HOUR))

    assert result.pace_factor == 2.0
    assert RouteStop.objects.get(pk=s4.pk).eta == local_at(1, 12, 6)
