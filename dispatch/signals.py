"""Signals dispatch sends to higher layers it must not import.

``route_activity`` is sent with ``route_id`` after the commit of anything that
moves a route forward (a driver event, a batch of pings, an insertion), so the
ETA engine (tracking) can re-time the rest of the route. Receivers run after
commit; a failing receiver does not undo the driver's write.
"""

from __future__ import annotations

from django.db import transaction
from django.dispatch import Signal

route_activity = Signal()  # kwargs: route_id


def route_activity_send_on_commit(route_id: int) -> None:
    transaction.on_commit(
        lambda: route_activity.send_robust(sender="dispatch", route_id=route_id)
    )
