"""What a customer can do from the tracking page; each action is one event.

    instructions  ──▶ DeliveryInstruction (shown on the driver's stop) + customer.instructions_updated
    reschedule    ──▶ a day and window the destination hub serves: the shipment's
                      delivery window, promise and ETA and the last-mile leg's
                      planned times move together + customer.rescheduled
    redelivery    ──▶ after a failed attempt: the same re-plan
                      (customer.redelivery_requested) or a pickup at the hub
                      (HubPickupRequest + customer.hub_pickup_requested)
    rating        ──▶ once delivered: CustomerRating + customer.rated

Every service locks the shipment first (the order shipments.services uses),
checks what the shipment allows now, writes, and records its event in the same
transaction. Refusals are DomainErrors with a message meant for the customer.

``shipment_delivery_reschedule`` belongs with the shipment services (it moves a
shipment's promise and a leg's plan); it lives here until shipments adopts it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.db import transaction
from django.utils import formats, timezone

from routing.problem_builder import hub_opening_seconds
from shipments.errors import Conflict, DomainError
from shipments.events import event_record
from shipments.models import Hub, Leg, Shipment
from shipments.states import SHIPMENT_TERMINAL, LegStatus, Mile, ShipmentStatus

from .models import CustomerRating, DeliveryInstruction, HubPickupRequest

logger = logging.getLogger(__name__)

DELIVERY_WINDOW = timedelta(hours=2)
OPTIONS_HORIZON_DAYS = 7
SOURCE = "customer"


# ---------------------------------------------------------------------------
# Delivery options: the days and windows the destination hub can serve
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryWindow:
    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        return f"{timezone.localtime(self.start):%H:%M}-{timezone.localtime(self.end):%H:%M}"

    def as_dict(self) -> dict:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "label": self.label,
        }


@dataclass(frozen=True)
class DeliveryDay:
    day: date
    windows: tuple[DeliveryWindow, ...]

    def as_dict(self) -> dict:
        return {
            "date": self.day.isoformat(),
            "label": formats.date_format(self.day, "l j F"),
            "windows": [w.as_dict() for w in self.windows],
        }


def hub_windows(
    hub: Hub, day: date, *, not_before: datetime | None = None
) -> tuple[DeliveryWindow, ...]:
    """Whole windows inside the hub's opening hours that day (none when closed)."""
    opening = hub_opening_seconds(hub, day)
    if opening is None:
        return ()
    open_seconds, close_seconds = opening
    midnight = timezone.make_aware(datetime.combine(day, time(0, 0)))
    step = int(DELIVERY_WINDOW.total_seconds())
    windows = []
    for start_seconds in range(open_seconds, close_seconds - step + 1, step):
        start = midnight + timedelta(seconds=start_seconds)
        if not_before is None or start >= not_before:
            windows.append(DeliveryWindow(start, start + DELIVERY_WINDOW))
    return tuple(windows)


def _last_mile_leg(shipment: Shipment, *, lock: bool = False) -> Leg | None:
    legs = shipment.legs.filter(mile=Mile.LAST).exclude(status=LegStatus.CANCELLED)
    if lock:
        legs = legs.select_for_update(of=("self",))
    return legs.select_related("from_hub").order_by("-sequence").first()


def _ready_at_hub(shipment: Shipment, last: Leg) -> datetime | None:
    """When the parcel can leave the delivery hub, if it is not there yet."""
    inbound = (
        shipment.legs.filter(sequence__lt=last.sequence)
        .exclude(status__in=[LegStatus.CANCELLED, LegStatus.COMPLETED])
        .order_by("-sequence")
        .first()
    )
    if inbound is None:
        return None
    arrival = inbound.eta or inbound.planned_arrival
    hub = last.from_hub or shipment.destination_hub
    return (
        arrival + timedelta(minutes=hub.handling_minutes if hub else 0)
        if arrival
        else None
    )


def earliest_delivery_day(
    *, shipment: Shipment, last: Leg, now: datetime
) -> tuple[date, datetime | None]:
    """(first day a new window may fall on, the moment the parcel is ready)."""
    tomorrow = timezone.localdate(now) + timedelta(days=1)
    ready = _ready_at_hub(shipment, last)
    if ready is None:
        return tomorrow, None
    return max(tomorrow, timezone.localdate(ready)), ready


def delivery_days(*, shipment: Shipment, last: Leg, now: datetime) -> list[DeliveryDay]:
    hub = last.from_hub or shipment.destination_hub
    if hub is None:
        return []
    first, ready = earliest_delivery_day(shipment=shipment, last=last, now=now)
    days = []
    for offset in range(OPTIONS_HORIZON_DAYS):
        day = first + timedelta(days=offset)
        windows = hub_windows(hub, day, not_before=ready)
        if windows:
            days.append(DeliveryDay(day, windows))
    return days


def reschedule_refusal(shipment: Shipment, last: Leg | None) -> str:
    """Why the delivery cannot be moved now, in the customer's words ("" if it can)."""
    if shipment.is_return:
        return "This parcel is on its way back to the sender; its delivery cannot be changed."
    if shipment.status in SHIPMENT_TERMINAL:
        return f"This shipment is {ShipmentStatus(shipment.status).label.lower()}; its delivery can no longer be changed."
    if last is None or (
        last.from_hub_id is None and shipment.destination_hub_id is None
    ):
        return "This shipment has no delivery from a hub to re-plan."
    if shipment.returns.exists():
        return "This parcel is already on its way back to the sender."
    if last.status in (LegStatus.IN_TRANSIT, LegStatus.ARRIVED):
        return "Your parcel is already out for delivery; it can no longer be moved."
    if last.status == LegStatus.ASSIGNED:
        return "Your delivery is already planned on a driver's route; it can no longer be changed online."
    if last.status != LegStatus.PLANNED:
        return (
            "Our team is arranging the next delivery; please contact us to change it."
        )
    return ""


@dataclass(frozen=True)
class CustomerOptions:
    """What the tracking page offers right now (its buttons and choices)."""

    reschedule_refusal: str
    days: list[DeliveryDay]
    current_window: DeliveryWindow | None
    can_request_redelivery: bool
    can_pick_up_at_hub: bool
    pickup_hub: Hub | None
    pickup_requested: bool
    can_leave_instructions: bool
    can_rate: bool
    instruction: DeliveryInstruction | None
    rating: CustomerRating | None


def customer_options(
    *, shipment: Shipment, now: datetime | None = None
) -> CustomerOptions:
    now = now or timezone.now()
    last = _last_mile_leg(shipment)
    refusal = reschedule_refusal(shipment, last)
    failed_before = _attempt_failed(shipment)
    pickup_hub = (last.from_hub if last else None) or shipment.destination_hub
    window = (
        DeliveryWindow(shipment.delivery_window_start, shipment.delivery_window_end)
        if shipment.delivery_window_start and shipment.delivery_window_end
        else None
    )
    return CustomerOptions(
        reschedule_refusal=refusal,
        days=[] if refusal else delivery_days(shipment=shipment, last=last, now=now),
        current_window=window,
        can_request_redelivery=failed_before and not refusal,
        can_pick_up_at_hub=failed_before and _pickup_refusal(shipment, last) == "",
        pickup_hub=pickup_hub,
        pickup_requested=shipment.hub_pickup_requests.filter(
            status=HubPickupRequest.Status.REQUESTED
        ).exists(),
        can_leave_instructions=_instructions_refusal(shipment, last) == "",
        can_rate=shipment.status == ShipmentStatus.DELIVERED
        and not CustomerRating.objects.filter(shipment=shipment).exists(),
        instruction=DeliveryInstruction.objects.filter(shipment=shipment).first(),
        rating=CustomerRating.objects.filter(shipment=shipment).first(),
    )


# ---------------------------------------------------------------------------
# Rescheduling and redelivery
# ---------------------------------------------------------------------------


def _lock(shipment_id: int) -> Shipment:
    return Shipment.objects.select_for_update().get(pk=shipment_id)


def _window_chosen(
    *, shipment: Shipment, last: Leg, day: date, window_start: time, now: datetime
) -> DeliveryWindow:
    """The window asked for, if the hub serves it; otherwise a field error saying why."""
    today = timezone.localdate(now)
    if day <= today:
        raise DomainError(
            "This day is in the past."
            if day < today
            else "Today can no longer be chosen; pick a later day.",
            field="date",
        )
    first, ready = earliest_delivery_day(shipment=shipment, last=last, now=now)
    if day < first:
        raise DomainError(
            f"Your parcel reaches the delivery hub on {formats.date_format(first, 'l j F')}; choose that day or later.",
            field="date",
        )
    if day >= first + timedelta(days=OPTIONS_HORIZON_DAYS):
        raise DomainError(
            f"Choose a day within the next {OPTIONS_HORIZON_DAYS} days.", field="date"
        )
    hub = last.from_hub or shipment.destination_hub
    windows = hub_windows(hub, day, not_before=ready)
    if not windows:
        raise DomainError(
            f"We do not deliver on {formats.date_format(day, 'l j F')}; choose another day.",
            field="date",
        )
    for window in windows:
        if (
            timezone.localtime(window.start).time().replace(second=0, microsecond=0)
            == window_start
        ):
            return window
    offered = ", ".join(w.label for w in windows)
    raise DomainError(
        f"We do not deliver in the window starting at {window_start:%H:%M} on that day; "
        f"choose one of: {offered}.",
        field="window_start",
    )


@dataclass(frozen=True)
class Rescheduled:
    shipment: Shipment
    window: DeliveryWindow

    @property
    def message(self) -> str:
        start = timezone.localtime(self.window.start)
        return (
            f"Your delivery is re-planned for {formats.date_format(start, 'l j F')}, "
            f"{self.window.label.replace('-', '–')}."
        )


@transaction.atomic
def shipment_delivery_reschedule(
    *,
    shipment_id: int,
    day: date,
    window_start: time,
    event_type: str = "customer.rescheduled",
    source: str = SOURCE,
    now: datetime | None = None,
) -> Rescheduled:
    """Move the delivery to a window the destination hub serves.

    The shipment's delivery window and promise become the window, and the
    last-mile leg is re-planned to arrive in its middle (so the optimizer plans
    it on that day); one event. Withdraws a pending pickup-at-hub request.
    After commit, tracking re-runs delay propagation on the new plan.
    """
    now = now or timezone.now()
    shipment = _lock(shipment_id)
    last = _last_mile_leg(shipment, lock=True)
    refusal = reschedule_refusal(shipment, last)
    if refusal:
        raise Conflict(refusal)
    window = _window_chosen(
        shipment=shipment, last=last, day=day, window_start=window_start, now=now
    )
    previous = {
        "start": shipment.delivery_window_start.isoformat()
        if shipment.delivery_window_start
        else None,
        "end": shipment.delivery_window_end.isoformat()
        if shipment.delivery_window_end
        else None,
    }
    duration = (
        last.planned_arrival - last.planned_departure
        if last.planned_arrival and last.planned_departure
        else timedelta(hours=1)
    )
    arrival = window.start + (window.end - window.start) / 2
    Leg.objects.filter(pk=last.pk).update(
        planned_departure=arrival - duration,
        planned_arrival=arrival,
        eta=arrival,
        updated_at=now,
    )
    shipment.delivery_window_start = window.start
    shipment.delivery_window_end = window.end
    shipment.promised_by = window.end
    shipment.eta = arrival
    shipment.save(
        update_fields=[
            "delivery_window_start",
            "delivery_window_end",
            "promised_by",
            "eta",
            "updated_at",
        ]
    )
    withdrawn = HubPickupRequest.objects.filter(
        shipment=shipment, status=HubPickupRequest.Status.REQUESTED
    ).update(status=HubPickupRequest.Status.WITHDRAWN)
    event_record(
        shipment=shipment,
        leg=last,
        type=event_type,
        source=source,
        payload={
            "date": day.isoformat(),
            "window_start": window.start.isoformat(),
            "window_end": window.end.isoformat(),
            "previous_window": previous,
            "leg_planned_arrival": arrival.isoformat(),
            **({"hub_pickup_withdrawn": True} if withdrawn else {}),
        },
    )
    transaction.on_commit(lambda: _forecast_refresh(shipment.pk))
    return Rescheduled(shipment=shipment, window=window)


def _forecast_refresh(shipment_id: int) -> None:
    """The new plan may put the promise at risk or lift a risk: let tracking judge."""
    from tracking.propagation import shipment_forecast_refresh

    try:
        shipment_forecast_refresh(shipment_id=shipment_id)
    except Exception:  # noqa: BLE001 - the ETA sweep recomputes it anyway
        logger.exception(
            "forecast refresh after rescheduling shipment %s failed", shipment_id
        )


def _attempt_failed(shipment: Shipment) -> bool:
    return (
        shipment.status == ShipmentStatus.DELIVERY_FAILED
        or shipment.legs.filter(mile=Mile.LAST, attempt_count__gt=0).exists()
    )


def _pickup_refusal(shipment: Shipment, last: Leg | None) -> str:
    if shipment.is_return or shipment.status in SHIPMENT_TERMINAL:
        return "This shipment can no longer be collected at the hub."
    if shipment.returns.exists():
        return "This parcel is already on its way back to the sender."
    if last is None or (
        last.from_hub_id is None and shipment.destination_hub_id is None
    ):
        return "This shipment has no delivery hub to collect it from."
    if last.status in (LegStatus.IN_TRANSIT, LegStatus.ARRIVED):
        return "Your parcel is out for delivery again; it cannot be collected now."
    return ""


@dataclass(frozen=True)
class HubPickup:
    request: HubPickupRequest
    hub: Hub

    @property
    def message(self) -> str:
        return (
            f"Your parcel will wait for you at {self.hub.name}, {self.hub.location.address}. "
            "Bring your shipment reference."
        )


@transaction.atomic
def shipment_hub_pickup_request(*, shipment_id: int) -> HubPickup:
    """The customer collects the parcel at the delivery hub after a failed attempt.

    Asking twice changes nothing (one open request, one event).
    """
    shipment = _lock(shipment_id)
    if not _attempt_failed(shipment):
        raise Conflict(
            "A pickup at the hub can be asked for only after a failed delivery attempt."
        )
    last = _last_mile_leg(shipment, lock=True)
    refusal = _pickup_refusal(shipment, last)
    if refusal:
        raise Conflict(refusal)
    hub = Hub.objects.select_related("location").get(
        pk=last.from_hub_id or shipment.destination_hub_id
    )
    existing = HubPickupRequest.objects.filter(
        shipment=shipment, status=HubPickupRequest.Status.REQUESTED
    ).first()
    if existing is not None:
        return HubPickup(existing, hub)
    request = HubPickupRequest.objects.create(shipment=shipment, hub=hub)
    event_record(
        shipment=shipment,
        leg=last,
        type="customer.hub_pickup_requested",
        source=SOURCE,
        payload={"hub_id": hub.pk, "hub": hub.code, "request_id": request.pk},
    )
    return HubPickup(request, hub)


def shipment_redelivery_request(
    *, shipment_id: int, day: date, window_start: time, now: datetime | None = None
) -> Rescheduled:
    """Another attempt on a chosen day and window, after a failed one."""
    with transaction.atomic():
        shipment = _lock(shipment_id)
        if not _attempt_failed(shipment):
            raise Conflict(
                "A redelivery can be asked for only after a failed delivery attempt."
            )
        return shipment_delivery_reschedule(
            shipment_id=shipment_id,
            day=day,
            window_start=window_start,
            event_type="customer.redelivery_requested",
            now=now,
        )


# ---------------------------------------------------------------------------
# Instructions and rating
# ---------------------------------------------------------------------------


def _instructions_refusal(shipment: Shipment, last: Leg | None) -> str:
    if shipment.is_return or shipment.status in SHIPMENT_TERMINAL:
        return f"This shipment is {ShipmentStatus(shipment.status).label.lower()}; instructions are no longer needed."
    if last is None:
        return "This shipment has no delivery to give instructions for."
    return ""


@transaction.atomic
def delivery_instruction_set(
    *,
    shipment_id: int,
    safe_place: str | None = None,
    door_code: str | None = None,
    note: str | None = None,
) -> DeliveryInstruction:
    """Set the instructions for the driver; a field left out (None) keeps its
    value, an empty one clears it. One event.

    The door code stays out of the event (events are relayed to dashboards).
    """
    shipment = _lock(shipment_id)
    last = _last_mile_leg(shipment)
    refusal = _instructions_refusal(shipment, last)
    if refusal:
        raise Conflict(refusal)
    instruction = DeliveryInstruction.objects.filter(
        shipment=shipment
    ).first() or DeliveryInstruction(shipment=shipment)
    for field, value in (
        ("safe_place", safe_place),
        ("door_code", door_code),
        ("note", note),
    ):
        if value is not None:
            setattr(instruction, field, value)
    instruction.save()
    event_record(
        shipment=shipment,
        leg=last,
        type="customer.instructions_updated",
        source=SOURCE,
        payload={
            "safe_place": instruction.safe_place,
            "has_door_code": bool(instruction.door_code),
            "note": instruction.note,
        },
    )
    return instruction


@transaction.atomic
def customer_rating_create(
    *, shipment_id: int, stars: int, comment: str = ""
) -> CustomerRating:
    """Once per delivered shipment; one event."""
    shipment = _lock(shipment_id)
    if shipment.status != ShipmentStatus.DELIVERED:
        raise Conflict("You can rate the delivery once your parcel has been delivered.")
    if CustomerRating.objects.filter(shipment=shipment).exists():
        raise Conflict("This delivery has already been rated. Thank you!")
    if not 1 <= stars <= 5:
        raise DomainError("Choose between 1 and 5 stars.", field="stars")
    rating = CustomerRating.objects.create(
        shipment=shipment, stars=stars, comment=comment
    )
    event_record(
        shipment=shipment,
        type="customer.rated",
        source=SOURCE,
        payload={"stars": stars, "comment": comment[:300]},
    )
    return rating
