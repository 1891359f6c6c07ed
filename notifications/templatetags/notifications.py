"""``{% notification_log shipment_id %}``: the delivery log on the dashboard's shipment page."""

from __future__ import annotations

from django import template

from notifications.selectors import message_list_for_shipment

register = template.Library()

LOG_LIMIT = 100


@register.inclusion_tag("notifications/shipment_messages.html")
def notification_log(shipment_id: int) -> dict:
    return {
        "messages": list(message_list_for_shipment(shipment_id)[:LOG_LIMIT]),
        "limit": LOG_LIMIT,
    }
