"""What happens to a leg after a failed attempt.

    failed attempt ──▶ last mile, refused or damaged, or attempts used up
                   │        ──▶ a return shipment back to the shipper (the leg stays failed)
                   ├─▶ first mile, attempts used up ──▶ the shipment is cancelled
                   └─▶ otherwise ──▶ the leg is re-planned (``planned``) for a later route

The parcel of a failed last-mile attempt rides back to the route's hub with the
driver; a re-planned leg leaves from that hub again on a later route.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction

from routing.models import Route
from shipments.errors import DomainError
from shipments.models import Hub, Leg, Location, Shipment
from shipments.services import (
    ParcelInput,
    leg_transition,
    shipment_cancel,
    shipment_create,
)
from shipments.states import LegStatus, Mile

MAX_ATTEMPTS = 3
# Reasons after which another attempt makes no sense.
RETURN_AT_ONCE = frozenset({"refused", "damaged"})
# The driver never tried (route ended first): it does not count towards a return.
NOT_ATTEMPTED = "not_attempted"


def _location_data(location: Location) -> dict[str, Any]:
    return {
        "address": location.address,
        "latitude": location.latitude,
        "longitude": location.longitude,
        "contact_name": location.contact_name,
        "contact_phone": location.contact_phone,
        "contact_email": location.contact_email,
    }


def shipment_return_create(*, shipment_id: int, hub_id: int, reason: str) -> Shipment:
    """A return shipment for an undeliverable one: from the customer's address,
    through ``hub`` (where the driver brings the parcels back), to the shipper."""
    original = Shipment.objects.select_related("shipper", "origin", "destination").get(
        pk=shipment_id
    )
    number = original.returns.count() + 1
    parcels = [
        ParcelInput(
            weight_kg=parcel.weight_kg,
            volume_m3=parcel.volume_m3,
            description=f"return of {parcel.barcode}"[:200],
        )
        for parcel in original.parcels.all()
    ]
    created = shipment_create(
        shipper=original.shipper,
        consignee=original.shipper,
        reference=f"{original.reference}-R{number}"[:64],
        origin=_location_data(original.destination),
        destination=_location_data(original.origin),
        parcels=parcels,
        service_level="standard",
        origin_hub=Hub.objects.get(pk=hub_id),
        is_return=True,
        original_shipment=original,
        notes=f"Return after failed delivery ({reason}) of {original.reference}.",
        source="system",
    )
    return created.shipment


@transaction.atomic
def leg_failure_resolve(
    *,
    leg_id: int,
    route: Route,
    reason: str,
    actor=None,
    occurred_at: datetime | None = None,
    extra_groups: list[str] | None = None,
) -> dict[str, Any]:
    """Apply the policy to a leg that has just failed; returns what was decided."""
    leg = Leg.objects.get(pk=leg_id)
    if leg.status != LegStatus.FAILED:
        return {"policy": "none"}
    attempts = leg.attempt_count
    give_up = reason in RETURN_AT_ONCE or (
        reason != NOT_ATTEMPTED and attempts >= MAX_ATTEMPTS
    )
    if leg.mile == Mile.LAST and give_up:
        try:
            returned = shipment_return_create(
                shipment_id=leg.shipment_id, hub_id=route.hub_id, reason=reason
            )
        except DomainError as exc:
            # No hub serves the shipper any more: the dispatcher decides; the leg stays failed.
            return {"policy": "return_not_planned", "detail": exc.message}
        return {
            "policy": "return",
            "return_shipment_id": returned.pk,
            "attempts": attempts,
        }
    if leg.mile == Mile.FIRST and give_up:
        shipment_cancel(
            shipment_id=leg.shipment_id,
            actor=actor,
            reason=f"pickup failed {attempts} times (last: {reason})",
            source="system",
        )
        return {"policy": "cancelled", "attempts": attempts}
    leg_transition(
        leg_id=leg.pk,
        to=LegStatus.PLANNED,
        source="system",
        actor=actor,
        occurred_at=occurred_at,
        reason=f"re-planned after a failed attempt ({reason})",
        event_type="leg.rescheduled",
        payload={"route_id": route.pk, "attempts": attempts},
        extra_groups=extra_groups,
    )
    return {"policy": "rescheduled", "attempts": attempts}
