"""Turning a rule, a shipment and a language into a subject and a body.

Wording comes from the rule's ``MessageTemplate`` in the recipient's language,
else the default file ``templates/notifications/messages/<trigger>.<channel>.<lang>.txt``
(an e-mail file's first line is its subject), else the same in English.
Templates see plain values only (strings, numbers, datetimes), never models,
so an admin-edited template cannot wander through the database. Every body
carries the tracking link: one is appended if a template forgot it.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.template import TemplateDoesNotExist, TemplateSyntaxError, engines
from django.template.loader import get_template
from django.utils import timezone, translation

from dispatch.models import ProofOfDelivery
from routing.models import Route, RouteStop
from shipments.models import Shipment, ShipmentEvent
from shipments.services import shipment_tracking_token
from shipments.states import LegStatus, Mile, ShipmentStatus
from shipments.tracking_tokens import tracking_url
from tracking.public import eta_window

from .models import Channel, MessageTemplate, NotificationRule, Trigger
from .recipients import Recipient

DEFAULT_LANGUAGE = "en"
SMS_MAX_CHARS = 480  # three concatenated segments; the link is never cut


class TemplateMissing(Exception):
    """No wording for a rule in the recipient's language nor in English."""


def _local(value: datetime | None) -> datetime | None:
    return timezone.localtime(value) if value else None


def _parse(value: str | None) -> datetime | None:
    return _local(datetime.fromisoformat(value)) if value else None


def _last_mile_stop(shipment: Shipment) -> RouteStop | None:
    return (
        RouteStop.objects.filter(legs__shipment=shipment, legs__mile=Mile.LAST)
        .exclude(route__status__in=[Route.Status.DRAFT, Route.Status.CANCELLED])
        .order_by("-route__service_date", "-id")
        .first()
    )


def _proof(shipment: Shipment) -> dict | None:
    if shipment.status != ShipmentStatus.DELIVERED:
        return None
    stop = _last_mile_stop(shipment)
    pod = (
        ProofOfDelivery.objects.filter(stop=stop).order_by("-id").first()
        if stop
        else None
    )
    return {
        "delivered_at": _local(shipment.completed_at),
        "received_by": pod.recipient_name if pod else "",
        "has_photo": bool(pod and pod.photo),
        "has_signature": bool(pod and pod.signature),
    }


def next_step_after_failure(shipment: Shipment) -> str:
    """What happens after a failed attempt: retry, return, cancelled or contact."""
    if shipment.status == ShipmentStatus.CANCELLED:
        return "cancelled"
    if shipment.returns.exists():
        return "return"
    replanned = shipment.legs.filter(
        mile=Mile.LAST, status__in=[LegStatus.PLANNED, LegStatus.ASSIGNED]
    ).exists()
    return "retry" if replanned else "contact"


def _hub_name(event: ShipmentEvent | None, trigger: str) -> str:
    leg = event.leg if event is not None else None
    if leg is None:
        return ""
    hub = leg.to_hub if trigger == Trigger.ARRIVED_AT_HUB else leg.from_hub
    return hub.name if hub else ""


def message_context(
    *,
    shipment: Shipment,
    trigger: str,
    recipient: Recipient,
    event: ShipmentEvent | None = None,
) -> dict:
    """Everything a template may use; values only."""
    window = eta_window(shipment) or {}
    payload = event.payload if event is not None else {}
    lateness_seconds = int(payload.get("lateness_seconds") or 0)
    pickup_hub = shipment.destination_hub
    original = shipment.original_shipment if shipment.is_return else None
    return {
        "reference": original.reference if original else shipment.reference,
        "return_reference": shipment.reference if original else "",
        "shipper_name": shipment.shipper.name,
        "recipient_name": recipient.name,
        "tracking_url": tracking_url(shipment_tracking_token(shipment)),
        "status": shipment.status,
        "eta": _local(shipment.eta),
        "eta_window_start": _parse(window.get("start")),
        "eta_window_end": _parse(window.get("end")),
        "promised_by": _local(shipment.promised_by),
        "is_at_risk": bool(shipment.is_at_risk),
        "lateness_minutes": max(0, lateness_seconds // 60),
        "hub_name": _hub_name(event, trigger),
        "pickup_hub_name": pickup_hub.name if pickup_hub else "",
        "proof": _proof(shipment) if trigger == Trigger.DELIVERED else None,
        "next_step": next_step_after_failure(shipment)
        if trigger == Trigger.ATTEMPT_FAILED
        else "",
        "parcel_count": shipment.parcel_count,
        "sender_name": getattr(settings, "NOTIFICATIONS_SENDER_NAME", "Allmile"),
    }


def _compile(source: str):
    # Plain-text messages: nothing is HTML-escaped ("Dupont & fils" stays as is).
    return engines["django"].from_string(
        "{% autoescape off %}" + source + "{% endautoescape %}"
    )


def template_source_check(*, subject: str, body: str) -> None:
    """Raise a field-keyed ValidationError when a template does not compile."""
    errors = {}
    for field, source in (("subject", subject), ("body", body)):
        try:
            _compile(source)
        except TemplateSyntaxError as exc:
            errors[field] = f"Template error: {exc}"
    if errors:
        raise ValidationError(errors)


def default_template_name(*, trigger: str, channel: str, language: str) -> str:
    return f"notifications/messages/{trigger}.{channel}.{language}.txt"


def default_template_source(*, trigger: str, channel: str, language: str) -> str | None:
    """The shipped wording's source text, or None when there is none."""
    name = default_template_name(trigger=trigger, channel=channel, language=language)
    try:
        return get_template(name).template.source
    except TemplateDoesNotExist:
        return None


def _sources(rule: NotificationRule, language: str) -> tuple[str | None, str, str]:
    """(subject source or None when the body's first line is the subject, body source, language)."""
    stored = {t.language: t for t in MessageTemplate.objects.filter(rule=rule)}
    for code in dict.fromkeys([language, DEFAULT_LANGUAGE]):
        if code in stored:
            return stored[code].subject, stored[code].body, code
        source = default_template_source(
            trigger=rule.trigger, channel=rule.channel, language=code
        )
        if source is not None:
            return None, source, code
    raise TemplateMissing(f"no template for rule {rule.pk} in {language} or English")


def _with_link(body: str, url: str) -> str:
    return body if url in body else f"{body.rstrip()}\n\n{url}"


def _sms_fit(body: str, url: str) -> str:
    body = " ".join(body.split())  # one line: SMS has no layout
    if len(body) <= SMS_MAX_CHARS:
        return body
    text = body.replace(url, "").strip()
    room = SMS_MAX_CHARS - len(url) - 2
    return f"{text[: room - 1].rstrip()}… {url}"


def message_render(
    *, rule: NotificationRule, language: str, context: dict
) -> tuple[str, str, str]:
    """(subject, body, language actually used). Raises TemplateMissing."""
    subject_source, body_source, used = _sources(rule, language)
    with translation.override(used), timezone.override(settings.TIME_ZONE):
        rendered = _compile(body_source).render(context).strip()
        if subject_source is None and rule.channel == Channel.EMAIL:
            first, _, rest = rendered.partition("\n")
            subject, body = first, rest.strip()
        else:
            subject = _compile(subject_source or "").render(context)
            body = rendered
    subject = " ".join(subject.split())[:300] if rule.channel == Channel.EMAIL else ""
    url = context["tracking_url"]
    body = _with_link(body, url)
    if rule.channel == Channel.SMS:
        body = _sms_fit(body, url)
    return subject, body, used


def message_preview(
    *, rule: NotificationRule, shipment: Shipment, language: str
) -> tuple[str, str, str]:
    """The rule's message for a real shipment, as if its latest matching event
    (if any) had just happened; for the admin's preview."""
    from .recipients import recipient_for
    from .triggers import TRIGGER_EVENT_TYPES, trigger_for

    event = next(
        (
            candidate
            for candidate in ShipmentEvent.objects.filter(
                shipment=shipment, type__in=TRIGGER_EVENT_TYPES
            )
            .select_related("leg__from_hub", "leg__to_hub")
            .order_by("-id")
            if trigger_for(
                event_type=candidate.type,
                payload=candidate.payload,
                is_return=shipment.is_return,
            )
            == rule.trigger
        ),
        None,
    )
    recipient = recipient_for(
        shipment=shipment, role=rule.recipient_role, channel=rule.channel
    )
    recipient = Recipient(
        address=recipient.address, language=language, name=recipient.name
    )
    context = message_context(
        shipment=shipment, trigger=rule.trigger, recipient=recipient, event=event
    )
    return message_render(rule=rule, language=language, context=context)
