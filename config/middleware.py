"""Refuse oversized request bodies before anything reads them."""

from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse


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
