"""The day's figures: shipments by mile and status, on-time, first attempt,
ETA accuracy, open exceptions. Each is a small query plus pure arithmetic."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, time, timedelta

from django.apps import apps
from django.db.models import Count, F, Q
from django.utils import timezone

from routing.models import RouteStop
from shipments.models import Leg, Shipment
from shipments.states import SHIPMENT_TERMINAL, Mile, ShipmentStatus

from .models import DeliveryException, EtaRecord

# An ETA counts for accuracy if it was made at least this long before arrival.
ETA_ACCURACY_HORIZON = timedelta(minutes=30)
ETA_ACCURACY_TOLERANCE = timedelta(minutes=15)


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = timezone.make_aware(datetime.combine(day, time.min))
    return start, start + timedelta(days=1)


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def eta_errors_seconds(pairs: list[tuple[datetime, datetime]]) -> list[float]:
    """Signed errors (actual − estimate) of (estimate, actual) pairs."""
    return [(actual - eta).total_seconds() for eta, actual in pairs]


def eta_accuracy(*, start: datetime, end: datetime) -> dict:
    """For stops reached in [start, end): the last ETA made at least the horizon
    before arrival, against the actual arrival."""
    stops = list(
        RouteStop.objects.filter(actual_arrival__gte=start, actual_arrival__lt=end).values_list(
            "pk", "actual_arrival"
        )
    )
    arrivals = dict(stops)
    pairs: list[tuple[datetime, datetime]] = []
    if arrivals:
        latest: dict[int, EtaRecord] = {}
        for record in EtaRecord.objects.filter(stop_id__in=list(arrivals)).order_by("computed_at", "id"):
            if record.computed_at <= arrivals[record.stop_id] - ETA_ACCURACY_HORIZON:
                latest[record.stop_id] = record
        pairs = [(record.eta, arrivals[stop_id]) for stop_id, record in latest.items()]
    errors = eta_errors_seconds(pairs)
    within = sum(1 for e in errors if abs(e) <= ETA_ACCURACY_TOLERANCE.total_seconds())
    return {
        "stops_measured": len(errors),
        "within_15_min_rate": _rate(within, len(errors)),
        "mean_absolute_error_minutes": round(sum(abs(e) for e in errors) / len(errors) / 60, 1)
        if errors
        else None,
        "mean_error_minutes": round(sum(errors) / len(errors) / 60, 1) if errors else None,
    }


def kpis_for_day(*, day: date) -> dict:
    start, end = _day_bounds(day)
    relevant = Shipment.objects.filter(
        Q(promised_by__gte=start, promised_by__lt=end)
        | Q(completed_at__gte=start, completed_at__lt=end)
        | ~Q(status__in=SHIPMENT_TERMINAL)
    )
    by_mile_status: dict[str, dict[str, int]] = defaultdict(dict)
    for row in relevant.values("current_mile", "status").annotate(n=Count("id")):
        by_mile_status[row["current_mile"] or "none"][row["status"]] = row["n"]

    delivered = Shipment.objects.filter(
        status=ShipmentStatus.DELIVERED, completed_at__gte=start, completed_at__lt=end
    )
    delivered_count = delivered.count()
    on_time = delivered.filter(
        Q(promised_by__isnull=True) | Q(completed_at__lte=F("promised_by"))
    ).count()
    # First attempt: delivered today with no failed attempt on its last mile.
    failed_first = set(
        Leg.objects.filter(
            shipment__in=delivered, mile=Mile.LAST, attempt_count__gt=0
        ).values_list("shipment_id", flat=True)
    )
    failed_today = Shipment.objects.filter(
        status=ShipmentStatus.DELIVERY_FAILED, updated_at__gte=start, updated_at__lt=end
    ).count()
    first_attempt = delivered_count - len(failed_first)
    exceptions = DeliveryException.objects.exclude(status=DeliveryException.Status.RESOLVED)
    return {
        "date": day.isoformat(),
        "shipments_by_mile_status": {mile: dict(statuses) for mile, statuses in by_mile_status.items()},
        "shipments_total": sum(sum(s.values()) for s in by_mile_status.values()),
        "at_risk": relevant.filter(is_at_risk=True).count(),
        "delivered": delivered_count,
        "on_time_rate": _rate(on_time, delivered_count),
        "first_attempt_rate": _rate(first_attempt, delivered_count + failed_today),
        "eta_accuracy": eta_accuracy(start=start, end=end),
        "exceptions_open": exceptions.count(),
        "exceptions_by_severity": dict(
            exceptions.values_list("severity").annotate(n=Count("id")).values_list("severity", "n")
        ),
        "notifications": _notification_kpis(day),
    }


def _notification_kpis(day: date) -> dict | None:
    """Delivery rate of customer messages and average rating (notifications sits
    above tracking, so it is read only when installed)."""
    if not apps.is_installed("notifications"):
        return None
    from notifications.selectors import notification_kpis

    return notification_kpis(day)

