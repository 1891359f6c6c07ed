"""Leg planning from the hub network (shipments.planning via shipment_create)."""

import pytest

from shipments.errors import NoReachableHub
from shipments.models import Leg, Location, Shipment, ShipmentEvent
from shipments.states import LegStatus, Mile
from tests import factories

pytestmark = pytest.mark.django_db


def test_different_origin_and_destination_hubs_plan_three_legs(hubs):
    dc, monaco = hubs
    shipment = factories.shipment_make(
        origin=factories.GRASSE, destination=factories.MONACO_CASINO
    ).shipment

    legs = list(shipment.legs.order_by("sequence"))

    assert [leg.mile for leg in legs] == [Mile.FIRST, Mile.MIDDLE, Mile.LAST]
    assert (legs[0].from_hub, legs[0].to_hub) == (None, dc)
    assert (legs[1].from_hub, legs[1].to_hub) == (dc, monaco)
    assert (legs[2].from_hub, legs[2].to_hub) == (monaco, None)
    assert legs[0].from_location == shipment.origin
    assert legs[2].to_location == shipment.destination
    # each leg depends on the one before it
    assert [leg.depends_on_id for leg in legs] == [None, legs[0].pk, legs[1].pk]
    assert all(leg.status == LegStatus.PLANNED for leg in legs)
    # planned times run forward along the chain
    assert legs[0].planned_arrival <= legs[1].planned_departure
    assert legs[1].planned_arrival <= legs[2].planned_departure
    assert shipment.eta == legs[2].planned_arrival


def test_middle_mile_departs_at_a_hub_cutoff(hubs):
    dc, _ = hubs
    shipment = factories.shipment_make().shipment
    middle = shipment.legs.get(mile=Mile.MIDDLE)

    from django.utils import timezone

    local = timezone.localtime(middle.planned_departure)
    assert local.strftime("%H:%M") in dc.cutoff_times


def test_same_hub_at_both_ends_skips_the_middle_leg(hubs):
    dc, _ = hubs
    shipment = factories.shipment_make(
        origin=factories.GRASSE, destination=factories.NICE_CENTER
    ).shipment

    legs = list(shipment.legs.order_by("sequence"))

    assert [leg.mile for leg in legs] == [Mile.FIRST, Mile.LAST]
    assert legs[0].to_hub == dc
    assert legs[1].from_hub == dc


def test_a_return_plans_the_chain_in_reverse(hubs):
    dc, monaco = hubs
    original = factories.shipment_make(
        origin=factories.GRASSE, destination=factories.MONACO_CASINO
    ).shipment

    returned = factories.shipment_make(
        origin=factories.MONACO_CASINO,
        destination=factories.GRASSE,
        is_return=True,
        original_shipment=original,
    ).shipment

    forward = [
        (leg.from_hub_id, leg.to_hub_id) for leg in original.legs.order_by("sequence")
    ]
    backward = [
        (leg.from_hub_id, leg.to_hub_id) for leg in returned.legs.order_by("sequence")
    ]
    assert backward == [(b, a) for a, b in reversed(forward)]
    assert [leg.mile for leg in returned.legs.order_by("sequence")] == [
        Mile.RETURN,
        Mile.MIDDLE,
        Mile.RETURN,
    ]
    assert returned.is_return
    assert returned.original_shipment == original


def test_an_origin_with_no_reachable_hub_is_refused_and_nothing_is_saved(hubs):
    counts = (
        Shipment.objects.count(),
        Leg.objects.count(),
        Location.objects.count(),
        ShipmentEvent.objects.count(),
    )

    with pytest.raises(NoReachableHub) as raised:
        factories.shipment_make(origin=factories.PARIS)

    assert raised.value.field == "origin"
    assert counts == (
        Shipment.objects.count(),
        Leg.objects.count(),
        Location.objects.count(),
        ShipmentEvent.objects.count(),
    )


def test_an_unreachable_origin_through_the_api_is_a_422_naming_the_field(
    hubs, dispatcher_client
):
    shipper = factories.party_make()
    body = {
        "reference": "PARIS-1",
        "shipper": shipper.pk,
        "consignee": {"name": "Jean"},
        "origin": {
            "address": "Paris",
            "latitude": factories.PARIS[0],
            "longitude": factories.PARIS[1],
        },
        "destination": {"address": "Monaco", "latitude": 43.7396, "longitude": 7.4276},
        "parcels": [{"weight_kg": "1.0"}],
    }

    from shipments.models import Party

    parties_before = Party.objects.count()

    response = dispatcher_client.post("/api/v1/shipments/", body, format="json")

    assert response.status_code == 422  # well formed; no hub serves it
    assert response.json()["code"] == "no_reachable_hub"
    assert "origin" in response.json()
    assert not Shipment.objects.filter(reference="PARIS-1").exists()
    assert Party.objects.count() == parties_before  # no orphan consignee


def test_replanning_after_the_first_mile_starts_from_the_hub_reached(hubs, dispatcher):
    from shipments.services import leg_transition, shipment_replan

    dc, monaco = hubs
    shipment = factories.shipment_make(
        origin=factories.GRASSE, destination=factories.MONACO_CASINO
    ).shipment
    first = shipment.legs.get(mile=Mile.FIRST)
    for to in (LegStatus.ASSIGNED, LegStatus.IN_TRANSIT, LegStatus.COMPLETED):
        leg_transition(leg_id=first.pk, to=to, source="system")

    # the customer moves: the new address is served by the DC itself
    shipment_replan(
        shipment_id=shipment.pk,
        actor=dispatcher,
        destination={
            "address": "Nice",
            "latitude": factories.NICE_CENTER[0],
            "longitude": factories.NICE_CENTER[1],
        },
    )

    open_legs = list(
        shipment.legs.exclude(status__in=[LegStatus.CANCELLED, LegStatus.COMPLETED])
    )
    assert [(leg.mile, leg.from_hub) for leg in open_legs] == [(Mile.LAST, dc)]
    assert shipment.legs.filter(status=LegStatus.CANCELLED).count() == 2
    assert shipment.events.filter(type="shipment.replanned").count() == 1


def test_replanning_is_refused_while_a_leg_is_under_way(hubs, dispatcher_client):
    from shipments.services import leg_transition

    shipment = factories.shipment_make().shipment
    first = shipment.legs.get(mile=Mile.FIRST)
    leg_transition(leg_id=first.pk, to=LegStatus.ASSIGNED, source="system")
    leg_transition(leg_id=first.pk, to=LegStatus.IN_TRANSIT, source="system")

    response = dispatcher_client.post(
        f"/api/v1/shipments/{shipment.pk}/replan/", {}, format="json"
    )

    assert response.status_code == 409
    assert shipment.legs.filter(status=LegStatus.CANCELLED).count() == 0
