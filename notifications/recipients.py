"""Who a rule's message goes to: address, language and name, and opt-outs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings

from shipments.models import Party, Shipment

from .models import Channel, NotificationOptOut, RecipientRole
from .triggers import language_pick

_PHONE_NOISE = re.compile(r"[\s().-]")


@dataclass(frozen=True)
class Recipient:
    address: str  # normalised; "" when none is known
    language: str
    name: str


def address_normalise(channel: str, address: str) -> str:
    """The form opt-outs and the log compare: lower-case e-mail, bare phone digits."""
    address = (address or "").strip()
    if channel == Channel.EMAIL:
        return address.lower()
    return _PHONE_NOISE.sub("", address)


def _customer_of(shipment: Shipment) -> tuple[Party, object]:
    """The consignee and the delivery address; for a return, the original ones."""
    original = shipment.original_shipment if shipment.is_return else None
    if original is not None:
        return original.consignee, original.destination
    return shipment.consignee, shipment.destination


def recipient_for(*, shipment: Shipment, role: str, channel: str) -> Recipient:
    """The party's own address first, else the delivery contact (consignee only)."""
    if role == RecipientRole.SHIPPER:
        party, location = shipment.shipper, None
    else:
        party, location = _customer_of(shipment)
    if channel == Channel.EMAIL:
        raw = party.email or (location.contact_email if location else "")
    else:
        raw = party.phone or (location.contact_phone if location else "")
    supported = [code for code, _ in settings.LANGUAGES]
    name = (
        location.contact_name if location and location.contact_name else ""
    ) or party.name
    return Recipient(
        address=address_normalise(channel, raw),
        language=language_pick(party.language, supported),
        name=name,
    )


def recipient_opted_out(*, channel: str, address: str) -> bool:
    return NotificationOptOut.objects.filter(
        channel=channel, address=address_normalise(channel, address)
    ).exists()


def address_masked(address: str) -> str:
    """For event payloads (relayed to dashboards): enough to recognise, not to copy."""
    if "@" in address:
        local, _, domain = address.partition("@")
        return f"{local[:1]}***@{domain}"
    return f"***{address[-4:]}" if len(address) > 4 else "***"
