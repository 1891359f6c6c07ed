"""Atomic rate limits: a fixed-window counter per key.

Redis ``INCR`` (through Django's cache) is atomic, unlike DRF's read-then-write
cache throttle; when Redis is unreachable the count moves to a PostgreSQL row
under a lock, so limits keep holding (and driver writes keep working) during a
Redis outage.
"""

from __future__ import annotations

import logging
import time

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F

from .models import RateCounter

logger = logging.getLogger(__name__)


def rate_limit_count(*, key: str, window_seconds: int) -> int:
    """Count one hit for ``key`` in the current window; returns the count so far."""
    window = int(time.time() // window_seconds)
    cache_key = f"rl:{key}:{window}"
    try:
        cache.add(cache_key, 0, timeout=window_seconds + 5)
        return cache.incr(cache_key)
    except Exception as exc:  # Redis down: fall back to the database
        logger.warning("rate limit falls back to the database: %s", type(exc).__name__)
        return _db_count(key=f"{key}:{window}")


def rate_limit_peek(*, key: str, window_seconds: int) -> int:
    """The count in the current window without adding a hit."""
    window = int(time.time() // window_seconds)
    try:
        return int(cache.get(f"rl:{key}:{window}") or 0)
    except Exception:
        row = RateCounter.objects.filter(key=f"{key}:{window}").first()
        return row.count if row else 0


def rate_limit_exceeded(*, key: str, limit: int, window_seconds: int) -> bool:
    """Count one hit; True when this hit is over ``limit``."""
    return rate_limit_count(key=key, window_seconds=window_seconds) > limit


def _db_count(*, key: str) -> int:
    with transaction.atomic():
        updated = RateCounter.objects.filter(key=key).update(count=F("count") + 1)
        if not updated:
            try:
                with transaction.atomic():
                    RateCounter.objects.create(key=key, count=1)
                return 1
            except IntegrityError:
                RateCounter.objects.filter(key=key).update(count=F("count") + 1)
        return RateCounter.objects.get(key=key).count


def client_ip(request) -> str:
    # Behind a proxy, configure it to set REMOTE_ADDR (uvicorn --proxy-headers).
    return request.META.get("REMOTE_ADDR", "") or "unknown"
