"""Read side: instructions for the driver's stops, the shipment's message log
and the day's communication figures."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta

from django.db.models import Avg, Count, Q, QuerySet
from django.utils import timezone

from .models import CustomerRating, DeliveryInstruction, HubPickupRequest, Message


def delivery_instructions_for_shipments(shipment_ids: Iterable[int]) -> dict[int, str]:
    """What the customer asked the driver, per shipment, as one line each (two queries).

    A pending pickup-at-hub request comes first: the driver must not deliver it.
    """
    ids = list(shipment_ids)
    lines: dict[int, list[str]] = {}
    for shipment_id, hub_name in HubPickupRequest.objects.filter(
        shipment_id__in=ids, status=HubPickupRequest.Status.REQUESTED
    ).values_list("shipment_id", "hub__name"):
        lines.setdefault(shipment_id, []).append(
            f"Do not deliver: the customer collects it at {hub_name}"
        )
    for item in DeliveryInstruction.objects.filter(shipment_id__in=ids):
        parts = lines.setdefault(item.shipment_id, [])
        if item.safe_place:
            parts.append(f"Safe place: {item.safe_place}")
        if item.door_code:
            parts.append(f"Door code: {item.door_code}")
        if item.note:
            parts.append(f"Note: {item.note}")
    return {
        shipment_id: " · ".join(parts) for shipment_id, parts in lines.items() if parts
    }


def message_list_for_shipment(shipment_id: int) -> QuerySet[Message]:
    """The delivery log of one shipment, newest first."""
    return (
        Message.objects.filter(shipment_id=shipment_id)
        .select_related("rule")
        .order_by("-id")
    )


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = timezone.make_aware(datetime.combine(day, time.min))
    return start, start + timedelta(days=1)


def notification_kpis(day: date) -> dict:
    """Messages decided that day by outcome and channel, the delivery rate (sent
    over sent + failed; suppressed and still pending are not attempts that
    count), and the ratings given that day."""
    start, end = _day_bounds(day)
    messages = Message.objects.filter(created_at__gte=start, created_at__lt=end)
    by_channel: dict[str, dict[str, int]] = {}
    for row in messages.values("channel", "status").annotate(n=Count("id")):
        by_channel.setdefault(row["channel"], {})[row["status"]] = row["n"]
    sent = sum(c.get(Message.Status.SENT, 0) for c in by_channel.values())
    failed = sum(c.get(Message.Status.FAILED, 0) for c in by_channel.values())
    ratings = CustomerRating.objects.filter(
        created_at__gte=start, created_at__lt=end
    ).aggregate(
        count=Count("id"), average=Avg("stars"), low=Count("id", filter=Q(stars__lte=2))
    )
    return {
        "date": day.isoformat(),
        "messages_sent": sent,
        "messages_failed": failed,
        "messages_suppressed": sum(
            c.get(Message.Status.SUPPRESSED, 0) for c in by_channel.values()
        ),
        "messages_pending": sum(
            c.get(status, 0)
            for c in by_channel.values()
            for status in (
                Message.Status.SCHEDULED,
                Message.Status.QUEUED,
                Message.Status.SENDING,
                Message.Status.RETRYING,
            )
        ),
        "delivery_rate": round(sent / (sent + failed), 4) if sent + failed else None,
        "by_channel": by_channel,
        "ratings": ratings["count"],
        "average_rating": round(ratings["average"], 2)
        if ratings["average"] is not None
        else None,
        "low_ratings": ratings["low"],
    }
