"""Exceptions: raising, updating, clearing, acknowledging and resolving them.

An exception is keyed by its cause (e.g. "missed the 12:00 departure from
nce-dc"), so every shipment that cause puts at risk joins the same open
exception and a new estimate updates it rather than raising another. When the
last shipment leaves (the delay shrank), it resolves itself as recovered.

Every change is an event on each affected shipment (``exception.*``) and a
``exception.updated`` message to the dashboard.
"""

from __future__ import annotations

from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from shipments.errors import Conflict
from shipments.events import event_record
from shipments.models import Shipment
from shipments.outbox import DASHBOARD_GROUP, outbox_enqueue
from shipments.planning import next_cutoff

from .models import DeliveryException, ExceptionType, Severity, write_lock_take

AUTOMATIC_TYPES = (
    ExceptionType.MISSED_CUTOFF,
    ExceptionType.LATE_LINEHAUL,
    ExceptionType.LATE_DELIVERY,
)
UNRESOLVED = (DeliveryException.Status.OPEN, DeliveryException.Status.ACKNOWLEDGED)


def severity_for(lateness_seconds: int) -> str:
    if lateness_seconds > 4 * 3600:
        return Severity.CRITICAL
    if lateness_seconds > 3600:
        return Severity.HIGH
    return Severity.MEDIUM


def exception_summary(exception: DeliveryException) -> dict:
    """The dashboard's view of one exception (also the live message payload)."""
    return {
        "id": exception.pk,
        "key": exception.key,
        "type": exception.type,
        "type_label": ExceptionType(exception.type).label,
        "severity": exception.severity,
        "status": exception.status,
        "title": exception.title,
        "detail": exception.detail,
        "suggested_action": exception.suggested_action,
        "delay_seconds": exception.delay_seconds,
        "hub_id": exception.hub_id,
        "route_id": exception.route_id,
        "driver_id": exception.driver_id,
        "shipment_ids": sorted(exception.shipments.values_list("pk", flat=True)),
        "raised_at": exception.raised_at.isoformat(),
        "acknowledged_at": exception.acknowledged_at.isoformat() if exception.acknowledged_at else None,
        "resolved_at": exception.resolved_at.isoformat() if exception.resolved_at else None,
        "resolution": exception.resolution,
        "note": exception.note,
    }


def _announce(exception: DeliveryException) -> None:
    outbox_enqueue(
        type="exception.updated", groups=[DASHBOARD_GROUP], payload=exception_summary(exception)
    )


def _describe(*, cause: str, leg, shipment: Shipment, lateness_seconds: int) -> tuple[str, str, str]:
    """Title, detail and suggested action for a cause, in a dispatcher's words."""
    minutes = max(1, lateness_seconds // 60)
    if cause == ExceptionType.MISSED_CUTOFF and leg is not None and leg.from_hub_id:
        hub = leg.from_hub
        planned = timezone.localtime(leg.planned_departure)
        forecast = getattr(leg, "forecast", None)
        next_departure = (
            forecast.expected_departure if forecast and forecast.expected_departure else next_cutoff(hub, planned)
        )
        next_local = timezone.localtime(next_departure)
        return (
            f"First mile will miss the {planned:%H:%M} departure from {hub.name}",
            f"Parcels arrive at {hub.name} after the {planned:%H:%M} cut-off and move to the "
            f"{next_local:%a %H:%M} departure; promised deliveries are now about {minutes} min late.",
            f"Expedite the first-mile route or hold the {planned:%H:%M} line-haul; otherwise "
            f"book the {next_local:%H:%M} departure and tell the customers of the new ETA.",
        )
    if cause == ExceptionType.LATE_LINEHAUL and leg is not None:
        hub_name = leg.from_hub.name if leg.from_hub_id else "the hub"
        return (
            f"Late line-haul into {hub_name} delays last-mile deliveries",
            f"The middle-mile arrival at {hub_name} comes after the last-mile departure; "
            f"promised deliveries are now about {minutes} min late.",
            "Hold a last-mile van for the late trip or move these parcels to the next round; "
            "notify the customers.",
        )
    return (
        "Deliveries running late on their route",
        f"The route's ETAs are past the promised time by about {minutes} min.",
        "Re-sequence the route or hand stops to a nearby driver; notify the customers.",
    )


def _exception_get_or_create(*, key: str, defaults: dict) -> tuple[DeliveryException, bool]:
    existing = DeliveryException.objects.select_for_update().filter(key=key, status__in=UNRESOLVED).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            return DeliveryException.objects.create(key=key, **defaults), True
    except IntegrityError:  # raised concurrently for another shipment of the same cause
        return DeliveryException.objects.select_for_update().get(key=key, status__in=UNRESOLVED), False


def exception_sync_for_shipment(*, shipment: Shipment, outlook, now: datetime) -> DeliveryException | None:
    """Put a (locked) shipment in the exception for its cause, and out of any other.

    Runs in the caller's transaction. A cause a dispatcher resolved by hand is
    not raised again for the same key.
    """
    current = list(
        DeliveryException.objects.select_for_update()
        .filter(shipments=shipment, status__in=UNRESOLVED, type__in=AUTOMATIC_TYPES)
        .order_by("pk")
    )
    target: DeliveryException | None = None
    if outlook.is_at_risk and outlook.cause_key:
        muted = DeliveryException.objects.filter(
            key=outlook.cause_key, resolution=DeliveryException.Resolution.MANUAL
        ).exists()
        if not muted:
            leg = next((leg for leg in shipment.legs.select_related("from_hub", "to_hub") if leg.pk == outlook.cause_leg_id), None)
            title, detail, action = _describe(
                cause=outlook.cause, leg=leg, shipment=shipment, lateness_seconds=outlook.lateness_seconds
            )
            target, created = _exception_get_or_create(
                key=outlook.cause_key,
                defaults={
                    "type": outlook.cause,
                    "severity": severity_for(outlook.lateness_seconds),
                    "title": title,
                    "detail": detail,
                    "suggested_action": action,
                    "hub": leg.from_hub if leg is not None and leg.from_hub_id else None,
                    "delay_seconds": outlook.lateness_seconds,
                    "raised_at": now,
                },
            )
            joined = not target.shipments.filter(pk=shipment.pk).exists()
            if joined:
                target.shipments.add(shipment)
            worst = max(target.delay_seconds, outlook.lateness_seconds)
            changed = created or joined or worst != target.delay_seconds
            if changed:
                target.delay_seconds = worst
                target.severity = severity_for(worst)
                target.title, target.detail, target.suggested_action = title, detail, action
                target.save(update_fields=["delay_seconds", "severity", "title", "detail", "suggested_action", "updated_at"])
            if joined:
                event_record(
                    shipment=shipment,
                    type="exception.raised",
                    source="system",
                    payload={"exception_id": target.pk, "type": target.type, "severity": target.severity},
                )
            if changed:
                _announce(target)
    for exception in current:
        if target is not None and exception.pk == target.pk:
            continue
        _shipment_leaves(exception, shipment, now=now)
    return target


def _shipment_leaves(exception: DeliveryException, shipment: Shipment, *, now: datetime) -> None:
    exception.shipments.remove(shipment)
    event_record(
        shipment=shipment,
        type="exception.cleared",
        source="system",
        payload={"exception_id": exception.pk, "type": exception.type},
    )
    if not exception.shipments.exists():
        exception.status = DeliveryException.Status.RESOLVED
        exception.resolution = DeliveryException.Resolution.RECOVERED
        exception.resolved_at = now
        exception.save(update_fields=["status", "resolution", "resolved_at", "updated_at"])
    _announce(exception)


@transaction.atomic
def exception_acknowledge(*, exception_id: int, actor, note: str = "") -> DeliveryException:
    """A dispatcher has seen it and is on it; one event per affected shipment."""
    write_lock_take()
    exception = DeliveryException.objects.select_for_update().get(pk=exception_id)
    if exception.status != DeliveryException.Status.OPEN:
        raise Conflict(f"The exception is {exception.status}; only an open one can be acknowledged.")
    exception.status = DeliveryException.Status.ACKNOWLEDGED
    exception.acknowledged_at = timezone.now()
    exception.acknowledged_by = actor if getattr(actor, "is_authenticated", False) else None
    if note:
        exception.note = note
    exception.save(update_fields=["status", "acknowledged_at", "acknowledged_by", "note", "updated_at"])
    _record_for_shipments(exception, "exception.acknowledged", actor=actor, note=note)
    _announce(exception)
    return exception


@transaction.atomic
def exception_resolve(*, exception_id: int, actor, note: str = "") -> DeliveryException:
    """Closed by a dispatcher; its cause is not raised again automatically."""
    write_lock_take()
    exception = DeliveryException.objects.select_for_update().get(pk=exception_id)
    if exception.status == DeliveryException.Status.RESOLVED:
        raise Conflict("The exception is already resolved.")
    exception.status = DeliveryException.Status.RESOLVED
    exception.resolution = DeliveryException.Resolution.MANUAL
    exception.resolved_at = timezone.now()
    exception.resolved_by = actor if getattr(actor, "is_authenticated", False) else None
    if note:
        exception.note = note
    exception.save(
        update_fields=["status", "resolution", "resolved_at", "resolved_by", "note", "updated_at"]
    )
    _record_for_shipments(exception, "exception.resolved", actor=actor, note=note)
    _announce(exception)
    return exception


def _record_for_shipments(exception: DeliveryException, event_type: str, *, actor, note: str) -> None:
    # Lock shipments in id order (the services' order), then write their events.
    shipments = list(exception.shipments.select_for_update().order_by("pk"))
    for shipment in shipments:
        event_record(
            shipment=shipment,
            type=event_type,
            source="dashboard",
            actor=actor,
            payload={"exception_id": exception.pk, "type": exception.type, **({"note": note} if note else {})},
        )


def _remaining_shipment_ids(route_id: int) -> list[int]:
    from routing.models import RouteStop

    return sorted(
        set(
            RouteStop.objects.filter(route_id=route_id, status__in=["pending", "arrived"]).values_list(
                "legs__shipment_id", flat=True
            )
        )
        - {None}
    )


@transaction.atomic
def driver_silent_raise(*, driver_id: int, route_id: int, last_seen_at: datetime, now: datetime) -> DeliveryException:
    """No fix from a driver under way for N minutes."""
    write_lock_take()
    key = f"driver_silent:{driver_id}:{route_id}"
    silent_minutes = int((now - last_seen_at).total_seconds() // 60)
    exception, created = _exception_get_or_create(
        key=key,
        defaults={
            "type": ExceptionType.DRIVER_SILENT,
            "severity": Severity.MEDIUM,
            "title": "No position from a driver under way",
            "detail": f"Last fix {silent_minutes} min ago.",
            "suggested_action": "Call the driver; check the phone and the route.",
            "driver_id": driver_id,
            "route_id": route_id,
            "raised_at": now,
            "data": {"last_seen_at": last_seen_at.isoformat()},
        },
    )
    if created:
        exception.shipments.set(_remaining_shipment_ids(route_id))
        _announce(exception)
    else:
        exception.detail = f"Last fix {silent_minutes} min ago."
        exception.save(update_fields=["detail", "updated_at"])
    return exception


def driver_silent_clear(*, driver_id: int, route_id: int) -> int:
    """A fresh fix arrived: the driver is heard from again."""
    key = f"driver_silent:{driver_id}:{route_id}"
    if not DeliveryException.objects.filter(key=key, status__in=UNRESOLVED).exists():
        return 0  # the usual case, without taking any lock
    cleared = 0
    with transaction.atomic():
        write_lock_take()
        for exception in DeliveryException.objects.select_for_update().filter(
            key=key, status__in=UNRESOLVED
        ):
            exception.status = DeliveryException.Status.RESOLVED
            exception.resolution = DeliveryException.Resolution.RECOVERED
            exception.resolved_at = timezone.now()
            exception.save(update_fields=["status", "resolution", "resolved_at", "updated_at"])
            _announce(exception)
            cleared += 1
    return cleared
