"""Per-client request limits for the public tracking endpoints.

An atomic counter per client and minute (``INCR`` on Redis through Django's
cache; DRF's cache throttle reads then writes, so parallel requests overshoot).
If the cache is down the limit fails open: tracking stays up, and the
counter resumes when the cache is back.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60


def _limits() -> tuple[int, int]:
    per_minute = getattr(settings, "TRACKING_RATE_LIMIT_PER_MINUTE", 60)
    misses_per_minute = getattr(settings, "TRACKING_MISS_LIMIT_PER_MINUTE", 30)
    return per_minute, misses_per_minute


def client_address(request) -> str:
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def _count(key: str) -> int:
    try:
        cache.add(key, 0, timeout=WINDOW_SECONDS * 2)
        return cache.incr(key)
    except Exception:  # noqa: BLE001 - fail open, never fail the page
        logger.warning("tracking rate-limit counter unavailable", exc_info=True)
        return 0


def _peek(key: str) -> int:
    try:
        return int(cache.get(key) or 0)
    except Exception:  # noqa: BLE001
        return 0


def tracking_request_allowed(request) -> bool:
    """Count this request; False once the client is over either limit this minute."""
    return tracking_address_allowed(client_address(request))


def tracking_address_allowed(address: str) -> bool:
    per_minute, misses_per_minute = _limits()
    window = int(time.time() // WINDOW_SECONDS)
    if _peek(f"track:miss:{address}:{window}") >= misses_per_minute:
        return False
    return _count(f"track:req:{address}:{window}") <= per_minute


def tracking_miss_record(request) -> None:
    """An unknown, revoked or expired token: guessing costs the guesser."""
    tracking_address_miss_record(client_address(request))


def tracking_address_miss_record(address: str) -> None:
    window = int(time.time() // WINDOW_SECONDS)
    _count(f"track:miss:{address}:{window}")
