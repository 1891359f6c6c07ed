"""Starting the relay soon after an outbox write commits, and in the background.

* After a transaction that wrote outbox rows commits, the relay is kicked once:
  in the embedded default it runs right there, in the web process; with Redis a
  Celery worker runs ``outbox_relay_task``. Either way, beat runs the same task
  every two seconds as the safety net, so a lost kick only delays a message.
* An ASGI process that serves live sockets relays by itself: the first consumer
  starts an asyncio loop there, and kicks from that process wake it instead of
  queueing a task, so a busy worker (a long optimization, a backlog of customer
  messages) never delays the live stream. Writes in other processes wake it
  too: the writing transaction sends a PostgreSQL ``NOTIFY`` (delivered at
  commit, dropped on rollback) and a thread of the web process ``LISTEN``s.
  The advisory lock keeps one relay pass at a time across processes.
  In the embedded default (no beat, no worker) the loop also re-times routes
  and runs the sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import threading

from asgiref.sync import sync_to_async
from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections, connections, transaction

logger = logging.getLogger(__name__)

EMBEDDED_RELAY_INTERVAL_SECONDS = 2.0
EMBEDDED_SWEEP_INTERVAL_SECONDS = 60.0

_background_task: asyncio.Task | None = None
_background_loop_ref: asyncio.AbstractEventLoop | None = None
_wake: asyncio.Event | None = None
# Routes whose ETAs are due for a refresh, coalesced: SQLite (the embedded
# default) has one writer at a time, so the work runs one piece after another in
# the background loop instead of in every request thread at once.
_pending_routes: set[int] = set()
_pending_lock = threading.Lock()


def _background_running() -> bool:
    return (
        _background_task is not None
        and not _background_task.done()
        and _background_loop_ref is not None
        and _background_loop_ref.is_running()
    )


def _wake_background() -> None:
    if _wake is not None and _background_loop_ref is not None:
        _background_loop_ref.call_soon_threadsafe(_wake.set)


RELAY_PENDING_KEY = "tracking:relay:queued"
# A queued task releases its slot when it starts; the timeout only frees a slot
# whose task was lost (beat covers the relay, the sweep covers ETAs).
QUEUE_SLOT_TIMEOUT_SECONDS = 10


def eta_pending_key(route_id: int) -> str:
    return f"tracking:eta:queued:{route_id}"


# A route is re-timed at most this often: pings come every few seconds and
# ETAs move in minutes; the sweep catches a route whose last ping was skipped.
ETA_MIN_INTERVAL_SECONDS = 5


def _claim_queue_slot(key: str, timeout: int = QUEUE_SLOT_TIMEOUT_SECONDS) -> bool:
    """At most one queued task per key: a burst of pings queues one ETA refresh,
    a burst of commits one relay pass. True when the caller should queue."""
    try:
        return bool(cache.add(key, 1, timeout=timeout))
    except Exception:  # noqa: BLE001 - no cache: queue anyway
        return True


def queue_slot_release(key: str) -> None:
    """Called by the task as it starts: anything committed after this queues anew."""
    try:
        cache.delete(key)
    except Exception:  # noqa: BLE001
        logger.warning("could not release queue slot %s", key)


def relay_runs_inline() -> bool:
    """True when this process relays by itself (no worker to hand the work to)."""
    return bool(getattr(settings, "TRACKING_RELAY_INLINE", settings.CELERY_TASK_ALWAYS_EAGER))


def relay_kick() -> None:
    """Relay now (embedded) or ask a worker to (Redis). Never raises: the write
    that caused the kick has committed and its caller must not see an error."""
    try:
        if _background_running():
            _wake_background()  # this process relays, right away, off the request thread
        elif relay_runs_inline():
            from .relay import outbox_relay_run

            outbox_relay_run()
        elif _claim_queue_slot(RELAY_PENDING_KEY):
            from .tasks import outbox_relay_task

            outbox_relay_task.apply_async(retry=False)
    except Exception:  # noqa: BLE001 - beat (or the embedded loop) catches up
        logger.warning("relay kick failed; the periodic relay will catch up", exc_info=True)


# PostgreSQL NOTIFY channel: "outbox rows were committed".
OUTBOX_NOTIFY_CHANNEL = "allmile_outbox"
LISTEN_RETRY_SECONDS = 1.0
LISTEN_IDLE_CHECK_SECONDS = 30.0


def outbox_written(sender, instance, created: bool, **kwargs) -> None:
    """post_save receiver on OutboxMessage: one kick per committed transaction,
    and one NOTIFY for the web processes that relay live sockets."""
    if not created:
        return
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        transaction.on_commit(relay_kick)
        return
    pending = getattr(connection, "run_on_commit", [])
    if any(entry[1] is relay_kick for entry in pending):
        return
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {OUTBOX_NOTIFY_CHANNEL}")
    transaction.on_commit(relay_kick)


_listener_thread: threading.Thread | None = None


def outbox_listen(wake, stop: threading.Event) -> None:
    """Call ``wake()`` whenever any process commits outbox rows, until ``stop``.

    Runs in a daemon thread on a connection of its own; a lost connection (a
    PostgreSQL restart) is opened again, and the periodic pass covers the gap.
    """
    while not stop.is_set():
        wrapper = None
        try:
            wrapper = connections.create_connection("default")
            wrapper.ensure_connection()
            wrapper.set_autocommit(True)
            raw = wrapper.connection
            with raw.cursor() as cursor:
                cursor.execute(f"LISTEN {OUTBOX_NOTIFY_CHANNEL}")
            wake()  # anything committed while nobody listened
            while not stop.is_set():
                readable, _, _ = select.select([raw], [], [], LISTEN_IDLE_CHECK_SECONDS)
                if not readable:
                    with raw.cursor() as cursor:  # notices a server that went away
                        cursor.execute("SELECT 1")
                    continue
                raw.poll()
                if raw.notifies:
                    raw.notifies.clear()
                    wake()
        except Exception:  # noqa: BLE001 - e.g. PostgreSQL restarting: listen again
            logger.warning("outbox listener lost its connection; listening again", exc_info=True)
        finally:
            if wrapper is not None:
                with contextlib.suppress(Exception):
                    wrapper.close()
        stop.wait(LISTEN_RETRY_SECONDS)


def _outbox_listener_ensure_started() -> None:
    global _listener_thread
    if _listener_thread is not None and _listener_thread.is_alive():
        return
    if connections["default"].vendor != "postgresql":
        return  # the embedded default relays after every commit in this process
    _listener_thread = threading.Thread(
        target=outbox_listen, args=(_wake_background, threading.Event()),
        name="outbox-listener", daemon=True,
    )
    _listener_thread.start()


def route_activity_received(sender, route_id: int, **kwargs) -> None:
    """dispatch.signals.route_activity receiver: re-time the route's stops."""
    if relay_runs_inline() and _background_running():
        with _pending_lock:
            _pending_routes.add(route_id)
        _wake_background()
        return
    try:
        from .tasks import eta_route_refresh_task

        if _claim_queue_slot(eta_pending_key(route_id), timeout=ETA_MIN_INTERVAL_SECONDS):
            eta_route_refresh_task.apply_async((route_id,), retry=False)
    except Exception:  # noqa: BLE001 - the sweep re-times silent routes
        logger.warning("could not queue the ETA refresh of route %s", route_id, exc_info=True)


def _relay_and_close() -> None:
    from .relay import outbox_relay_run

    close_old_connections()
    try:
        outbox_relay_run()
    finally:
        close_old_connections()


def _sweep_and_close() -> None:
    from .eta import eta_sweep_run
    from .webhooks import webhook_deliveries_retry_due

    close_old_connections()
    try:
        eta_sweep_run()
        webhook_deliveries_retry_due()
        # Customer messages due (quiet hours over, retries): no worker runs them here.
        if apps.is_installed("notifications"):
            from notifications.services import notification_sweep_run

            notification_sweep_run()
    finally:
        close_old_connections()


def _refresh_pending_routes() -> None:
    from .eta import eta_route_refresh

    with _pending_lock:
        route_ids = sorted(_pending_routes)
        _pending_routes.clear()
    close_old_connections()
    try:
        for route_id in route_ids:
            try:
                eta_route_refresh(route_id=route_id)
            except Exception:  # noqa: BLE001 - e.g. SQLite busy: try again next round
                logger.warning("ETA refresh of route %s deferred", route_id, exc_info=True)
                with _pending_lock:
                    _pending_routes.add(route_id)
    finally:
        close_old_connections()


async def _background_loop() -> None:
    loop = asyncio.get_running_loop()
    last_sweep = loop.time()
    # Embedded (SQLite): all database work shares one thread, one writer at a
    # time. Otherwise a relay pass runs in a thread of its own, so neither a
    # slow request nor a consumer's database read holds up the live stream.
    embedded = relay_runs_inline()
    while True:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(_wake.wait(), timeout=EMBEDDED_RELAY_INTERVAL_SECONDS)
        _wake.clear()
        try:
            await sync_to_async(_relay_and_close, thread_sensitive=embedded)()
            if _pending_routes:
                await sync_to_async(_refresh_pending_routes, thread_sensitive=True)()
                await sync_to_async(_relay_and_close, thread_sensitive=True)()
            # With a worker and beat the sweep is theirs: here it would hold the
            # thread every consumer's database read waits for (the customer
            # message sweep can take minutes behind a backlog).
            if embedded and loop.time() - last_sweep >= EMBEDDED_SWEEP_INTERVAL_SECONDS:
                last_sweep = loop.time()
                await sync_to_async(_sweep_and_close, thread_sensitive=True)()
        except Exception:  # noqa: BLE001 - keep looping; the next round retries
            logger.exception("embedded relay loop round failed")


def background_loop_ensure_started() -> None:
    """Called from a consumer (so inside the ASGI server's event loop).

    ``TRACKING_WEB_RELAY`` (default on) turns the web-process relay off where
    only the worker should relay (the consumer tests, which steer the relay).
    """
    global _background_task, _background_loop_ref, _wake
    if not relay_runs_inline() and not getattr(settings, "TRACKING_WEB_RELAY", True):
        return
    if _background_task is not None and not _background_task.done():
        return
    _background_loop_ref = asyncio.get_running_loop()
    _wake = asyncio.Event()
    _background_task = _background_loop_ref.create_task(_background_loop())
    if not relay_runs_inline():
        _outbox_listener_ensure_started()
