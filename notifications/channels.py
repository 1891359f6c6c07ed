"""The two ways a message leaves: e-mail (Django's e-mail framework) and SMS
(a provider interface with one HTTP implementation).

Each ``*_send`` returns the provider's message id, or raises ``DeliveryError``
saying whether trying again can help (a full mailbox server, a 503, a timeout)
or not (an unknown recipient, a rejected number, a missing configuration).

SMS settings (read when sending, never at import):

* ``SMS_API_BASE_URL``: e.g. ``https://api.sms.example/2010-04-01``; empty
  means SMS is not configured and SMS messages fail with that reason.
* ``SMS_ACCOUNT_ID``, ``SMS_AUTH_TOKEN``: HTTP basic credentials.
* ``SMS_FROM``: the sender number or name.
* ``SMS_TIMEOUT_SECONDS`` (default 10).

The request is the shape most SMS APIs share: ``POST
{base}/Accounts/{account}/Messages.json`` with form fields ``To``, ``From``,
``Body``; a 2xx JSON answer carries the message id in ``sid`` (or ``id``), an
error answer ``{"code": …, "message": …}``.
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from typing import Protocol

import httpx
from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.utils.crypto import get_random_string


class DeliveryError(Exception):
    def __init__(self, reason: str, *, permanent: bool):
        super().__init__(reason)
        self.reason = reason[:500]
        self.permanent = permanent


# ---------------------------------------------------------------------------
# E-mail
# ---------------------------------------------------------------------------

EMAIL_TIMEOUT_SECONDS = 15


def _smtp_error(exc: smtplib.SMTPException) -> DeliveryError:
    """5xx is the server's final word; 4xx (greylisting, a full queue) may pass later."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        text = "; ".join(
            f"{address}: {code} {message.decode(errors='replace') if isinstance(message, bytes) else message}"
            for address, (code, message) in exc.recipients.items()
        )
        return DeliveryError(
            f"recipient refused: {text}", permanent=all(c >= 500 for c in codes)
        )
    code = getattr(exc, "smtp_code", None)
    message = getattr(exc, "smtp_error", b"")
    if isinstance(message, bytes):
        message = message.decode(errors="replace")
    if code is not None:
        return DeliveryError(f"SMTP {code} {message}".strip(), permanent=code >= 500)
    return DeliveryError(f"SMTP: {exc}", permanent=False)


def email_send(*, to: str, subject: str, body: str, reference: str) -> str:
    """Send one plain-text e-mail; returns its Message-ID."""
    message_id = f"<{reference}.{get_random_string(12)}@{_mail_domain()}>"
    email = EmailMessage(
        subject=subject,
        body=body,
        from_email=getattr(settings, "NOTIFICATIONS_FROM_EMAIL", "")
        or settings.DEFAULT_FROM_EMAIL,
        to=[to],
        headers={"Message-ID": message_id, "Auto-Submitted": "auto-generated"},
    )
    try:
        connection = get_connection(fail_silently=False, timeout=EMAIL_TIMEOUT_SECONDS)
        sent = connection.send_messages([email])
    except smtplib.SMTPException as exc:
        raise _smtp_error(exc) from exc
    except (TimeoutError, OSError) as exc:  # refused, reset, unreachable, timed out
        raise DeliveryError(f"mail server unreachable: {exc}", permanent=False) from exc
    if not sent:
        raise DeliveryError("the mail backend accepted nothing", permanent=False)
    return message_id


def _mail_domain() -> str:
    sender = (
        getattr(settings, "NOTIFICATIONS_FROM_EMAIL", "") or settings.DEFAULT_FROM_EMAIL
    )
    return sender.rpartition("@")[2].strip(">") or "localhost"


# ---------------------------------------------------------------------------
# SMS
# ---------------------------------------------------------------------------


class SmsProvider(Protocol):
    def send(self, *, to: str, body: str, reference: str) -> str: ...


@dataclass(frozen=True)
class HttpSmsProvider:
    base_url: str
    account_id: str
    auth_token: str
    sender: str
    timeout_seconds: float = 10.0

    def send(self, *, to: str, body: str, reference: str) -> str:
        url = f"{self.base_url.rstrip('/')}/Accounts/{self.account_id}/Messages.json"
        try:
            response = httpx.post(
                url,
                data={"To": to, "From": self.sender, "Body": body},
                auth=(self.account_id, self.auth_token),
                headers={
                    "User-Agent": "Allmile-Notifications/1",
                    "X-Reference": reference,
                },
                timeout=self.timeout_seconds,
                follow_redirects=False,
            )
        except httpx.TimeoutException as exc:
            raise DeliveryError(
                f"SMS provider timed out: {exc}", permanent=False
            ) from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(
                f"SMS provider unreachable: {exc}", permanent=False
            ) from exc
        return self._answer(response)

    @staticmethod
    def _answer(response: httpx.Response) -> str:
        try:
            data = response.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        if 200 <= response.status_code < 300:
            provider_id = str(data.get("sid") or data.get("id") or "")
            if not provider_id:
                raise DeliveryError(
                    "SMS provider answered without a message id", permanent=False
                )
            return provider_id
        detail = data.get("message") or response.text[:200] or response.reason_phrase
        code = data.get("code")
        reason = f"SMS provider HTTP {response.status_code}" + (
            f" code {code}" if code else ""
        )
        reason += f": {detail}"
        # Throttled or broken on their side: later may work. Any other 4xx will not.
        transient = (
            response.status_code in (408, 425, 429) or response.status_code >= 500
        )
        raise DeliveryError(reason, permanent=not transient)


def sms_provider() -> SmsProvider | None:
    """The configured provider, or None when SMS is not set up."""
    base_url = getattr(settings, "SMS_API_BASE_URL", "")
    if not base_url:
        return None
    return HttpSmsProvider(
        base_url=base_url,
        account_id=getattr(settings, "SMS_ACCOUNT_ID", ""),
        auth_token=getattr(settings, "SMS_AUTH_TOKEN", ""),
        sender=getattr(settings, "SMS_FROM", ""),
        timeout_seconds=float(getattr(settings, "SMS_TIMEOUT_SECONDS", 10)),
    )


def sms_send(*, to: str, body: str, reference: str) -> str:
    provider = sms_provider()
    if provider is None:
        raise DeliveryError("SMS is not configured (SMS_API_BASE_URL)", permanent=True)
    return provider.send(to=to, body=body, reference=reference)
