"""Delay propagation down a shipment's leg chain.

    first mile ──(ETA at hub + handling)──▶ middle-mile cut-off
        ready after the cut-off?  the middle leg moves to the next departure
    middle mile ──(ETA at hub + handling)──▶ last-mile route departure
        ready after it?  the last-mile leg shifts by the difference
    last mile ETA > promised_by?  the shipment is at risk: one exception per
        cause (the missed departure, the late line-haul, the late route) lists
        every shipment it puts at risk; when the delay shrinks, it clears

Legs keep their planned times; ``LegForecast`` holds where each leg now stands
and ``Leg.eta`` its expected arrival.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from routing.models import Route
from shipments.events import event_record
from shipments.models import Leg, Shipment
from shipments.planning import next_cutoff
from shipments.states import SHIPMENT_TERMINAL, LegStatus, Mile

from .models import ExceptionType, LegForecast, write_lock_take

ACTIVE_ROUTE_STATUSES = (Route.Status.PUBLISHED, Route.Status.IN_PROGRESS)
# A shipment's ETA change smaller than this is not worth an event.
SHIPMENT_ETA_EVENT_MIN_MOVE = timedelta(minutes=5)
UNDER_WAY = (LegStatus.IN_TRANSIT, LegStatus.ARRIVED)


@dataclass(frozen=True)
class LegOutlook:
    leg_id: int
    expected_departure: datetime | None
    expected_arrival: datetime | None
    missed_cutoff: bool
    shifted: bool  # leaves later than planned because the leg before it is late


@dataclass(frozen=True)
class ChainOutlook:
    legs: list[LegOutlook]
    final_eta: datetime | None
    is_at_risk: bool
    lateness_seconds: int  # final ETA minus the promise (negative: ahead)
    cause: str  # an ExceptionType, or "" when on time
    cause_leg_id: int | None
    cause_key: str


def _handling(leg: Leg) -> timedelta:
    return timedelta(minutes=leg.to_hub.handling_minutes) if leg.to_hub_id and leg.to_hub else timedelta()


def chain_outlook(
    *, shipment: Shipment, legs: list[Leg], leg_etas: dict[int, datetime], on_route: set[int]
) -> ChainOutlook:
    """Where each leg of the chain now stands; a pure function of its inputs.

    ``leg_etas`` are fresh ETAs from routes under way; ``on_route`` the legs on
    a published route (their ETA comes from that route unless the parcel will
    not be at the hub in time for it).
    """
    outlooks: list[LegOutlook] = []
    ready: datetime | None = None
    cause, cause_leg, cause_key = "", None, ""
    for leg in legs:
        if leg.status == LegStatus.CANCELLED:
            continue
        if leg.status == LegStatus.COMPLETED:
            arrival = leg.actual_arrival or leg.eta or leg.planned_arrival
            outlooks.append(LegOutlook(leg.pk, leg.actual_departure, arrival, False, False))
            ready = arrival + _handling(leg) if arrival else None
            continue
        planned_departure = leg.planned_departure
        planned_arrival = leg.planned_arrival
        route_eta = leg_etas.get(leg.pk, leg.eta if leg.pk in on_route else None)
        if leg.status in UNDER_WAY or leg.status == LegStatus.FAILED:
            arrival = route_eta or leg.eta or planned_arrival
            outlooks.append(LegOutlook(leg.pk, leg.actual_departure, arrival, False, False))
            ready = arrival + _handling(leg) if arrival else None
            continue
        if planned_departure is None or planned_arrival is None:
            arrival = route_eta or leg.eta
            outlooks.append(LegOutlook(leg.pk, None, arrival, False, False))
            ready = arrival + _handling(leg) if arrival else None
            continue
        duration = planned_arrival - planned_departure
        missed = shifted = False
        if ready is not None and ready > planned_departure:
            if leg.mile == Mile.MIDDLE and leg.from_hub_id:
                departure = next_cutoff(leg.from_hub, ready)
                missed = True
                if not cause:
                    cause, cause_leg = ExceptionType.MISSED_CUTOFF, leg.pk
                    cause_key = (
                        f"missed_cutoff:{leg.from_hub_id}:"
                        f"{timezone.localtime(planned_departure):%Y%m%dT%H%M}"
                    )
            else:
                departure = ready
                shifted = True
                if not cause:
                    upstream_middle = any(o.expected_arrival and _is_middle(legs, o.leg_id) for o in outlooks)
                    cause = ExceptionType.LATE_LINEHAUL if upstream_middle else ExceptionType.LATE_DELIVERY
                    cause_leg = leg.pk
                    cause_key = (
                        f"{cause}:{leg.from_hub_id or 0}:"
                        f"{timezone.localtime(planned_departure):%Y%m%dT%H%M}"
                    )
            arrival = departure + duration
        else:
            departure = planned_departure
            arrival = route_eta or planned_arrival
        outlooks.append(LegOutlook(leg.pk, departure, arrival, missed, shifted))
        ready = arrival + _handling(leg)

    final_eta = next((o.expected_arrival for o in reversed(outlooks) if o.expected_arrival), None)
    promise = shipment.promised_by
    lateness = int((final_eta - promise).total_seconds()) if final_eta and promise else 0
    at_risk = bool(final_eta and promise and final_eta > promise)
    if at_risk and not cause:
        # Late on the route itself: the last-mile route's own delay.
        last = next((leg for leg in reversed(legs) if leg.status != LegStatus.CANCELLED), None)
        cause, cause_leg = ExceptionType.LATE_DELIVERY, last.pk if last else None
        route_id = _route_of(last) if last else None
        cause_key = f"late_delivery:route:{route_id}" if route_id else f"late_delivery:shipment:{shipment.pk}"
    if not at_risk:
        cause, cause_leg, cause_key = "", None, ""
    return ChainOutlook(outlooks, final_eta, at_risk, lateness, cause, cause_leg, cause_key)


def _is_middle(legs: list[Leg], leg_id: int) -> bool:
    return any(leg.pk == leg_id and leg.mile == Mile.MIDDLE for leg in legs)


def _route_of(leg: Leg) -> int | None:
    return (
        Route.objects.filter(stops__legs=leg, status__in=ACTIVE_ROUTE_STATUSES)
        .order_by("-service_date")
        .values_list("pk", flat=True)
        .first()
    )


def shipment_forecast_refresh(
    *, shipment_id: int, leg_etas: dict[int, datetime] | None = None, now: datetime | None = None
) -> ChainOutlook | None:
    """Propagate fresh leg ETAs down the chain of one shipment, in one transaction.

    Locks the shipment, then writes its legs' ETAs and forecasts, its ETA and
    at-risk flag (one event when the flag flips or the ETA moves ≥ 5 min), and
    moves it into or out of the exception for its cause.
    """
    from .exceptions import exception_sync_for_shipment

    leg_etas = leg_etas or {}
    with transaction.atomic():
        write_lock_take()
        shipment = Shipment.objects.select_for_update().filter(pk=shipment_id).first()
        if shipment is None or shipment.status in SHIPMENT_TERMINAL:
            return None
        legs = list(
            shipment.legs.select_related("from_hub", "to_hub").order_by("sequence")
        )
        on_route = set(
            Leg.objects.filter(
                pk__in=[leg.pk for leg in legs], route_stops__route__status__in=ACTIVE_ROUTE_STATUSES
            ).values_list("pk", flat=True)
        )
        outlook = chain_outlook(shipment=shipment, legs=legs, leg_etas=leg_etas, on_route=on_route)
        was_at_risk = bool(shipment.is_at_risk)
        _legs_save(legs, outlook)
        _shipment_save(shipment, outlook)
        # A shipment in an automatic exception is always flagged at risk: one
        # neither flagged before nor now has no exception to join or leave.
        if was_at_risk or outlook.is_at_risk:
            exception_sync_for_shipment(shipment=shipment, outlook=outlook, now=now or timezone.now())
    return outlook


def _legs_save(legs: list[Leg], outlook: ChainOutlook) -> None:
    by_id = {leg.pk: leg for leg in legs}
    for item in outlook.legs:
        leg = by_id[item.leg_id]
        if item.expected_arrival and leg.eta != item.expected_arrival:
            Leg.objects.filter(pk=leg.pk).update(eta=item.expected_arrival)
            leg.eta = item.expected_arrival
        if leg.status in (LegStatus.PLANNED, LegStatus.ASSIGNED):
            delay = (
                int((item.expected_arrival - leg.planned_arrival).total_seconds())
                if item.expected_arrival and leg.planned_arrival
                else 0
            )
            LegForecast.objects.update_or_create(
                leg=leg,
                defaults={
                    "expected_departure": item.expected_departure,
                    "expected_arrival": item.expected_arrival,
                    "missed_cutoff": item.missed_cutoff,
                    "delay_seconds": delay,
                },
            )


def _shipment_save(shipment: Shipment, outlook: ChainOutlook) -> None:
    """Set the shipment's ETA and risk flag; an event when either changes enough."""
    eta = outlook.final_eta
    flipped = bool(shipment.is_at_risk) != outlook.is_at_risk
    moved = (
        eta is not None
        and (shipment.eta is None or abs(shipment.eta - eta) >= SHIPMENT_ETA_EVENT_MIN_MOVE)
    )
    if eta is not None and shipment.eta != eta:
        shipment.eta = eta
    if not flipped and not moved:
        Shipment.objects.filter(pk=shipment.pk).update(eta=shipment.eta)
        return
    shipment.is_at_risk = outlook.is_at_risk
    shipment.save(update_fields=["eta", "is_at_risk", "updated_at"])
    if flipped:
        event_type = "shipment.at_risk" if outlook.is_at_risk else "shipment.recovered"
    else:
        event_type = "eta.updated"
    event_record(
        shipment=shipment,
        type=event_type,
        source="system",
        payload={
            "eta": eta.isoformat() if eta else None,
            "promised_by": shipment.promised_by.isoformat() if shipment.promised_by else None,
            "lateness_seconds": outlook.lateness_seconds,
            **({"cause": outlook.cause} if outlook.cause else {}),
        },
    )
