"""Tracking-link tokens.

A token is ``HMAC(secret, salt:version)``: 256 bits an outsider cannot guess, and
the server can re-derive it (for e-mails, the dashboard) without storing it. Only
its SHA-256 is stored, for lookup; bumping the version revokes the old link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from django.conf import settings


def tracking_salt_new() -> str:
    return secrets.token_hex(16)  # 128 random bits per shipment


def tracking_token_make(*, salt: str, version: int) -> str:
    secret = getattr(settings, "TRACKING_TOKEN_SECRET", "") or settings.SECRET_KEY
    digest = hmac.new(
        secret.encode(), f"{salt}:{version}".encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def tracking_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tracking_url(token: str) -> str:
    return f"{settings.ALLMILE_PUBLIC_BASE_URL.rstrip('/')}/t/{token}"
