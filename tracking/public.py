"""What a tracking-link holder may see: an allow-list, built field by field.

Nothing here serialises a model wholesale. The customer sees the status, the
milestones, an ETA window, the driver's first name and position only while the
parcel is out for delivery (and the fix is fresh), and the proof of delivery
after it. Never: other shipments, the driver's surname or phone, addresses or
contact details, internal ids, event details.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.apps import apps
from django.conf import settings
from django.utils import timezone

from routing.models import Route, RouteStop
from shipments.models import Leg, Shipment
from shipments.selectors import shipment_get_by_tracking_token
from shipments.states import SHIPMENT_TERMINAL, LegStatus, Mile, ShipmentStatus

from .positions import driver_position

# A fix older than this is not shown: a stale dot misleads more than none.
DRIVER_POSITION_MAX_AGE = timedelta(minutes=10)
ETA_WINDOW_HALF_WIDTH = timedelta(minutes=30)
ETA_WINDOW_HALF_WIDTH_OUT_FOR_DELIVERY = timedelta(minutes=15)
WINDOW_ROUNDING_MINUTES = 15

STATUS_TEXT = {
    ShipmentStatus.PLANNED: "Your order is being prepared for pickup.",
    ShipmentStatus.PICKED_UP: "Your parcel has been picked up from the sender.",
    ShipmentStatus.AT_HUB: "Your parcel is at one of our hubs.",
    ShipmentStatus.IN_TRANSIT: "Your parcel is on its way between hubs.",
    ShipmentStatus.OUT_FOR_DELIVERY: "Your parcel is out for delivery.",
    ShipmentStatus.DELIVERY_FAILED: "We could not deliver your parcel.",
    ShipmentStatus.DELIVERED: "Your parcel has been delivered.",
    ShipmentStatus.RETURNING: "Your parcel is on its way back.",
    ShipmentStatus.RETURNED: "Your parcel has been returned to the sender.",
    ShipmentStatus.CANCELLED: "This shipment was cancelled.",
}


def tracking_shipment_resolve(token: str, *, now: datetime | None = None) -> Shipment | None:
    """The shipment behind a token, or None if the token is unknown, revoked or
    expired (all three look the same from outside)."""
    shipment = shipment_get_by_tracking_token(token)
    if shipment is None:
        return None
    if shipment_link_expired(shipment, now=now):
        return None
    return shipment


def shipment_link_expired(shipment: Shipment, *, now: datetime | None = None) -> bool:
    if shipment.status not in SHIPMENT_TERMINAL or shipment.completed_at is None:
        return False
    days = settings.TRACKING_LINK_EXPIRY_DAYS
    return (now or timezone.now()) > shipment.completed_at + timedelta(days=days)


@dataclass(frozen=True)
class Milestone:
    key: str
    label: str
    at: datetime | None

    def as_dict(self) -> dict:
        return {"key": self.key, "label": self.label, "at": _iso(self.at), "done": self.at is not None}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _active_legs(shipment: Shipment) -> list[Leg]:
    return [
        leg
        for leg in shipment.legs.select_related("from_hub", "to_hub").order_by("sequence")
        if leg.status != LegStatus.CANCELLED or leg.actual_departure is not None
    ]


def _hub_name(leg: Leg, *, end: str) -> str:
    hub = leg.to_hub if end == "to" else leg.from_hub
    return hub.name if hub else "hub"


def milestones(shipment: Shipment, legs: list[Leg]) -> list[Milestone]:
    """Picked up → at hub → departed hub → out for delivery → delivered (or failed)."""
    open_legs = [leg for leg in legs if leg.status != LegStatus.CANCELLED]
    first = next((leg for leg in legs if leg.mile in (Mile.FIRST, Mile.RETURN)), None)
    middle = [leg for leg in legs if leg.mile == Mile.MIDDLE]
    last = open_legs[-1] if open_legs else (legs[-1] if legs else None)
    result: list[Milestone] = []
    if first is not None and first is not last:
        result.append(Milestone("picked_up", "Picked up from the sender", first.actual_departure))
        result.append(
            Milestone(
                "arrived_at_hub",
                f"Arrived at {_hub_name(first, end='to')}",
                first.actual_arrival if first.status == LegStatus.COMPLETED else None,
            )
        )
    for leg in middle:
        if leg.status == LegStatus.CANCELLED and leg.actual_departure is None:
            continue
        result.append(
            Milestone("departed_hub", f"Left {_hub_name(leg, end='from')}", leg.actual_departure)
        )
        result.append(
            Milestone(
                "arrived_at_hub",
                f"Arrived at {_hub_name(leg, end='to')}",
                leg.actual_arrival if leg.status == LegStatus.COMPLETED else None,
            )
        )
    if last is not None:
        terminal_label = "Returned to the sender" if shipment.is_return else "Delivered"
        result.append(
            Milestone("out_for_delivery", "Out for delivery", last.actual_departure)
        )
        failed_attempts = sum(leg.attempt_count for leg in legs if leg.mile == last.mile)
        if shipment.status == ShipmentStatus.DELIVERY_FAILED or (
            failed_attempts and shipment.status not in SHIPMENT_TERMINAL
        ):
            result.append(Milestone("attempt_failed", "Delivery attempt failed", _last_failure_at(legs)))
        result.append(
            Milestone(
                "delivered",
                terminal_label,
                last.actual_arrival if last.status == LegStatus.COMPLETED else None,
            )
        )
    return result


def _last_failure_at(legs: list[Leg]) -> datetime | None:
    failed = [leg for leg in legs if leg.attempt_count]
    if not failed:
        return None
    return max((leg.updated_at for leg in failed), default=None)


def next_step(shipment: Shipment, legs: list[Leg]) -> str:
    """What happens after a failed attempt, in the customer's words."""
    if shipment.status == ShipmentStatus.RETURNING or shipment.is_return:
        return "The parcel is going back to the sender."
    if shipment.status != ShipmentStatus.DELIVERY_FAILED and not any(
        leg.attempt_count for leg in legs
    ):
        return ""
    replanned = [
        leg
        for leg in legs
        if leg.mile == Mile.LAST and leg.status in (LegStatus.PLANNED, LegStatus.ASSIGNED)
    ]
    if replanned:
        return "We will try again on the next delivery round."
    return "Our team will contact you to arrange another delivery."


def _round_down(value: datetime) -> datetime:
    local = timezone.localtime(value)
    minute = local.minute - local.minute % WINDOW_ROUNDING_MINUTES
    return local.replace(minute=minute, second=0, microsecond=0)


def _round_up(value: datetime) -> datetime:
    down = _round_down(value)
    return down if down == timezone.localtime(value) else down + timedelta(
        minutes=WINDOW_ROUNDING_MINUTES
    )


def eta_window(shipment: Shipment) -> dict | None:
    """An ETA window rounded to quarter hours, narrower once out for delivery."""
    if shipment.status in SHIPMENT_TERMINAL or shipment.eta is None:
        return None
    half = (
        ETA_WINDOW_HALF_WIDTH_OUT_FOR_DELIVERY
        if shipment.status == ShipmentStatus.OUT_FOR_DELIVERY
        else ETA_WINDOW_HALF_WIDTH
    )
    start = _round_down(shipment.eta - half)
    end = _round_up(shipment.eta + half)
    return {"start": start.isoformat(), "end": end.isoformat()}


def _last_mile_stop(legs: list[Leg]) -> RouteStop | None:
    last = [leg for leg in legs if leg.mile in (Mile.LAST, Mile.RETURN)]
    if not last:
        return None
    return (
        RouteStop.objects.filter(legs=last[-1])
        .exclude(route__status__in=[Route.Status.DRAFT, Route.Status.CANCELLED])
        .select_related("route__driver__user")
        .order_by("-route__service_date", "-id")
        .first()
    )


def driver_view(shipment: Shipment, stop: RouteStop | None, *, now: datetime) -> dict | None:
    """First name and position, only while out for delivery with a fresh fix."""
    if shipment.status != ShipmentStatus.OUT_FOR_DELIVERY or stop is None:
        return None
    driver = stop.route.driver
    if driver is None:
        return None
    body: dict = {"first_name": driver.public_name, "position": None}
    position = driver_position(driver.pk)
    if position is not None and now - position.recorded_at <= DRIVER_POSITION_MAX_AGE:
        body["position"] = {
            # Four decimals (about 10 m) is plenty for a dot on a map.
            "latitude": round(position.latitude, 4),
            "longitude": round(position.longitude, 4),
            "recorded_at": position.recorded_at.isoformat(),
        }
    return body


def proof_of_delivery(shipment: Shipment, stop: RouteStop | None) -> dict | None:
    if shipment.status != ShipmentStatus.DELIVERED or stop is None:
        return None
    try:
        pod_model = apps.get_model("dispatch", "ProofOfDelivery")
    except LookupError:
        pod_model = None
    pod = pod_model.objects.filter(stop=stop).order_by("-id").first() if pod_model else None
    return {
        "delivered_at": _iso(shipment.completed_at),
        "received_by": pod.recipient_name if pod else "",
        "has_photo": bool(pod and pod.photo),
        "has_signature": bool(pod and pod.signature),
    }


def public_shipment_view(shipment: Shipment, *, now: datetime | None = None) -> dict:
    """The tracking page's data: every key on it is listed here, nothing else."""
    now = now or timezone.now()
    legs = _active_legs(shipment)
    stop = _last_mile_stop(legs)
    return {
        "reference": shipment.reference,
        "status": shipment.status,
        "status_label": ShipmentStatus(shipment.status).label,
        "status_text": STATUS_TEXT.get(shipment.status, ""),
        "is_return": shipment.is_return,
        "parcel_count": shipment.parcel_count,
        "service_level": shipment.service_level,
        "promised_by": _iso(shipment.promised_by),
        "eta_window": eta_window(shipment),
        "is_delayed": bool(shipment.is_at_risk),
        "milestones": [m.as_dict() for m in milestones(shipment, legs)],
        "next_step": next_step(shipment, legs),
        "driver": driver_view(shipment, stop, now=now),
        "proof_of_delivery": proof_of_delivery(shipment, stop),
        "updated_at": shipment.updated_at.isoformat(),
    }


PUBLIC_KEYS = frozenset(
    {
        "reference",
        "status",
        "status_label",
        "status_text",
        "is_return",
        "parcel_count",
        "service_level",
        "promised_by",
        "eta_window",
        "is_delayed",
        "milestones",
        "next_step",
        "driver",
        "proof_of_delivery",
        "updated_at",
        "live",
    }
)
