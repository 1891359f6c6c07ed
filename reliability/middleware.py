"""Fault requests for the [FAULT] tier: ``X-Reliability-Fault`` names a fault
that a hook (``reliability.hooks``) injects inside the request's business
transaction. Installed by ``config.settings.reliability`` only.

    X-Reliability-Fault: raise       an exception after the business write, before commit
    X-Reliability-Fault: sleep=2.5   hold the open transaction in ``pg_sleep`` (to be killed)
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from django.urls import get_resolver

FAULT_HEADER = "HTTP_X_RELIABILITY_FAULT"
MAX_SLEEP_SECONDS = 30.0


@dataclass(frozen=True)
class Fault:
    kind: str  # "raise" or "sleep"
    seconds: float = 0.0


# The fault asked for by the request being served (None: serve it normally).
requested_fault: contextvars.ContextVar[Fault | None] = contextvars.ContextVar(
    "requested_fault", default=None
)


def fault_parse(value: str) -> Fault | None:
    """``raise`` or ``sleep=<seconds>``; anything else is no fault."""
    value = value.strip().lower()
    if value == "raise":
        return Fault("raise")
    if value.startswith("sleep="):
        try:
            seconds = float(value.removeprefix("sleep="))
        except ValueError:
            return None
        if 0 < seconds <= MAX_SLEEP_SECONDS:
            return Fault("sleep", seconds)
    return None


class FaultRequestMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        # Import every view now, while the handler is built: under gunicorn
        # --preload that happens once in the master, so a worker forked to
        # replace a killed one serves at once instead of importing the whole
        # project (OR-Tools included) on its first request.
        get_resolver().url_patterns  # noqa: B018

    def __call__(self, request):
        token = requested_fault.set(fault_parse(request.META.get(FAULT_HEADER, "")))
        try:
            return self.get_response(request)
        finally:
            requested_fault.reset(token)
