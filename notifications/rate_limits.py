"""Limits on customer actions: per tracking link and per client address.

Atomic counters (shipments.ratelimit: Redis INCR, PostgreSQL when Redis is
away), so fifty parallel posts never get more than the limit through.
"""

from __future__ import annotations

from django.conf import settings

from shipments.ratelimit import client_ip, rate_limit_exceeded
from shipments.tracking_tokens import tracking_token_hash

WINDOW_SECONDS = 60


def customer_action_limited(*, token: str, request) -> bool:
    """Count this action; True when the link or the address is over its limit."""
    per_link = int(getattr(settings, "CUSTOMER_ACTIONS_PER_LINK_PER_MINUTE", 10))
    per_address = int(getattr(settings, "CUSTOMER_ACTIONS_PER_IP_PER_MINUTE", 30))
    # Only the token's hash goes into the key: counters must not hold live links.
    link_over = rate_limit_exceeded(
        key=f"cust:link:{tracking_token_hash(token)[:32]}",
        limit=per_link,
        window_seconds=WINDOW_SECONDS,
    )
    address_over = rate_limit_exceeded(
        key=f"cust:ip:{client_ip(request)}",
        limit=per_address,
        window_seconds=WINDOW_SECONDS,
    )
    return link_over or address_over
