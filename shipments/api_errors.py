"""One table from errors to HTTP answers; views never translate by hand.

    400  the request does not fit its documented schema (shape, type, format,
         range, choice): field errors say where
    404  no such object, or not yours (the same answer)
    409  it conflicts with the current state (a state machine move, a value
         that must be unique, a row that changed under it)
    422  it fits the schema but a rule refuses it: a referenced object that
         does not exist, a rule across fields, a domain refusal, an
         Idempotency-Key reused with another body

So a client can tell "fix the request's shape" (400) from "this request, well
formed, is refused" (409, 422). Bodies are JSON objects: ``detail`` and
``code`` where there is one message, field errors keyed by field otherwise.
"""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError
from django.http import Http404, JsonResponse
from rest_framework import status
from rest_framework.exceptions import ErrorDetail, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import DomainError
from .states import InvalidTransition

logger = logging.getLogger(__name__)

# Error codes of rules a schema cannot state. ``RULE`` is the code serializers
# give their own cross-field and business rules.
RULE = "rule"
UNIQUE = "unique"
REFERENCE_CODES = frozenset({"does_not_exist"})
SEMANTIC_CODES = REFERENCE_CODES | {RULE}


def validation_status(detail) -> int:
    """400 when any error is about the request's shape; else 409 when every
    error is a uniqueness clash; else 422."""
    codes = set(_codes(detail))
    if not codes or codes - SEMANTIC_CODES - {UNIQUE}:
        return status.HTTP_400_BAD_REQUEST
    if codes == {UNIQUE}:
        return status.HTTP_409_CONFLICT
    return status.HTTP_422_UNPROCESSABLE_ENTITY


def _codes(detail):
    if isinstance(detail, dict):
        for value in detail.values():
            yield from _codes(value)
    elif isinstance(detail, list):
        for value in detail:
            yield from _codes(value)
    else:
        yield getattr(detail, "code", None) or "invalid"


def rule_error(message: str) -> ErrorDetail:
    """A message for a rule the schema cannot state (answered 422)."""
    return ErrorDetail(message, code=RULE)


def unique_error(message: str) -> ErrorDetail:
    """A message for a value another object already has (409 when alone)."""
    return ErrorDetail(message, code=UNIQUE)


def exception_handler(exc, context):
    if isinstance(exc, InvalidTransition):
        return Response(
            {
                "code": exc.code,
                "detail": str(exc),
                "entity": exc.entity,
                "current_state": exc.current,
                "requested_state": exc.target,
                "allowed_states": exc.allowed,
            },
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, DomainError):
        body = {"code": exc.code, "detail": exc.message, **exc.details}
        if exc.field:
            body[exc.field] = [exc.message]
        return Response(body, status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        exc = ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        )
    if isinstance(exc, IntegrityError):
        logger.warning("integrity error answered as 409: %s", exc)
        return Response(
            {"code": "conflict", "detail": "The request conflicts with existing data."},
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, DataError):
        return Response(
            {"code": "invalid", "detail": "A value is out of range for its field."},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, Http404):
        return Response({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ValidationError):
        response.status_code = validation_status(exc.detail)
    if isinstance(response.data, list):
        # Always an object, so every error answer has one documented shape.
        response.data = {"non_field_errors": response.data}
    return response


def not_found(request, exception=None):
    """``handler404``: under /api/ a JSON 404 (a path that matches no route,
    e.g. a malformed id, answers like an unknown object); pages keep HTML."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)
