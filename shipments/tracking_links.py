"""Keeping raw tracking tokens out of stored text.

A stored answer or message must not hold a raw tracking token: a database leak
would become a link leak. Links are stored as ``/t/{trk:<shipment id>:<version>}``
and re-derived from the secret when the text is used again.
"""

from __future__ import annotations

import re

from .models import Shipment
from .tracking_tokens import tracking_token_hash, tracking_token_make

_TRACKING_LINK = re.compile(r"/t/([A-Za-z0-9_-]{43})\b")
_TRACKING_PLACEHOLDER = re.compile(r"/t/\{trk:(\d+):(\d+)\}")


def tracking_links_redact(text: str) -> str:
    """Replace each tracking link's token by its shipment and link version."""

    def swap(match: re.Match) -> str:
        found = (
            Shipment.objects.filter(
                tracking_token_hash=tracking_token_hash(match.group(1))
            )
            .values_list("pk", "tracking_version")
            .first()
        )
        return f"/t/{{trk:{found[0]}:{found[1]}}}" if found else "/t/{trk:revoked}"

    return _TRACKING_LINK.sub(swap, text)


def tracking_links_restore(text: str, *, current_version: bool = False) -> str:
    """Put the tokens back: the stored version (a byte-identical replay), or the
    shipment's current one (a message about to be sent must carry a live link)."""

    def swap(match: re.Match) -> str:
        salt, version = Shipment.objects.values_list(
            "tracking_salt", "tracking_version"
        ).get(pk=match.group(1))
        if not current_version:
            version = int(match.group(2))
        return "/t/" + tracking_token_make(salt=salt, version=version)

    return _TRACKING_PLACEHOLDER.sub(swap, text)
