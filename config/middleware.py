"""Request guards that sit in front of every view.

* ``BodySizeLimitMiddleware``: oversized bodies are refused before anything reads them.
* ``DatabaseUnavailableMiddleware``: while PostgreSQL is restarting or unreachable,
  requests answer 503 with ``Retry-After`` at once instead of a 500 (clients treat
  a 503 as "try again later" and keep their data; a 500 reads as a bug).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse

logger = logging.getLogger(__name__)


class BodySizeLimitMiddleware:
    """Answer 413 when Content-Length exceeds the configured limit.

    Django's own limit guards ``request.body``/``POST`` only; parsers that read
    the stream (DRF's JSON parser) would otherwise take any size.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.MAX_REQUEST_BODY_BYTES
        if request.META.get("CONTENT_TYPE", "").startswith("application/json"):
            limit = min(limit, settings.MAX_JSON_BODY_BYTES)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse(
                {"detail": "Invalid Content-Length header."}, status=400
            )
        if length > limit:
            return JsonResponse(
                {
                    "code": "body_too_large",
                    "detail": f"The request body is {length} bytes; the limit is {limit}.",
                },
                status=413,
            )
        return self.get_response(request)


def database_unavailable_response() -> JsonResponse:
    retry_after = settings.DATABASE_UNAVAILABLE_RETRY_AFTER_SECONDS
    response = JsonResponse(
        {
            "code": "database_unavailable",
            "detail": "The service is briefly unavailable; nothing was stored. "
            f"Retry in {retry_after} s with the same Idempotency-Key.",
        },
        status=503,
    )
    response["Retry-After"] = str(retry_after)
    return response


class DatabaseUnavailableMiddleware:
    """Turn a lost or refused database connection into 503 + ``Retry-After``.

    ``OperationalError`` (connection refused, server shutting down or starting
    up, connection terminated mid-query) and ``InterfaceError`` (a connection
    already closed) mean the request could not be served *now*; the transaction
    was rolled back, so the client can safely resend. Other database errors
    (integrity, data) are the request's own fault and handled elsewhere.
    Django closes the broken connection at the end of the request, and the next
    request reconnects (``CONN_HEALTH_CHECKS``).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    # Django hands a view's exception to each middleware's process_exception
    # before it would answer 500 (inner middleware errors are already answers).
    def process_exception(self, request, exception):
        if isinstance(exception, OperationalError | InterfaceError):
            return self._unavailable(request, exception)
        return None

    def _unavailable(self, request, exc) -> JsonResponse:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        logger.warning(
            "database unavailable, %s %s answered 503: %s",
            request.method,
            request.path,
            reason,
        )
        return database_unavailable_response()
