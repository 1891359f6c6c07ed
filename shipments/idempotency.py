"""``Idempotency-Key`` for POST endpoints, stored with the effect.

The record is inserted first, inside the same transaction as the effect: a
concurrent request with the same key blocks on the unique index until the first
commits, then replays its answer. A retry gets the stored answer (status and
body); the same key with a different body is refused with 422. Keys are scoped
per principal, so one user's key never returns another user's answer.
"""

from __future__ import annotations

import hashlib
from functools import wraps

from django.db import IntegrityError, transaction
from django.http import HttpResponse, UnreadablePostError
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.renderers import JSONRenderer

from .errors import IdempotencyMismatch
from .models import IdempotencyRecord
from .tracking_links import tracking_links_redact, tracking_links_restore

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def principal_of(request) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"anon:{request.META.get('REMOTE_ADDR', '')}"


def _request_hash(request) -> str:
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(request.path.encode())
    try:
        body = request._request.body
    except UnreadablePostError as exc:
        # The client hung up mid-upload: nothing was done, and nobody is there
        # to read an answer; a 400, not a server error in the logs.
        raise ParseError("The request body could not be read to its end.") from exc
    digest.update(body)
    return digest.hexdigest()


def _replay(record: IdempotencyRecord, request_hash: str) -> HttpResponse:
    if record.request_hash != request_hash:
        raise IdempotencyMismatch(
            "This Idempotency-Key was already used with a different request body."
        )
    response = HttpResponse(
        tracking_links_restore(record.response_body),
        status=record.status_code,
        content_type="application/json",
    )
    response["Idempotent-Replayed"] = "true"
    return response


def idempotent(handler=None, *, required: bool = False):
    """Decorate a view's ``post`` so retries with the same key have one effect."""

    def decorate(view_method):
        @wraps(view_method)
        def wrapper(self, request, *args, **kwargs):
            key = request.headers.get(HEADER, "").strip()
            if not key:
                if required:
                    raise ValidationError({HEADER: ["This header is required."]})
                return view_method(self, request, *args, **kwargs)
            if len(key) > MAX_KEY_LENGTH:
                raise ValidationError(
                    {HEADER: [f"At most {MAX_KEY_LENGTH} characters."]}
                )
            principal = principal_of(request)
            request_hash = _request_hash(request)
            existing = IdempotencyRecord.objects.filter(
                principal=principal, key=key
            ).first()
            if existing is not None and existing.status_code:
                return _replay(existing, request_hash)
            try:
                with transaction.atomic():
                    record = IdempotencyRecord.objects.create(
                        principal=principal,
                        key=key,
                        method=request.method,
                        path=request.path[:300],
                        request_hash=request_hash,
                        status_code=0,
                    )
                    response = view_method(self, request, *args, **kwargs)
                    if response.status_code >= 500:
                        transaction.set_rollback(True)
                        return response
                    # Answer with exactly the bytes stored, so a replay is identical.
                    body = JSONRenderer().render(response.data).decode()
                    record.status_code = response.status_code
                    # No raw tracking token at rest; the replay re-derives the same bytes.
                    record.response_body = tracking_links_redact(body)
                    record.save(update_fields=["status_code", "response_body"])
                    return HttpResponse(
                        body,
                        status=response.status_code,
                        content_type="application/json",
                    )
            except IntegrityError:
                existing = IdempotencyRecord.objects.filter(
                    principal=principal, key=key
                ).first()
                if existing is None or not existing.status_code:
                    raise
                return _replay(existing, request_hash)

        return wrapper

    if handler is not None:
        return decorate(handler)
    return decorate
