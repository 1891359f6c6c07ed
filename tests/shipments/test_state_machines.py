"""Every allowed and forbidden transition of the leg and shipment state machines."""

import threading

import pytest
from django.db import connection, connections

from shipments.models import Leg, ShipmentEvent
from shipments.services import leg_transition, shipment_cancel
from shipments.states import (
    LEG_TRANSITIONS,
    SHIPMENT_TRANSITIONS,
    InvalidTransition,
    LegStatus,
    ShipmentStatus,
    check_shipment_transition,
    derive_shipment_status,
)
from tests import factories

ALL_LEG_PAIRS = [(a, b) for a in LegStatus.values for b in LegStatus.values if a != b]
ALL_SHIPMENT_PAIRS = [
    (a, b) for a in ShipmentStatus.values for b in ShipmentStatus.values if a != b
]


def _leg_in_state(status: str) -> Leg:
    """A first-mile leg walked to ``status`` through allowed moves only."""
    shipment = factories.shipment_make().shipment
    leg = shipment.legs.get(sequence=1)
    path = {
        LegStatus.PLANNED: [],
        LegStatus.ASSIGNED: [LegStatus.ASSIGNED],
        LegStatus.IN_TRANSIT: [LegStatus.ASSIGNED, LegStatus.IN_TRANSIT],
        LegStatus.ARRIVED: [
            LegStatus.ASSIGNED,
            LegStatus.IN_TRANSIT,
            LegStatus.ARRIVED,
        ],
        LegStatus.COMPLETED: [
            LegStatus.ASSIGNED,
            LegStatus.IN_TRANSIT,
            LegStatus.COMPLETED,
        ],
        LegStatus.FAILED: [LegStatus.ASSIGNED, LegStatus.FAILED],
        LegStatus.CANCELLED: [LegStatus.CANCELLED],
    }[status]
    for step in path:
        leg_transition(leg_id=leg.pk, to=step, source="system")
    leg.refresh_from_db()
    assert leg.status == status
    return leg


@pytest.mark.django_db
@pytest.mark.parametrize(("current", "target"), ALL_LEG_PAIRS)
def test_leg_transition_table(hubs, current, target):
    leg = _leg_in_state(current)
    events_before = ShipmentEvent.objects.filter(shipment=leg.shipment).count()

    if target in LEG_TRANSITIONS[current]:
        leg_transition(leg_id=leg.pk, to=target, source="system")
        leg.refresh_from_db()
        assert leg.status == target
        assert (
            ShipmentEvent.objects.filter(shipment=leg.shipment).count()
            == events_before + 1
        )
    else:
        with pytest.raises(InvalidTransition) as raised:
            leg_transition(leg_id=leg.pk, to=target, source="system")
        assert raised.value.current == current
        assert raised.value.allowed == sorted(LEG_TRANSITIONS[current])
        leg.refresh_from_db()
        assert leg.status == current
        assert (
            ShipmentEvent.objects.filter(shipment=leg.shipment).count() == events_before
        )


@pytest.mark.parametrize(("current", "target"), ALL_SHIPMENT_PAIRS)
def test_shipment_transition_table(current, target):
    if target in SHIPMENT_TRANSITIONS[current]:
        check_shipment_transition(current, target)
    else:
        with pytest.raises(InvalidTransition):
            check_shipment_transition(current, target)


@pytest.mark.parametrize(
    ("legs", "is_return", "expected"),
    [
        (
            [("first", "planned"), ("middle", "planned"), ("last", "planned")],
            False,
            "planned",
        ),
        (
            [("first", "in_transit"), ("middle", "planned"), ("last", "planned")],
            False,
            "picked_up",
        ),
        (
            [("first", "completed"), ("middle", "assigned"), ("last", "planned")],
            False,
            "at_hub",
        ),
        (
            [("first", "completed"), ("middle", "in_transit"), ("last", "planned")],
            False,
            "in_transit",
        ),
        (
            [("first", "completed"), ("middle", "completed"), ("last", "in_transit")],
            False,
            "out_for_delivery",
        ),
        ([("first", "completed"), ("last", "failed")], False, "delivery_failed"),
        ([("first", "completed"), ("last", "completed")], False, "delivered"),
        ([("return", "in_transit"), ("return", "planned")], True, "returning"),
        ([("return", "completed"), ("return", "completed")], True, "returned"),
        ([("first", "cancelled"), ("last", "cancelled")], False, "cancelled"),
    ],
)
def test_shipment_status_is_derived_from_its_legs(legs, is_return, expected):
    assert derive_shipment_status(is_return=is_return, legs=legs) == expected


@pytest.mark.django_db
def test_the_whole_forward_journey_moves_the_shipment_status(hubs):
    shipment = factories.shipment_make().shipment
    seen = []
    for leg in shipment.legs.order_by("sequence"):
        for to in (
            LegStatus.ASSIGNED,
            LegStatus.IN_TRANSIT,
            LegStatus.ARRIVED,
            LegStatus.COMPLETED,
        ):
            leg_transition(leg_id=leg.pk, to=to, source="system")
            shipment.refresh_from_db()
            if not seen or seen[-1] != shipment.status:
                seen.append(shipment.status)

    assert seen == [
        "planned",
        "picked_up",
        "at_hub",
        "in_transit",
        "at_hub",
        "out_for_delivery",
        "delivered",
    ]
    assert shipment.completed_at is not None
    # one event per change: created + 4 moves × 3 legs
    assert shipment.events.count() == 1 + 12


@pytest.mark.django_db
def test_a_delivered_shipment_cannot_be_cancelled(hubs):
    shipment = factories.shipment_make(destination=factories.NICE_CENTER).shipment
    for leg in shipment.legs.order_by("sequence"):
        for to in (LegStatus.ASSIGNED, LegStatus.IN_TRANSIT, LegStatus.COMPLETED):
            leg_transition(leg_id=leg.pk, to=to, source="system")

    with pytest.raises(InvalidTransition) as raised:
        shipment_cancel(shipment_id=shipment.pk)

    assert raised.value.current == "delivered"


@pytest.mark.django_db
def test_events_are_append_only_in_the_database(hubs):
    event = factories.shipment_make().shipment.events.get()

    from django.db import DatabaseError, transaction

    with (
        pytest.raises(DatabaseError),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "UPDATE shipments_shipmentevent SET type = 'forged' WHERE id = %s",
            [event.pk],
        )
    with (
        pytest.raises(DatabaseError),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM shipments_shipmentevent WHERE id = %s", [event.pk])
    event.refresh_from_db()
    assert event.type == "shipment.created"


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_transitions_on_one_leg_exactly_one_wins(hubs):
    leg = _leg_in_state(LegStatus.ASSIGNED)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def depart(target):
        try:
            barrier.wait(timeout=10)
            leg_transition(leg_id=leg.pk, to=target, source="driver")
            outcomes.append(f"won:{target}")
        except InvalidTransition as exc:
            outcomes.append(f"refused:{exc.current}")
        finally:
            connections.close_all()

    # one thread departs with the parcel, the other cancels it: one move only
    threads = [
        threading.Thread(target=depart, args=(LegStatus.IN_TRANSIT,)),
        threading.Thread(target=depart, args=(LegStatus.CANCELLED,)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(o.split(":")[0] for o in outcomes) == ["refused", "won"]
    leg.refresh_from_db()
    winner = next(o for o in outcomes if o.startswith("won")).split(":")[1]
    assert leg.status == winner
    assert (
        ShipmentEvent.objects.filter(
            leg=leg, type__in=["leg.departed", "leg.cancelled"]
        ).count()
        == 1
    )


@pytest.mark.django_db(transaction=True)
def test_same_concurrent_transition_twice_applies_once(hubs):
    leg = _leg_in_state(LegStatus.PLANNED)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def assign():
        try:
            barrier.wait(timeout=10)
            leg_transition(leg_id=leg.pk, to=LegStatus.ASSIGNED, source="dashboard")
            outcomes.append("won")
        except InvalidTransition:
            outcomes.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=assign) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes) == ["refused", "won"]
    assert ShipmentEvent.objects.filter(leg=leg, type="leg.assigned").count() == 1
