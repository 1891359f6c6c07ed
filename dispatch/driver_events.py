"""Applying a batch of events from a driver's phone.

    batch ──▶ lock the driver (one batch of a driver at a time)
          ──▶ items already known by event_id or (device_id, seq): "duplicate",
              answered with the stored result
          ──▶ new items in device-sequence order, each in its own savepoint:
                route / stop looked up among the driver's own routes only
                ──▶ the rule for its type moves legs through ``leg_transition``
                    (shipment events + outbox), then the stop and the route
                ──▶ "applied", or "rejected" with a reason and the current state
          ──▶ one receipt per new item, applied or rejected (nothing dropped)
          ──▶ after commit: ``route_activity`` per route touched (ETA engine)

Rules only move things forward (a stop never goes back from completed, a leg
never from completed), so a late item cannot undo a later fact; it is stored
as rejected with the reason. One exception is deliberate: a delivery backed by
proof of delivery is a physical fact and wins over a plan change (a failure
reported earlier, a reassignment, a finished route); the dispatcher gets a
``DispatchConflict`` to look at.
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from routing.models import Route, RouteStop
from shipments.errors import DomainError
from shipments.events import event_record
from shipments.models import Leg, Parcel, Shipment
from shipments.outbox import driver_group
from shipments.services import leg_transition
from shipments.states import LEG_TRANSITIONS, InvalidTransition, LegStatus, Mile

from .failure_policy import NOT_ATTEMPTED, leg_failure_resolve
from .models import DispatchConflict, Driver, DriverEventReceipt, ProofOfDelivery
from .route_log import route_event_record
from .selectors import driver_route_current
from .signals import route_activity_send_on_commit

MAX_EVENTS_PER_BATCH = 500
EVENT_TYPES = (
    "route_started",
    "arrived",
    "scanned",
    "picked_up",
    "delivered",
    "delivery_failed",
    "departed",
    "hub_scan_in",
    "hub_scan_out",
    "route_finished",
)
FAILURE_REASONS = (
    "not_home",
    "refused",
    "address_not_found",
    "damaged",
    "access_denied",
    "business_closed",
    "no_safe_place",
    "wrong_address",
    "not_ready",  # pickup: the goods were not ready
    "vehicle_problem",
    "out_of_time",
)
# A device clock may run ahead; further than this is not a real time.
MAX_CLOCK_AHEAD = timedelta(hours=1)

STOP_CLOSED = (
    RouteStop.Status.COMPLETED,
    RouteStop.Status.FAILED,
    RouteStop.Status.SKIPPED,
)
LEG_BEFORE_PICKUP = (LegStatus.ASSIGNED,)
LEG_BEFORE_DELIVERY = (LegStatus.ASSIGNED, LegStatus.IN_TRANSIT, LegStatus.ARRIVED)
LEG_PICKED = (LegStatus.IN_TRANSIT, LegStatus.ARRIVED, LegStatus.COMPLETED)


@dataclass(frozen=True)
class DriverEventInput:
    event_id: uuid.UUID
    seq: int
    type: str
    occurred_at: datetime
    stop_id: int | None = None
    route_id: int | None = None
    barcode: str = ""
    reason: str = ""
    latitude: float | None = None
    longitude: float | None = None


@dataclass
class DriverEventResult:
    event_id: str
    status: str  # applied | duplicate | rejected
    reason: str = ""
    detail: str = ""
    current_state: dict[str, Any] | None = None
    original: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event_id": self.event_id, "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        if self.detail:
            out["detail"] = self.detail
        if self.current_state is not None:
            out["current_state"] = self.current_state
        if self.original is not None:
            out["original"] = self.original
        return out


class EventRejected(Exception):
    def __init__(self, reason: str, detail: str, *, current_state: dict | None = None):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.current_state = current_state


@dataclass
class _Batch:
    driver: Driver
    device_id: str
    actor: Any
    now: datetime
    routes: dict[int, Route] = field(default_factory=dict)
    touched: set[int] = field(default_factory=set)

    def route_lock(self, route_id: int) -> Route:
        # Route before shipment before leg: the order every service locks in.
        if route_id not in self.routes:
            self.routes[route_id] = Route.objects.select_for_update().get(pk=route_id)
        return self.routes[route_id]


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


@transaction.atomic
def driver_events_apply(
    *, driver_id: int, device_id: str, events: list[DriverEventInput], actor=None
) -> list[DriverEventResult]:
    """Apply a batch; one result per item, in the order the items were sent."""
    driver = Driver.objects.select_for_update().get(pk=driver_id)
    batch = _Batch(driver=driver, device_id=device_id, actor=actor, now=timezone.now())
    by_event = {
        r.event_id: r
        for r in DriverEventReceipt.objects.filter(
            driver=driver, event_id__in=[e.event_id for e in events]
        )
    }
    by_seq = {
        r.seq: r
        for r in DriverEventReceipt.objects.filter(
            driver=driver, device_id=device_id, seq__in=[e.seq for e in events]
        )
    }
    results: dict[int, DriverEventResult] = {}
    receipts: list[DriverEventReceipt] = []
    order = sorted(range(len(events)), key=lambda i: (events[i].seq, i))
    for index in order:
        item = events[index]
        known = by_event.get(item.event_id) or by_seq.get(item.seq)
        if known is not None:
            results[index] = _duplicate(item, known)
            continue
        receipt = _apply(batch, item)
        receipts.append(receipt)
        by_event[item.event_id] = receipt
        by_seq[item.seq] = receipt
        results[index] = DriverEventResult(
            event_id=str(item.event_id),
            status=receipt.status,
            reason=receipt.rejection_reason,
            detail=receipt.detail,
            current_state=receipt.current_state or None,
        )
    DriverEventReceipt.objects.bulk_create(receipts)
    if batch.touched:
        Route.objects.filter(pk__in=batch.touched).update(version=F("version") + 1)
        for route_id in sorted(batch.touched):
            route_activity_send_on_commit(route_id)
    return [results[i] for i in range(len(events))]


def _duplicate(item: DriverEventInput, known: DriverEventReceipt) -> DriverEventResult:
    same_event = known.event_id == item.event_id
    return DriverEventResult(
        event_id=str(item.event_id),
        status="duplicate",
        reason="" if same_event else "device_seq_already_used",
        detail=""
        if same_event
        else f"Sequence {item.seq} of this device was already used by event {known.event_id}.",
        current_state=known.current_state or None,
        original={
            "event_id": str(known.event_id),
            "status": known.status,
            **({"reason": known.rejection_reason} if known.rejection_reason else {}),
        },
    )


def _apply(batch: _Batch, item: DriverEventInput) -> DriverEventReceipt:
    receipt = DriverEventReceipt(
        driver=batch.driver,
        event_id=item.event_id,
        device_id=batch.device_id,
        seq=item.seq,
        type=item.type[:20],
        occurred_at=item.occurred_at,
        barcode=item.barcode[:64],
        failure_reason=item.reason[:30],
        latitude=item.latitude,
        longitude=item.longitude,
        status=DriverEventReceipt.Status.APPLIED,
    )
    route: Route | None = None
    stop: RouteStop | None = None
    try:
        # A savepoint per item: a rejected item leaves nothing half-written.
        with transaction.atomic():
            _check_shape(batch, item)
            route, stop = _resolve(batch, item)
            receipt.route_id = route.pk
            receipt.stop_id = stop.pk if stop else None
            state = RULES[item.type](batch, item, route, stop)
            batch.touched.add(route.pk)
            receipt.current_state = state or _state_of(route, stop)
    except EventRejected as exc:
        _reject(receipt, exc.reason, exc.detail, exc.current_state, route, stop)
    except InvalidTransition as exc:
        _reject(receipt, "invalid_transition", str(exc), None, route, stop)
    except DomainError as exc:
        _reject(receipt, exc.code, exc.message, None, route, stop)
    return receipt


def _reject(receipt, reason, detail, state, route, stop) -> None:
    receipt.status = DriverEventReceipt.Status.REJECTED
    receipt.rejection_reason = reason
    receipt.detail = detail[:300]
    if state is None and route is not None:
        route.refresh_from_db(fields=["status"])  # the savepoint rolled back
        if stop is not None:
            stop.refresh_from_db(fields=["status"])
        state = _state_of(route, stop)
    receipt.current_state = state or {}


def _check_shape(batch: _Batch, item: DriverEventInput) -> None:
    if item.type not in RULES:
        raise EventRejected(
            "unknown_type",
            f"Unknown event type '{item.type[:40]}'; expected one of {', '.join(EVENT_TYPES)}.",
        )
    if item.occurred_at > batch.now + MAX_CLOCK_AHEAD:
        raise EventRejected(
            "occurred_in_future", "occurred_at is too far in the future."
        )


def _resolve(batch: _Batch, item: DriverEventInput) -> tuple[Route, RouteStop | None]:
    """The item's route and stop, looked up among this driver's routes only."""
    stop = None
    if item.stop_id is not None:
        route_id = (
            RouteStop.objects.filter(pk=item.stop_id, route__driver=batch.driver)
            .values_list("route_id", flat=True)
            .first()
        )
        if route_id is None or (
            item.route_id is not None and item.route_id != route_id
        ):
            raise EventRejected("unknown_stop", "No such stop on your routes.")
        route = batch.route_lock(route_id)
        if route.driver_id != batch.driver.pk:
            raise EventRejected("unknown_stop", "No such stop on your routes.")
        stop = (
            RouteStop.objects.select_for_update(of=("self",))
            .select_related("hub")
            .get(pk=item.stop_id)
        )
    elif item.route_id is not None:
        if not Route.objects.filter(pk=item.route_id, driver=batch.driver).exists():
            raise EventRejected("unknown_route", "No such route of yours.")
        route = batch.route_lock(item.route_id)
    else:
        day = timezone.localdate(item.occurred_at)
        current = driver_route_current(driver_id=batch.driver.pk, service_date=day)
        if current is None and day != timezone.localdate(batch.now):
            current = driver_route_current(driver_id=batch.driver.pk)
        if current is None:
            raise EventRejected(
                "no_active_route", "You have no published route for that day."
            )
        route = batch.route_lock(current.pk)
    if route.status in (Route.Status.DRAFT, Route.Status.CANCELLED):
        raise EventRejected(
            "route_not_published",
            f"The route is {route.status}.",
            current_state={"route": {"id": route.pk, "status": route.status}},
        )
    return route, stop


def _state_of(route: Route, stop: RouteStop | None) -> dict[str, Any]:
    state: dict[str, Any] = {"route": {"id": route.pk, "status": route.status}}
    if stop is not None:
        state["stop"] = {"id": stop.pk, "status": stop.status}
        state["legs"] = [
            {"id": leg_id, "status": status}
            for leg_id, status in stop.legs.order_by("id").values_list("id", "status")
        ]
    return state


# ---------------------------------------------------------------------------
# Moving legs, stops and routes
# ---------------------------------------------------------------------------


def leg_path(current: str, target: str) -> list[str] | None:
    """The shortest forward path of leg states from ``current`` to ``target``
    (excluding ``current``); None when there is none. Never passes through
    ``cancelled``, and through ``failed`` only when it is the target."""
    if current == target:
        return []
    queue: deque[tuple[str, list[str]]] = deque([(current, [])])
    seen = {current}
    while queue:
        state, path = queue.popleft()
        for nxt in sorted(LEG_TRANSITIONS[state]):
            if nxt in seen or nxt == LegStatus.CANCELLED:
                continue
            if nxt == LegStatus.FAILED and target != LegStatus.FAILED:
                continue
            if state == LegStatus.ASSIGNED and nxt == LegStatus.PLANNED:
                continue  # that would be un-assigning, never implied by a driver
            if nxt == target:
                return [*path, nxt]
            seen.add(nxt)
            queue.append((nxt, [*path, nxt]))
    return None


def _leg_advance(
    batch: _Batch,
    item: DriverEventInput,
    leg: Leg,
    target: str,
    *,
    route: Route,
    stop: RouteStop | None,
    reason: str = "",
) -> list[str]:
    """Walk one leg to ``target`` through every state in between (each step is
    one leg transition, hence one shipment event)."""
    path = leg_path(leg.status, target)
    if path is None:
        raise InvalidTransition(
            entity="leg",
            current=leg.status,
            target=target,
            allowed=LEG_TRANSITIONS[leg.status],
        )
    for step in path:
        leg_transition(
            leg_id=leg.pk,
            to=step,
            source="driver",
            actor=batch.actor,
            occurred_at=item.occurred_at,
            reason=reason if step == target else "",
            latitude=item.latitude,
            longitude=item.longitude,
            payload={
                "driver_event_id": str(item.event_id),
                "driver_event_type": item.type,
                "route_id": route.pk,
                "stop_id": stop.pk if stop else None,
                **({"implied": True} if step != target else {}),
            },
            extra_groups=[driver_group(batch.driver.pk)],
        )
    leg.status = target
    return path


def _route_begin(batch: _Batch, item: DriverEventInput, route: Route) -> None:
    """Any applied stop event means the route is under way."""
    if route.status != Route.Status.PUBLISHED:
        return
    route.status = Route.Status.IN_PROGRESS
    route.save(update_fields=["status", "updated_at"])
    if route.mile != Mile.MIDDLE:
        # The van has left its depot: the opening hub stop is behind it. (On a
        # trip the first hub stop is real work: loading, then the scan out.)
        first = route.stops.order_by("sequence").first()
        if (
            first is not None
            and first.kind == RouteStop.Kind.HUB
            and first.status == "pending"
        ):
            first.status = RouteStop.Status.COMPLETED
            first.actual_departure = item.occurred_at
            first.save(update_fields=["status", "actual_departure"])
    route_event_record(
        route=route,
        type="route.started",
        source="driver",
        actor=batch.actor,
        occurred_at=item.occurred_at,
        payload={
            "driver_event_id": str(item.event_id),
            "implied": item.type != "route_started",
        },
    )


def _stop_legs(stop: RouteStop, barcode: str, route: Route) -> list[Leg]:
    legs = list(stop.legs.exclude(status=LegStatus.CANCELLED).order_by("id"))
    if not barcode:
        return legs
    shipment_id = _barcode_shipment(barcode)
    chosen = [leg for leg in legs if leg.shipment_id == shipment_id]
    if not chosen:
        _barcode_reject(barcode, shipment_id, route, stop)
    return chosen


def _barcode_shipment(barcode: str) -> int | None:
    return (
        Parcel.objects.filter(barcode=barcode)
        .values_list("shipment_id", flat=True)
        .first()
    )


def _barcode_reject(barcode: str, shipment_id: int | None, route: Route, stop) -> None:
    if shipment_id is None:
        raise EventRejected(
            "unknown_barcode", f"No parcel has the barcode '{barcode[:64]}'."
        )
    on_route = Leg.objects.filter(
        shipment_id=shipment_id, route_stops__route=route
    ).exists()
    if on_route and stop is not None:
        raise EventRejected(
            "barcode_not_on_stop", "This parcel is on your route but not at this stop."
        )
    raise EventRejected("barcode_not_on_route", "This parcel is not on your route.")


def _stop_arrive(stop: RouteStop, at: datetime) -> None:
    if stop.status == RouteStop.Status.PENDING:
        stop.status = RouteStop.Status.ARRIVED
    if stop.actual_arrival is None or at < stop.actual_arrival:
        stop.actual_arrival = at


def _stop_settle(
    stop: RouteStop, *, ignore: set[int] | frozenset[int] = frozenset()
) -> None:
    """A served stop's outcome from its legs (except those in ``ignore``):
    completed when at least one leg succeeded, failed when none did; unchanged
    while a leg is still to do."""
    statuses = list(
        stop.legs.exclude(status=LegStatus.CANCELLED)
        .exclude(pk__in=ignore)
        .values_list("status", flat=True)
    )
    if stop.kind == RouteStop.Kind.PICKUP:
        open_, success = LEG_BEFORE_PICKUP, LEG_PICKED
    else:
        open_, success = LEG_BEFORE_DELIVERY, (LegStatus.COMPLETED,)
    if any(status in open_ for status in statuses):
        return
    ok = any(status in success for status in statuses)
    stop.status = RouteStop.Status.COMPLETED if ok else RouteStop.Status.FAILED


def _require_stop(
    item: DriverEventInput, stop: RouteStop | None, *kinds: str
) -> RouteStop:
    if stop is None:
        raise EventRejected("stop_required", f"A {item.type} event needs a stop_id.")
    if kinds and stop.kind not in kinds:
        raise EventRejected(
            "wrong_stop_kind",
            f"A {item.type} event cannot happen at a {stop.kind} stop.",
        )
    return stop


def _require_open(route: Route, stop: RouteStop) -> None:
    if stop.status in STOP_CLOSED:
        raise EventRejected(
            f"stop_already_{stop.status}",
            f"The stop is already {stop.status}.",
            current_state=_state_of(route, stop),
        )


def _conflict(route, stop, kind, detail, payload) -> None:
    DispatchConflict.objects.create(
        route=route, stop=stop, kind=kind, detail=detail[:300], payload=payload
    )


# ---------------------------------------------------------------------------
# One rule per event type
# ---------------------------------------------------------------------------


def _on_route_started(batch, item, route, stop):
    if route.status == Route.Status.COMPLETED:
        raise EventRejected("route_already_finished", "The route is already finished.")
    _route_begin(batch, item, route)
    # Goods for the deliveries were loaded at the hub: they are out for delivery.
    loaded = Leg.objects.filter(
        route_stops__route=route,
        route_stops__kind=RouteStop.Kind.DELIVERY,
        route_stops__status__in=(RouteStop.Status.PENDING, RouteStop.Status.ARRIVED),
        status=LegStatus.ASSIGNED,
        from_hub_id=route.hub_id,
    ).distinct()
    for leg in loaded.order_by("id"):
        _leg_advance(batch, item, leg, LegStatus.IN_TRANSIT, route=route, stop=None)


def _on_arrived(batch, item, route, stop):
    stop = _require_stop(item, stop)
    _require_open(route, stop)
    _route_begin(batch, item, route)
    _stop_arrive(stop, item.occurred_at)
    stop.save(update_fields=["status", "actual_arrival"])
    if stop.kind == RouteStop.Kind.DELIVERY:
        for leg in _stop_legs(stop, "", route):
            if leg.status in (LegStatus.ASSIGNED, LegStatus.IN_TRANSIT):
                _leg_advance(
                    batch, item, leg, LegStatus.ARRIVED, route=route, stop=stop
                )


def _on_scanned(batch, item, route, stop):
    if not item.barcode:
        raise EventRejected("barcode_required", "A scanned event needs a barcode.")
    shipment_id = _barcode_shipment(item.barcode)
    legs = Leg.objects.filter(shipment_id=shipment_id, route_stops__route=route)
    if stop is not None:
        legs = legs.filter(route_stops=stop)
    leg = legs.order_by("id").first() if shipment_id is not None else None
    if leg is None:
        _barcode_reject(item.barcode, shipment_id, route, stop)
    event_record(
        shipment=Shipment.objects.get(pk=shipment_id),
        leg=leg,
        type="parcel.scanned",
        source="driver",
        actor=batch.actor,
        occurred_at=item.occurred_at,
        latitude=item.latitude,
        longitude=item.longitude,
        payload={
            "barcode": item.barcode,
            "route_id": route.pk,
            "stop_id": stop.pk if stop else None,
            "driver_event_id": str(item.event_id),
        },
        extra_groups=[driver_group(batch.driver.pk)],
    )


def _on_picked_up(batch, item, route, stop):
    stop = _require_stop(item, stop, RouteStop.Kind.PICKUP)
    _require_open(route, stop)
    legs = [
        leg
        for leg in _stop_legs(stop, item.barcode, route)
        if leg.status in LEG_BEFORE_PICKUP
    ]
    if not legs:
        raise EventRejected(
            "nothing_to_pick_up",
            "Every parcel of this stop is already handled.",
            current_state=_state_of(route, stop),
        )
    _route_begin(batch, item, route)
    for leg in legs:
        _leg_advance(batch, item, leg, LegStatus.IN_TRANSIT, route=route, stop=stop)
    _stop_arrive(stop, item.occurred_at)
    _stop_settle(stop)
    stop.save(update_fields=["status", "actual_arrival"])


def pod_missing(stop: RouteStop) -> list[str]:
    """Required proof items not yet uploaded for the stop."""
    if not stop.requires:
        return []
    have: set[str] = set()
    for photo, signature, name in ProofOfDelivery.objects.filter(stop=stop).values_list(
        "photo", "signature", "recipient_name"
    ):
        if photo:
            have.add("photo")
        if signature:
            have.add("signature")
        if name:
            have.add("recipient_name")
    return [item for item in stop.requires if item not in have]


def _on_delivered(batch, item, route, stop):
    stop = _require_stop(item, stop, RouteStop.Kind.DELIVERY)
    if stop.status == RouteStop.Status.COMPLETED:
        raise EventRejected(
            "stop_already_completed",
            "The stop is already completed.",
            current_state=_state_of(route, stop),
        )
    missing = pod_missing(stop)
    if missing:
        raise EventRejected(
            "pod_missing",
            f"Upload the proof of delivery first: {', '.join(missing)} required.",
            current_state={**_state_of(route, stop), "missing": missing},
        )
    legs = [
        leg
        for leg in _stop_legs(stop, item.barcode, route)
        if leg.status not in (LegStatus.COMPLETED, LegStatus.CANCELLED)
    ]
    if not legs:
        raise EventRejected(
            "nothing_to_deliver",
            "Every parcel of this stop is already handled.",
            current_state=_state_of(route, stop),
        )
    overridden = _delivery_overrides(route, stop, legs)
    _route_begin(batch, item, route)
    for leg in legs:
        _leg_advance(batch, item, leg, LegStatus.COMPLETED, route=route, stop=stop)
    _stop_arrive(stop, item.occurred_at)
    if stop.status in (RouteStop.Status.FAILED, RouteStop.Status.SKIPPED):
        stop.status = RouteStop.Status.ARRIVED  # the physical fact wins; settled below
    _stop_settle(stop)
    stop.save(update_fields=["status", "actual_arrival"])
    for kind, detail in overridden:
        _conflict(
            route,
            stop,
            kind,
            detail,
            {
                "driver_event_id": str(item.event_id),
                "leg_ids": [leg.pk for leg in legs],
            },
        )


def _delivery_overrides(
    route: Route, stop: RouteStop, legs: list[Leg]
) -> list[tuple[str, str]]:
    """Plan changes a delivery is about to override (each becomes a conflict)."""
    out = []
    if stop.status == RouteStop.Status.FAILED or any(
        leg.status == LegStatus.FAILED for leg in legs
    ):
        out.append(
            (
                DispatchConflict.Kind.DELIVERED_AFTER_FAILURE,
                "Delivered (with proof) after a failed attempt was reported.",
            )
        )
    moved = (
        getattr(stop, "reassigned_to", None)
        if stop.status == RouteStop.Status.SKIPPED
        else None
    )
    if moved is not None:
        new_stop = RouteStop.objects.select_for_update().get(pk=moved.to_stop_id)
        if new_stop.status not in STOP_CLOSED:
            new_stop.status = RouteStop.Status.SKIPPED
            new_stop.save(update_fields=["status"])
            Route.objects.filter(pk=new_stop.route_id).update(version=F("version") + 1)
        out.append(
            (
                DispatchConflict.Kind.DELIVERED_AFTER_REASSIGNMENT,
                f"Delivered by the original driver after the stop moved to route {new_stop.route_id}.",
            )
        )
    elif route.status == Route.Status.COMPLETED:
        out.append(
            (
                DispatchConflict.Kind.DELIVERED_AFTER_ROUTE_FINISHED,
                "Delivered after the route was reported finished.",
            )
        )
    return out


def _on_delivery_failed(batch, item, route, stop):
    stop = _require_stop(item, stop, RouteStop.Kind.DELIVERY, RouteStop.Kind.PICKUP)
    if item.reason not in FAILURE_REASONS:
        raise EventRejected(
            "invalid_failure_reason",
            f"reason must be one of {', '.join(FAILURE_REASONS)}.",
        )
    if _skipped_by_route_finish(route, stop):
        return _fail_after_route_finished(batch, item, route, stop)
    _require_open(route, stop)
    before = (
        LEG_BEFORE_PICKUP if stop.kind == RouteStop.Kind.PICKUP else LEG_BEFORE_DELIVERY
    )
    legs = [
        leg for leg in _stop_legs(stop, item.barcode, route) if leg.status in before
    ]
    if not legs:
        raise EventRejected(
            "nothing_to_fail",
            "Every parcel of this stop is already handled.",
            current_state=_state_of(route, stop),
        )
    _route_begin(batch, item, route)
    decisions = _legs_fail(batch, item, route, stop, legs)
    _stop_arrive(stop, item.occurred_at)
    _stop_settle(stop)
    stop.save(update_fields=["status", "actual_arrival"])
    return {**_state_of(route, stop), "policy": decisions}


def _legs_fail(batch, item, route, stop, legs: list[Leg]) -> list[dict[str, Any]]:
    """Each leg to ``failed`` with the item's reason, then the failure policy."""
    decisions = []
    for leg in legs:
        _leg_advance(
            batch,
            item,
            leg,
            LegStatus.FAILED,
            route=route,
            stop=stop,
            reason=item.reason,
        )
        decisions.append(
            {
                "leg_id": leg.pk,
                **leg_failure_resolve(
                    leg_id=leg.pk,
                    route=route,
                    reason=item.reason,
                    actor=batch.actor,
                    occurred_at=item.occurred_at,
                    extra_groups=[driver_group(batch.driver.pk)],
                ),
            }
        )
    return decisions


def _skipped_by_route_finish(route: Route, stop: RouteStop) -> bool:
    """Skipped because the driver finished the route (not moved by a dispatcher)."""
    return (
        stop.status == RouteStop.Status.SKIPPED
        and route.status == Route.Status.COMPLETED
        and getattr(stop, "reassigned_to", None) is None
    )


def _fail_after_route_finished(batch, item, route, stop):
    """A failed attempt that reaches the server after ``route_finished``.

    The phone may upload its queue out of order, so the finish can overtake an
    attempt made before it. The attempt's outcome beats the finish's "skipped"
    whatever the arrival order: the stop ends failed, and the legs the finish
    gave back to the pool are failed now and go through the failure policy, as
    they would have had the items arrived in device order. Legs a dispatcher
    has put on another stop since are left to that plan.
    """
    own = _stop_legs(stop, item.barcode, route)
    held = _legs_held_elsewhere(stop)
    legs = [
        leg for leg in own if leg.status == LegStatus.PLANNED and leg.pk not in held
    ]
    if not legs and all(leg.pk not in held for leg in own):
        raise EventRejected(
            "nothing_to_fail",
            "Every parcel of this stop is already handled.",
            current_state=_state_of(route, stop),
        )
    decisions = _legs_fail(batch, item, route, stop, legs)
    _stop_arrive(stop, item.occurred_at)
    stop.status = RouteStop.Status.ARRIVED  # reopened for its outcome, settled below
    _stop_settle(stop, ignore=held)
    stop.save(update_fields=["status", "actual_arrival"])
    return {**_state_of(route, stop), "policy": decisions}


def _legs_held_elsewhere(stop: RouteStop) -> set[int]:
    """The stop's legs that another stop, still live or done, holds now."""
    elsewhere = RouteStop.objects.exclude(pk=stop.pk).exclude(
        status__in=(RouteStop.Status.SKIPPED, RouteStop.Status.FAILED)
    )
    # From Leg, not stop.legs: the related manager would reuse its own join.
    return set(
        Leg.objects.filter(
            pk__in=stop.legs.values("pk"), route_stops__in=elsewhere
        ).values_list("pk", flat=True)
    )


def _on_departed(batch, item, route, stop):
    stop = _require_stop(item, stop)
    _route_begin(batch, item, route)
    _stop_arrive(stop, item.occurred_at)
    if stop.actual_departure is None or item.occurred_at > stop.actual_departure:
        stop.actual_departure = item.occurred_at
    if stop.kind == RouteStop.Kind.HUB and stop.status == RouteStop.Status.ARRIVED:
        stop.status = RouteStop.Status.COMPLETED
    stop.save(update_fields=["status", "actual_arrival", "actual_departure"])


def _hub_of(route: Route, stop: RouteStop | None, item) -> int:
    if stop is None:
        return route.hub_id
    if stop.kind != RouteStop.Kind.HUB:
        raise EventRejected("wrong_stop_kind", f"A {item.type} event needs a hub stop.")
    return stop.hub_id


def _route_legs_live(route: Route):
    """Legs of the route on stops still served (not failed or moved away)."""
    return (
        Leg.objects.filter(
            route_stops__route=route,
        )
        .exclude(
            route_stops__status__in=(RouteStop.Status.FAILED, RouteStop.Status.SKIPPED)
        )
        .distinct()
    )


def _on_hub_scan_out(batch, item, route, stop):
    hub_id = _hub_of(route, stop, item)
    legs = _route_legs_live(route).filter(from_hub_id=hub_id, status=LegStatus.ASSIGNED)
    if item.barcode:
        shipment_id = _barcode_shipment(item.barcode)
        legs = legs.filter(shipment_id=shipment_id)
        if not legs.exists():
            _barcode_reject(item.barcode, shipment_id, route, None)
    _route_begin(batch, item, route)
    moved = 0
    for leg in legs.order_by("id"):
        _leg_advance(batch, item, leg, LegStatus.IN_TRANSIT, route=route, stop=stop)
        moved += 1
    if stop is not None:
        _stop_arrive(stop, item.occurred_at)
        stop.save(update_fields=["status", "actual_arrival"])
    return {**_state_of(route, stop), "legs_moved": moved}


def _on_hub_scan_in(batch, item, route, stop):
    hub_id = _hub_of(route, stop, item)
    legs = _route_legs_live(route).filter(to_hub_id=hub_id)
    if item.barcode:
        shipment_id = _barcode_shipment(item.barcode)
        legs = legs.filter(shipment_id=shipment_id).exclude(
            status__in=(LegStatus.COMPLETED, LegStatus.CANCELLED, LegStatus.FAILED)
        )
        if not legs.exists():
            _barcode_reject(item.barcode, shipment_id, route, None)
    else:
        moving = [LegStatus.IN_TRANSIT, LegStatus.ARRIVED]
        if hasattr(route, "trip"):
            # Everything consolidated on a trip travels with it.
            moving.append(LegStatus.ASSIGNED)
        legs = legs.filter(status__in=moving)
    _route_begin(batch, item, route)
    moved = 0
    for leg in legs.order_by("id"):
        _leg_advance(batch, item, leg, LegStatus.COMPLETED, route=route, stop=stop)
        moved += 1
    if stop is not None:
        _stop_arrive(stop, item.occurred_at)
        stop.status = RouteStop.Status.COMPLETED
        stop.save(update_fields=["status", "actual_arrival"])
    return {**_state_of(route, stop), "legs_moved": moved}


def _on_route_finished(batch, item, route, stop):
    if route.status == Route.Status.COMPLETED:
        raise EventRejected("route_already_finished", "The route is already finished.")
    _route_begin(batch, item, route)
    unserved = list(
        route.stops.select_for_update()
        .filter(status__in=(RouteStop.Status.PENDING, RouteStop.Status.ARRIVED))
        .order_by("sequence")
    )
    skipped = []
    for unserved_stop in unserved:
        # A hub stop's legs travel with the trip; only pickup and delivery stops give theirs back.
        legs = (
            []
            if unserved_stop.kind == RouteStop.Kind.HUB
            else unserved_stop.legs.exclude(status=LegStatus.CANCELLED).order_by("id")
        )
        for leg in legs:
            if leg.status == LegStatus.ASSIGNED:
                # Never touched: back to the pool for a later route.
                leg_transition(
                    leg_id=leg.pk,
                    to=LegStatus.PLANNED,
                    source="driver",
                    actor=batch.actor,
                    occurred_at=item.occurred_at,
                    reason="route finished without this stop",
                    payload={"route_id": route.pk, "stop_id": unserved_stop.pk},
                    extra_groups=[driver_group(batch.driver.pk)],
                )
            elif leg.status in (LegStatus.IN_TRANSIT, LegStatus.ARRIVED):
                # Loaded but never attempted: it rides back to the hub.
                _leg_advance(
                    batch,
                    item,
                    leg,
                    LegStatus.FAILED,
                    route=route,
                    stop=unserved_stop,
                    reason=NOT_ATTEMPTED,
                )
                # The move to failed counted an attempt; there was none. Counting
                # it would bring a return closer, and a real failure reported late
                # for this stop (counted then) would count twice.
                Leg.objects.filter(pk=leg.pk).update(
                    attempt_count=F("attempt_count") - 1
                )
                leg_failure_resolve(
                    leg_id=leg.pk,
                    route=route,
                    reason=NOT_ATTEMPTED,
                    actor=batch.actor,
                    occurred_at=item.occurred_at,
                    extra_groups=[driver_group(batch.driver.pk)],
                )
        unserved_stop.status = RouteStop.Status.SKIPPED
        unserved_stop.save(update_fields=["status"])
        skipped.append(unserved_stop.pk)
    route.status = Route.Status.COMPLETED
    route.save(update_fields=["status", "updated_at"])
    route_event_record(
        route=route,
        type="route.finished",
        source="driver",
        actor=batch.actor,
        occurred_at=item.occurred_at,
        payload={"driver_event_id": str(item.event_id), "skipped_stop_ids": skipped},
    )
    return {
        "route": {"id": route.pk, "status": route.status},
        "skipped_stop_ids": skipped,
    }


RULES = {
    "route_started": _on_route_started,
    "arrived": _on_arrived,
    "scanned": _on_scanned,
    "picked_up": _on_picked_up,
    "delivered": _on_delivered,
    "delivery_failed": _on_delivery_failed,
    "departed": _on_departed,
    "hub_scan_in": _on_hub_scan_in,
    "hub_scan_out": _on_hub_scan_out,
    "route_finished": _on_route_finished,
}
