"""WebSocket consumers: they relay, they never write.

``/ws/dashboard/`` (dispatchers): every stream message, numbered. A client that
connects with ``?after_seq=n`` (or sends ``{"type": "resume", "after_seq": n}``)
first gets what it missed from the database, then live messages; a live message
that skips a number makes the consumer fetch the gap before sending it, so a
message dropped by the channel layer is still delivered, in order.

``/ws/track/<token>/`` (anyone holding a tracking token): never a raw message;
each relevant message becomes a fresh allow-listed view of that one shipment.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from shipments.outbox import (
    DASHBOARD_GROUP,
    driver_group,
    optimization_group,
    shipment_group,
)
from shipments.roles import user_is_dispatcher

from .kick import background_loop_ensure_started
from .stream import AFTER_SEQ_MAX_LIMIT, client_message, shipment_last_seq, stream_page

logger = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY = 4429
# A replay larger than this tells the client to reload from a snapshot instead.
REPLAY_MAX_MESSAGES = 5000


def _after_seq_from_query(scope) -> int | None:
    query = parse_qs(scope.get("query_string", b"").decode(errors="ignore"))
    values = query.get("after_seq")
    if not values:
        return None
    try:
        return max(0, int(values[0]))
    except ValueError:
        return None


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    """The dispatcher dashboard's stream, gap-free by stream_seq."""

    last_seq: int | None = None
    watched: set[str]

    async def connect(self) -> None:
        self.watched = set()
        user = self.scope.get("user")
        if not await database_sync_to_async(user_is_dispatcher)(user):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        background_loop_ensure_started()
        # Join before reading the database: anything published after the join
        # arrives live, anything before it is already numbered and committed.
        await self.channel_layer.group_add(DASHBOARD_GROUP, self.channel_name)
        await self.accept()
        after_seq = _after_seq_from_query(self.scope)
        if after_seq is not None:
            await self._replay(after_seq)

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(DASHBOARD_GROUP, self.channel_name)
        for group in getattr(self, "watched", set()):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "resume":
            try:
                after_seq = max(0, int(content.get("after_seq", 0)))
            except (TypeError, ValueError):
                return
            await self._replay(after_seq)
        elif kind == "watch_optimization":
            try:
                group = optimization_group(int(content["job_id"]))
            except (KeyError, TypeError, ValueError):
                return
            self.watched.add(group)
            await self.channel_layer.group_add(group, self.channel_name)
        elif kind == "watch_driver":
            try:
                group = driver_group(int(content["driver_id"]))
            except (KeyError, TypeError, ValueError):
                return
            self.watched.add(group)
            await self.channel_layer.group_add(group, self.channel_name)
        elif kind == "ping":
            await self.send_json({"type": "pong", "last_seq": self.last_seq})

    async def _replay(self, after_seq: int) -> None:
        """Send every message after ``after_seq`` from the database, in order."""
        cursor = after_seq
        sent = 0
        while sent < REPLAY_MAX_MESSAGES:
            # Off the thread that serves every sync view and consumer call of
            # this process: a reconnecting dashboard must not queue behind them.
            page = await database_sync_to_async(stream_page, thread_sensitive=False)(
                after_seq=cursor, limit=AFTER_SEQ_MAX_LIMIT
            )
            for message in page["messages"]:
                await self._send_numbered(message)
            sent += len(page["messages"])
            cursor = page["last_seq"]
            if not page["has_more"]:
                break
        else:
            await self.send_json({"type": "reload", "reason": "too far behind"})
        if self.last_seq is None or self.last_seq < cursor:
            self.last_seq = cursor

    async def _send_numbered(self, message: dict) -> None:
        seq = message.get("seq")
        if seq is not None and self.last_seq is not None and seq <= self.last_seq:
            return  # already sent (replay and live overlap, or a re-published row)
        text = message.get("text")
        if text is not None:
            await self.send(text_data=text)  # encoded once by the relay
        else:
            await self.send_json(message)
        if seq is not None:
            self.last_seq = seq

    # Channel-layer handlers: one per message type.

    async def live_message(self, event: dict) -> None:
        seq = event.get("seq")
        if self.last_seq is not None and seq is not None and seq > self.last_seq + 1:
            # A number is missing: the channel layer dropped it (at most once).
            logger.info(
                "dashboard stream gap after seq %s (got %s): filling from the database",
                self.last_seq, seq,
            )
            await self._replay(self.last_seq)
            if seq <= (self.last_seq or 0):
                return
        await self._send_numbered(event if "text" in event else client_message(event))

    async def live_batch(self, event: dict) -> None:
        for message in event.get("messages") or []:
            await self.live_message(message)

    async def optimization_progress(self, event: dict) -> None:
        body = {k: v for k, v in event.items() if k != "type"}
        await self.send_json({"type": "optimization.progress", **body})

    async def dispatch(self, message: dict) -> None:
        # Messages from other apps with a type this consumer has no handler for
        # (e.g. a new progress kind) are passed on unnumbered instead of
        # closing the socket: the dashboard belongs to dispatchers.
        handler_name = message.get("type", "").replace(".", "_")
        if message.get("type", "").startswith("websocket.") or hasattr(self, handler_name):
            await super().dispatch(message)
            return
        body = {k: v for k, v in message.items() if k != "type"}
        await self.send_json({"type": message.get("type"), **body})


class TrackConsumer(AsyncJsonWebsocketConsumer):
    """One shipment's live view for a tracking-link holder."""

    shipment_id: int | None = None
    token: str = ""
    last_seq: int = 0
    driver_group_name: str | None = None

    async def connect(self) -> None:
        from .public import tracking_shipment_resolve
        from .throttle import tracking_address_allowed, tracking_address_miss_record

        self.token = self.scope["url_route"]["kwargs"]["token"]
        address = (self.scope.get("client") or ["unknown"])[0] or "unknown"
        # The same per-client limits as the page: a socket is no way round them.
        if not await database_sync_to_async(tracking_address_allowed)(address):
            await self.close(code=CLOSE_TOO_MANY)
            return
        shipment = await database_sync_to_async(tracking_shipment_resolve)(self.token)
        if shipment is None:
            await database_sync_to_async(tracking_address_miss_record)(address)
            await self.close(code=CLOSE_NOT_FOUND)
            return
        background_loop_ensure_started()
        self.shipment_id = shipment.pk
        await self.channel_layer.group_add(shipment_group(shipment.pk), self.channel_name)
        await self.accept()
        after_seq = _after_seq_from_query(self.scope) or 0
        await self._send_view(after_seq=after_seq, reason="connect")

    async def disconnect(self, code: int) -> None:
        if self.shipment_id is not None:
            await self.channel_layer.group_discard(
                shipment_group(self.shipment_id), self.channel_name
            )
        if self.driver_group_name:
            await self.channel_layer.group_discard(self.driver_group_name, self.channel_name)

    async def receive_json(self, content: Any, **kwargs) -> None:
        if isinstance(content, dict) and content.get("type") == "resume":
            try:
                after_seq = max(0, int(content.get("after_seq", 0)))
            except (TypeError, ValueError):
                return
            await self._send_view(after_seq=after_seq, reason="resume")

    async def _send_view(self, *, after_seq: int, reason: str) -> None:
        """Send the current allow-listed view, numbered with the shipment's latest seq."""
        body = await database_sync_to_async(self._view)(after_seq)
        if body is None:  # revoked or expired while watching
            await self.close(code=CLOSE_NOT_FOUND)
            return
        view, seq, driver_id = body
        self.last_seq = max(self.last_seq, seq)
        await self._follow_driver(driver_id)
        await self.send_json({"type": "shipment", "seq": self.last_seq, "reason": reason, "shipment": view})

    def _view(self, after_seq: int):
        from .public import public_shipment_view, tracking_shipment_resolve

        shipment = tracking_shipment_resolve(self.token)
        if shipment is None or shipment.pk != self.shipment_id:
            return None
        seq = max(after_seq, shipment_last_seq(shipment.pk))
        view = public_shipment_view(shipment)
        driver_id = None
        if view["driver"] is not None:
            driver_id = _serving_driver_id(shipment)
        return view, seq, driver_id

    async def _follow_driver(self, driver_id: int | None) -> None:
        """Receive the serving driver's pings only while out for delivery."""
        wanted = driver_group(driver_id) if driver_id else None
        if wanted == self.driver_group_name:
            return
        if self.driver_group_name:
            await self.channel_layer.group_discard(self.driver_group_name, self.channel_name)
        if wanted:
            await self.channel_layer.group_add(wanted, self.channel_name)
        self.driver_group_name = wanted

    # Channel-layer handlers.

    async def live_message(self, event: dict) -> None:
        if event.get("shipment_id") == self.shipment_id:
            await self._send_view(after_seq=self.last_seq, reason="update")
            return
        if self.driver_group_name and _is_position(event):
            position = _position_of(event)
            if position is not None:
                await self.send_json({"type": "position", "position": position})

    async def live_batch(self, event: dict) -> None:
        messages = event.get("messages") or []
        if any(m.get("shipment_id") == self.shipment_id for m in messages):
            await self._send_view(after_seq=self.last_seq, reason="update")  # one view per batch
            return
        positions = [m for m in messages if self.driver_group_name and _is_position(m)]
        if positions:
            await self.live_message(positions[-1])

    async def dispatch(self, message: dict) -> None:
        # Anything but our own handlers is dropped: this socket is public.
        handler_name = message.get("type", "").replace(".", "_")
        if message.get("type", "").startswith("websocket.") or handler_name in ("live_message", "live_batch"):
            await super().dispatch(message)


def _serving_driver_id(shipment) -> int | None:
    from .public import _active_legs, _last_mile_stop

    stop = _last_mile_stop(_active_legs(shipment))
    return stop.route.driver_id if stop is not None else None


def _is_position(event: dict) -> bool:
    payload = event.get("payload") or {}
    return "latitude" in payload and "longitude" in payload and not event.get("shipment_id")


def _position_of(event: dict) -> dict | None:
    payload = event.get("payload") or {}
    try:
        return {
            "latitude": round(float(payload["latitude"]), 4),
            "longitude": round(float(payload["longitude"]), 4),
            "recorded_at": str(payload.get("recorded_at", ""))[:40],
        }
    except (KeyError, TypeError, ValueError):
        return None
