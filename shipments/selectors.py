"""Read-side query shapes, so N+1 problems are fixed in one place."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from .models import Leg, Shipment
from .tracking_tokens import tracking_token_hash


def shipment_list_for_dispatch() -> QuerySet[Shipment]:
    legs = Leg.objects.select_related(
        "from_hub", "to_hub", "from_location", "to_location"
    )
    return Shipment.objects.select_related(
        "shipper", "consignee", "origin", "destination", "origin_hub", "destination_hub"
    ).prefetch_related("parcels", Prefetch("legs", queryset=legs.order_by("sequence")))


def shipment_get_by_tracking_token(token: str) -> Shipment | None:
    if not token or len(token) > 100:
        return None
    return (
        Shipment.objects.select_related("origin_hub", "destination_hub")
        .filter(tracking_token_hash=tracking_token_hash(token))
        .first()
    )
