"""Shipment and leg services: every write to a shipment goes through here.

Each service runs in one transaction, locks the shipment row before its legs
(always in that order, so two services never deadlock), checks the state
machine, writes exactly one event, and leaves the outbox message for the relay.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from .errors import Conflict, PlanningError
from .events import event_record
from .models import Hub, Leg, Location, Parcel, Party, Shipment
from .planning import LegPlan, estimate_times, plan_chain
from .states import (
    LEG_OPEN,
    SHIPMENT_TERMINAL,
    LegStatus,
    ShipmentStatus,
    check_leg_transition,
    check_shipment_transition,
    derive_shipment_status,
)
from .tracking_tokens import tracking_salt_new, tracking_token_hash, tracking_token_make

SERVICE_LEVEL_PROMISE = {
    "same_day": timedelta(hours=10),
    "next_day": timedelta(days=1, hours=12),
    "standard": timedelta(days=3),
}


@dataclass(frozen=True)
class ParcelInput:
    weight_kg: Decimal
    volume_m3: Decimal = Decimal(0)
    barcode: str = ""
    description: str = ""


@dataclass(frozen=True)
class CreatedShipment:
    shipment: Shipment
    tracking_token: str


def location_create(data: dict[str, Any]) -> Location:
    location = Location(
        address=data["address"],
        latitude=data["latitude"],
        longitude=data["longitude"],
        contact_name=data.get("contact_name", ""),
        contact_phone=data.get("contact_phone", ""),
        contact_email=data.get("contact_email", ""),
    )
    location.full_clean()
    location.save()
    return location


@transaction.atomic
def hub_save(
    *, hub: Hub | None, location: dict[str, Any] | None = None, **fields
) -> Hub:
    """Create a hub with its location, or update both, in one transaction."""
    if hub is None:
        hub = Hub(location=location_create(location or {}))
    elif location:
        for name, value in location.items():
            setattr(hub.location, name, value)
        hub.location.full_clean()
        hub.location.save()
    for name, value in fields.items():
        setattr(hub, name, value)
    hub.save()
    return hub


def barcode_new() -> str:
    return "AM" + secrets.token_hex(6).upper()


@transaction.atomic
def shipment_create(
    *,
    shipper: Party,
    consignee: Party,
    reference: str,
    origin: dict[str, Any],
    destination: dict[str, Any],
    parcels: list[ParcelInput],
    service_level: str = "standard",
    pickup_window_start: datetime | None = None,
    pickup_window_end: datetime | None = None,
    delivery_window_start: datetime | None = None,
    delivery_window_end: datetime | None = None,
    promised_by: datetime | None = None,
    notes: str = "",
    required_skills: list[str] | None = None,
    origin_hub: Hub | None = None,
    destination_hub: Hub | None = None,
    is_return: bool = False,
    original_shipment: Shipment | None = None,
    actor=None,
    source: str = "api",
    now: datetime | None = None,
) -> CreatedShipment:
    """Create a shipment with its parcels and plan its legs; one ``shipment.created`` event."""
    now = now or timezone.now()
    origin_location = location_create(origin)
    destination_location = location_create(destination)
    first_hub, last_hub, chain = plan_chain(
        origin=origin_location,
        destination=destination_location,
        is_return=is_return,
        origin_hub=origin_hub,
        destination_hub=destination_hub,
    )
    if not parcels:
        raise PlanningError("A shipment needs at least one parcel.", field="parcels")
    if promised_by is None:
        promised_by = delivery_window_end or now + SERVICE_LEVEL_PROMISE[service_level]
    start = max(pickup_window_start or now, now)
    chain = estimate_times(
        chain, start=start, delivery_window_start=delivery_window_start
    )

    salt = tracking_salt_new()
    token = tracking_token_make(salt=salt, version=1)
    shipment = Shipment.objects.create(
        shipper=shipper,
        consignee=consignee,
        reference=reference,
        origin=origin_location,
        destination=destination_location,
        origin_hub=first_hub,
        destination_hub=last_hub,
        service_level=service_level,
        pickup_window_start=pickup_window_start,
        pickup_window_end=pickup_window_end,
        delivery_window_start=delivery_window_start,
        delivery_window_end=delivery_window_end,
        promised_by=promised_by,
        notes=notes,
        required_skills=sorted(set(required_skills or [])),
        is_return=is_return,
        original_shipment=original_shipment,
        parcel_count=len(parcels),
        total_weight_kg=sum((p.weight_kg for p in parcels), Decimal(0)),
        total_volume_m3=sum((p.volume_m3 for p in parcels), Decimal(0)),
        status=ShipmentStatus.PLANNED,
        current_mile=chain[0].mile,
        eta=chain[-1].planned_arrival,
        tracking_salt=salt,
        tracking_token_hash=tracking_token_hash(token),
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    Parcel.objects.bulk_create(
        [
            Parcel(
                shipment=shipment,
                barcode=p.barcode or barcode_new(),
                weight_kg=p.weight_kg,
                volume_m3=p.volume_m3,
                description=p.description,
            )
            for p in parcels
        ]
    )
    legs = _legs_create(shipment, chain, first_sequence=1, depends_on=None)
    event_record(
        shipment=shipment,
        type="shipment.created",
        source=source,
        actor=actor,
        payload={
            "legs": [
                {"id": leg.pk, "mile": leg.mile, "sequence": leg.sequence}
                for leg in legs
            ],
            "parcel_count": len(parcels),
        },
    )
    return CreatedShipment(shipment=shipment, tracking_token=token)


@transaction.atomic
def shipment_create_from_input(
    *, data: dict[str, Any], actor=None, source: str = "api"
) -> CreatedShipment:
    """Create a shipment from validated input (API, CSV): the consignee party and
    the shipment in one transaction, so a refused shipment leaves no party behind."""
    data = dict(data)
    consignee = Party.objects.create(kind=Party.Kind.CONSIGNEE, **data.pop("consignee"))
    parcels = [
        ParcelInput(
            weight_kg=p["weight_kg"],
            volume_m3=p.get("volume_m3", Decimal(0)),
            barcode=p.get("barcode", ""),
            description=p.get("description", ""),
        )
        for p in data.pop("parcels")
    ]
    return shipment_create(
        consignee=consignee, parcels=parcels, actor=actor, source=source, **data
    )


def _legs_create(
    shipment: Shipment,
    chain: list[LegPlan],
    *,
    first_sequence: int,
    depends_on: Leg | None,
) -> list[Leg]:
    legs: list[Leg] = []
    previous = depends_on
    for offset, plan in enumerate(chain):
        leg = Leg.objects.create(
            shipment=shipment,
            sequence=first_sequence + offset,
            mile=plan.mile,
            mode=plan.mode,
            from_location=plan.from_location,
            to_location=plan.to_location,
            from_hub=plan.from_hub,
            to_hub=plan.to_hub,
            depends_on=previous,
            planned_departure=plan.planned_departure,
            planned_arrival=plan.planned_arrival,
            eta=plan.planned_arrival,
        )
        legs.append(leg)
        previous = leg
    return legs


def _shipment_lock(shipment_id: int) -> Shipment:
    return Shipment.objects.select_for_update().get(pk=shipment_id)


def shipment_status_refresh(shipment: Shipment) -> tuple[str, str]:
    """Recompute the derived status of a locked shipment; returns (old, new)."""
    legs = list(shipment.legs.order_by("sequence").values_list("mile", "status"))
    old = shipment.status
    new = derive_shipment_status(is_return=shipment.is_return, legs=legs)
    if new != old:
        check_shipment_transition(old, new)
    open_miles = [
        mile
        for mile, status in legs
        if status not in (LegStatus.COMPLETED, LegStatus.CANCELLED)
    ]
    shipment.status = new
    shipment.current_mile = (
        open_miles[0] if open_miles else (legs[-1][0] if legs else "")
    )
    if new in SHIPMENT_TERMINAL and shipment.completed_at is None:
        shipment.completed_at = timezone.now()
    shipment.save(
        update_fields=["status", "current_mile", "completed_at", "updated_at"]
    )
    return old, new


LEG_EVENT_TYPES = {
    LegStatus.PLANNED: "leg.replanned",
    LegStatus.ASSIGNED: "leg.assigned",
    LegStatus.IN_TRANSIT: "leg.departed",
    LegStatus.ARRIVED: "leg.arrived",
    LegStatus.COMPLETED: "leg.completed",
    LegStatus.FAILED: "leg.failed",
    LegStatus.CANCELLED: "leg.cancelled",
}


@transaction.atomic
def leg_transition(
    *,
    leg_id: int,
    to: str,
    source: str,
    actor=None,
    occurred_at: datetime | None = None,
    reason: str = "",
    latitude: float | None = None,
    longitude: float | None = None,
    idempotency_key: str | None = None,
    event_type: str | None = None,
    payload: dict[str, Any] | None = None,
    extra_groups: list[str] | None = None,
) -> Leg:
    """Move one leg through its state machine and refresh its shipment.

    Locks the shipment, then the leg: of two concurrent moves on one leg the
    second waits, then sees the new state and is refused if no longer allowed.
    """
    shipment_id = Leg.objects.values_list("shipment_id", flat=True).get(pk=leg_id)
    shipment = _shipment_lock(shipment_id)
    leg = Leg.objects.select_for_update().get(pk=leg_id)
    check_leg_transition(leg.status, to)
    from_status = leg.status
    at = occurred_at or timezone.now()
    if to == LegStatus.IN_TRANSIT:
        leg.actual_departure = at
    elif to in (LegStatus.ARRIVED, LegStatus.COMPLETED) and leg.actual_arrival is None:
        leg.actual_arrival = at
    elif to == LegStatus.FAILED:
        leg.attempt_count += 1
    elif to == LegStatus.PLANNED:
        leg.actual_departure = None
        leg.actual_arrival = None
    leg.status = to
    leg.save()
    old_status, new_status = shipment_status_refresh(shipment)
    event_record(
        shipment=shipment,
        leg=leg,
        type=event_type or LEG_EVENT_TYPES[to],
        source=source,
        actor=actor,
        occurred_at=occurred_at,
        latitude=latitude,
        longitude=longitude,
        idempotency_key=idempotency_key,
        payload={
            "leg_from": from_status,
            "leg_to": to,
            "mile": leg.mile,
            "shipment_from": old_status,
            "shipment_to": new_status,
            **({"reason": reason} if reason else {}),
            **(payload or {}),
        },
        extra_groups=extra_groups,
    )
    return leg


@transaction.atomic
def shipment_cancel(
    *, shipment_id: int, actor=None, reason: str = "", source: str = "api"
) -> Shipment:
    shipment = _shipment_lock(shipment_id)
    if shipment.status == ShipmentStatus.CANCELLED:
        return shipment  # cancelling twice is a no-op, not a second event
    check_shipment_transition(shipment.status, ShipmentStatus.CANCELLED)
    legs = list(shipment.legs.select_for_update().order_by("sequence"))
    if any(leg.status in (LegStatus.IN_TRANSIT, LegStatus.ARRIVED) for leg in legs):
        raise Conflict(
            "A leg of this shipment is under way; it cannot be cancelled now."
        )
    if any(leg.status == LegStatus.ASSIGNED for leg in legs):
        # A driver may be at the door with it, offline: take it off the route
        # first (dispatch), so the stop ends skipped and a delivery can still win.
        raise Conflict(
            "A leg of this shipment is on a published route; "
            "unassign the route or move the stop first."
        )
    old = shipment.status
    for leg in legs:
        if leg.status not in (LegStatus.COMPLETED, LegStatus.CANCELLED):
            leg.status = LegStatus.CANCELLED
            leg.save(update_fields=["status", "updated_at"])
    shipment.status = ShipmentStatus.CANCELLED
    shipment.completed_at = timezone.now()
    shipment.save(update_fields=["status", "completed_at", "updated_at"])
    event_record(
        shipment=shipment,
        type="shipment.cancelled",
        source=source,
        actor=actor,
        payload={
            "shipment_from": old,
            "shipment_to": shipment.status,
            "reason": reason,
        },
    )
    return shipment


@transaction.atomic
def shipment_replan(
    *,
    shipment_id: int,
    actor=None,
    destination: dict[str, Any] | None = None,
    destination_hub: Hub | None = None,
    source: str = "api",
) -> Shipment:
    """Re-plan the legs not yet started (e.g. a new address or hub).

    Open legs are cancelled (kept for history) and a new chain is planned from
    where the shipment now is. Refused while a leg is under way.
    """
    shipment = _shipment_lock(shipment_id)
    if shipment.status in SHIPMENT_TERMINAL:
        raise Conflict(f"The shipment is {shipment.status}; it cannot be re-planned.")
    legs = list(shipment.legs.select_for_update().order_by("sequence"))
    if any(leg.status in (LegStatus.IN_TRANSIT, LegStatus.ARRIVED) for leg in legs):
        raise Conflict(
            "A leg of this shipment is under way; re-plan once it has arrived."
        )
    done = [leg for leg in legs if leg.status == LegStatus.COMPLETED]
    if destination is not None:
        shipment.destination = location_create(destination)
    start_hub = done[-1].to_hub if done else None
    if done and start_hub is None:
        raise Conflict("The shipment has reached its destination; nothing to re-plan.")
    first_hub, last_hub, chain = plan_chain(
        origin=shipment.origin,
        destination=shipment.destination,
        is_return=shipment.is_return,
        origin_hub=None if done else shipment.origin_hub,
        destination_hub=destination_hub,
        start_at_hub=start_hub,
    )
    chain = estimate_times(
        chain,
        start=timezone.now(),
        delivery_window_start=shipment.delivery_window_start,
    )
    cancelled = []
    for leg in legs:
        if leg.status in LEG_OPEN or leg.status == LegStatus.FAILED:
            leg.status = LegStatus.CANCELLED
            leg.save(update_fields=["status", "updated_at"])
            cancelled.append(leg.pk)
    next_sequence = max(leg.sequence for leg in legs) + 1
    new_legs = _legs_create(
        shipment,
        chain,
        first_sequence=next_sequence,
        depends_on=done[-1] if done else None,
    )
    shipment.origin_hub = first_hub if not done else shipment.origin_hub
    shipment.destination_hub = last_hub
    shipment.eta = chain[-1].planned_arrival
    shipment.save()
    old, new = shipment_status_refresh(shipment)
    event_record(
        shipment=shipment,
        type="shipment.replanned",
        source=source,
        actor=actor,
        payload={
            "cancelled_legs": cancelled,
            "legs": [
                {"id": leg.pk, "mile": leg.mile, "sequence": leg.sequence}
                for leg in new_legs
            ],
            "shipment_from": old,
            "shipment_to": new,
        },
    )
    return shipment


@transaction.atomic
def tracking_link_reissue(*, shipment_id: int, actor=None, source: str = "api") -> str:
    """A new tracking token; the old link stops working at once."""
    shipment = _shipment_lock(shipment_id)
    shipment.tracking_version += 1
    token = tracking_token_make(
        salt=shipment.tracking_salt, version=shipment.tracking_version
    )
    shipment.tracking_token_hash = tracking_token_hash(token)
    shipment.save(
        update_fields=["tracking_version", "tracking_token_hash", "updated_at"]
    )
    event_record(
        shipment=shipment,
        type="tracking_link.reissued",
        source=source,
        actor=actor,
        payload={"version": shipment.tracking_version},
    )
    return token


def shipment_tracking_token(shipment: Shipment) -> str:
    return tracking_token_make(
        salt=shipment.tracking_salt, version=shipment.tracking_version
    )
