"""seed_demo ends with today's routes optimized, assigned and published."""

from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from dispatch.demo import _nearest_neighbour_routes, demo_day_dispatch
from dispatch.models import Driver, Vehicle
from dispatch.services import route_assign, route_publish
from routing.models import Route
from shipments.models import Leg
from shipments.states import LegStatus, Mile
from tests import factories
from tests.dispatch import builders

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_the_demo_day_gives_every_driver_published_work():
    from demo.seed import demo_seed

    # The data `make demo` seeds (its seed and size).
    summary = demo_seed(seed=7, password="demo-pass-123", shipments=300)

    day = summary.dispatch
    assert day["published"] > 0
    assert all(job.get("status") == "succeeded" for job in day["jobs"])
    today = timezone.localdate()
    published = Route.objects.filter(service_date=today, status=Route.Status.PUBLISHED)
    assert published.count() == day["published"]
    for route in published:
        # Published means handed over: every leg on it is assigned to that driver.
        assert route.driver_id is not None
        assert route.vehicle_id is not None
        statuses = set(
            Leg.objects.filter(route_stops__route=route).values_list(
                "status", flat=True
            )
        )
        assert statuses == {LegStatus.ASSIGNED}
    drivers_with_work = set(published.values_list("driver_id", flat=True))
    assert drivers_with_work == set(Driver.objects.values_list("pk", flat=True))
    # The phone of any demo driver shows a route at once.
    driver = Driver.objects.order_by("user__username").first()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {driver.user.auth_token.key}")
    response = client.get("/api/v1/driver/route/")
    assert response.status_code == 200
    assert response.json()["status"] == "published"


def test_a_second_run_plans_nothing_twice():
    from demo.seed import demo_seed

    demo_seed(seed=4, password="demo-pass-123", shipments=30)
    routes = Route.objects.count()

    again = demo_day_dispatch(service_date=timezone.localdate())

    assert again["published"] == 0
    assert Route.objects.count() == routes


def test_the_nearest_neighbour_fallback_makes_publishable_routes(hubs):
    hub = hubs[1]
    vans = [factories.vehicle_make(hub) for _ in range(2)]
    shipments = [builders.shipment_at_hub(hub, p) for p in builders.MONACO_POINTS]
    legs = [builders.first_open_leg(s, Mile.LAST) for s in shipments]

    routes = _nearest_neighbour_routes(hub, Mile.LAST, legs, vans, timezone.localdate())

    assert len(routes) == 2
    served = [
        leg.pk for r in routes for stop in r.stops.all() for leg in stop.legs.all()
    ]
    assert sorted(served) == sorted(leg.pk for leg in legs)
    for route, van in zip(routes, vans, strict=True):
        stops = list(route.stops.order_by("sequence"))
        assert stops[0].kind == stops[-1].kind == "hub"
        times = [s.planned_arrival for s in stops]
        assert times == sorted(times)
        driver = factories.driver_make(hub)
        route_assign(route_id=route.pk, driver_id=driver.pk, vehicle_id=van.pk)
        route_publish(route_id=route.pk)
    assert set(Leg.objects.filter(pk__in=served).values_list("status", flat=True)) == {
        "assigned"
    }
    assert Vehicle.objects.count() == 2
