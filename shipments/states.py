"""State vocabularies and the transition tables of legs and shipments.

The tables are the whole truth about which moves are allowed; services consult
them under a row lock (see ``shipments.services.leg_transition``).
"""

from __future__ import annotations

from django.db import models


class Mile(models.TextChoices):
    FIRST = "first", "First mile"  # producer/supplier to a hub
    MIDDLE = "middle", "Middle mile"  # hub to hub (line-haul)
    LAST = "last", "Last mile"  # hub to the customer's door
    RETURN = "return", "Return"  # the reverse journey


class TransportMode(models.TextChoices):
    VAN = "van", "Van"
    TRUCK = "truck", "Truck"
    CARGO_BIKE = "cargo_bike", "Cargo bike"
    RAIL = "rail", "Rail"
    AIR = "air", "Air"
    SEA = "sea", "Sea"


class LegStatus(models.TextChoices):
    PLANNED = "planned", "Planned"  # in the chain, not on any published route
    ASSIGNED = "assigned", "Assigned"  # on a published route or trip
    IN_TRANSIT = "in_transit", "In transit"  # goods picked up / departed
    ARRIVED = "arrived", "Arrived"  # at the leg's destination, not yet handed over
    COMPLETED = "completed", "Completed"  # handed over (delivered or scanned into hub)
    FAILED = "failed", "Failed"  # attempt failed; to be re-planned or returned
    CANCELLED = "cancelled", "Cancelled"


LEG_TRANSITIONS: dict[str, frozenset[str]] = {
    LegStatus.PLANNED: frozenset({LegStatus.ASSIGNED, LegStatus.CANCELLED}),
    LegStatus.ASSIGNED: frozenset(
        {LegStatus.PLANNED, LegStatus.IN_TRANSIT, LegStatus.FAILED, LegStatus.CANCELLED}
    ),
    LegStatus.IN_TRANSIT: frozenset(
        {LegStatus.ARRIVED, LegStatus.COMPLETED, LegStatus.FAILED}
    ),
    LegStatus.ARRIVED: frozenset({LegStatus.COMPLETED, LegStatus.FAILED}),
    LegStatus.FAILED: frozenset({LegStatus.PLANNED, LegStatus.CANCELLED}),
    LegStatus.COMPLETED: frozenset(),
    LegStatus.CANCELLED: frozenset(),
}

LEG_STARTED = frozenset(
    {LegStatus.IN_TRANSIT, LegStatus.ARRIVED, LegStatus.COMPLETED, LegStatus.FAILED}
)
LEG_OPEN = frozenset({LegStatus.PLANNED, LegStatus.ASSIGNED})


class ShipmentStatus(models.TextChoices):
    PLANNED = "planned", "Planned"  # legs planned, nothing moved yet
    PICKED_UP = "picked_up", "Picked up"  # on the first mile
    AT_HUB = "at_hub", "At hub"  # between legs, inside a hub
    IN_TRANSIT = "in_transit", "In transit"  # on the middle mile
    OUT_FOR_DELIVERY = "out_for_delivery", "Out for delivery"
    DELIVERY_FAILED = "delivery_failed", "Delivery failed"
    DELIVERED = "delivered", "Delivered"
    RETURNING = "returning", "Returning"  # a return on its way back
    RETURNED = "returned", "Returned"  # a return handed back to the shipper
    CANCELLED = "cancelled", "Cancelled"


_S = ShipmentStatus
SHIPMENT_TRANSITIONS: dict[str, frozenset[str]] = {
    _S.PLANNED: frozenset(
        {_S.PICKED_UP, _S.RETURNING, _S.CANCELLED, _S.DELIVERY_FAILED}
    ),
    _S.PICKED_UP: frozenset({_S.AT_HUB, _S.IN_TRANSIT, _S.DELIVERY_FAILED}),
    _S.AT_HUB: frozenset(
        {
            _S.IN_TRANSIT,
            _S.OUT_FOR_DELIVERY,
            _S.RETURNING,
            _S.CANCELLED,
            _S.DELIVERY_FAILED,
        }
    ),
    _S.IN_TRANSIT: frozenset({_S.AT_HUB, _S.OUT_FOR_DELIVERY, _S.DELIVERY_FAILED}),
    _S.OUT_FOR_DELIVERY: frozenset({_S.DELIVERED, _S.DELIVERY_FAILED, _S.AT_HUB}),
    _S.DELIVERY_FAILED: frozenset(
        {_S.AT_HUB, _S.OUT_FOR_DELIVERY, _S.PLANNED, _S.RETURNING, _S.CANCELLED}
    ),
    _S.RETURNING: frozenset(
        {_S.AT_HUB, _S.RETURNED, _S.IN_TRANSIT, _S.DELIVERY_FAILED}
    ),
    _S.DELIVERED: frozenset(),
    _S.RETURNED: frozenset(),
    _S.CANCELLED: frozenset(),
}
SHIPMENT_TERMINAL = frozenset({_S.DELIVERED, _S.RETURNED, _S.CANCELLED})


class InvalidTransition(Exception):
    """A move the state machine forbids; answered as 409 by the API."""

    code = "invalid_transition"

    def __init__(
        self, *, entity: str, current: str, target: str, allowed: frozenset[str]
    ):
        self.entity = entity
        self.current = current
        self.target = target
        self.allowed = sorted(allowed)
        super().__init__(
            f"{entity} cannot move from '{current}' to '{target}'; "
            f"allowed from '{current}': {', '.join(self.allowed) or 'none (final state)'}."
        )


def check_leg_transition(current: str, target: str) -> None:
    allowed = LEG_TRANSITIONS[current]
    if target not in allowed:
        raise InvalidTransition(
            entity="leg", current=current, target=target, allowed=allowed
        )


def check_shipment_transition(current: str, target: str) -> None:
    if current == target:
        return
    allowed = SHIPMENT_TRANSITIONS[current]
    if target not in allowed:
        raise InvalidTransition(
            entity="shipment", current=current, target=target, allowed=allowed
        )


def derive_shipment_status(*, is_return: bool, legs: list[tuple[str, str]]) -> str:
    """The shipment's status as a pure function of its legs' (mile, status), in order.

    A cancelled shipment is decided by the caller (cancellation is explicit).
    """
    active = [(mile, status) for mile, status in legs if status != LegStatus.CANCELLED]
    if not active:
        return ShipmentStatus.CANCELLED
    last_mile, last_status = active[-1]
    if last_status == LegStatus.COMPLETED:
        return ShipmentStatus.RETURNED if is_return else ShipmentStatus.DELIVERED
    if any(status == LegStatus.FAILED for _, status in active):
        return ShipmentStatus.DELIVERY_FAILED
    started = [i for i, (_, status) in enumerate(active) if status in LEG_STARTED]
    if not started:
        return ShipmentStatus.PLANNED
    index = started[-1]
    mile, status = active[index]
    if is_return:
        return ShipmentStatus.RETURNING
    if status == LegStatus.COMPLETED:
        return ShipmentStatus.AT_HUB
    if mile == Mile.FIRST:
        return ShipmentStatus.PICKED_UP
    if mile == Mile.MIDDLE:
        return ShipmentStatus.IN_TRANSIT
    return ShipmentStatus.OUT_FOR_DELIVERY
