"""``/healthz``: database, channel layer / Redis and worker, each with a verdict."""

from __future__ import annotations

import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import JsonResponse


def _check_database() -> dict:
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # report, never raise: this is the health endpoint
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "vendor": connection.vendor, "ms": _ms(started)}


def _check_channel_layer() -> dict:
    started = time.perf_counter()
    layer = get_channel_layer()
    try:

        async def round_trip():
            channel = await layer.new_channel("healthz.")
            await layer.send(channel, {"type": "healthz.ping"})
            return await layer.receive(channel)

        message = async_to_sync(round_trip)()
    except Exception as exc:
        return {
            "ok": False,
            "backend": type(layer).__name__,
            "error": type(exc).__name__,
        }
    return {
        "ok": message.get("type") == "healthz.ping",
        "backend": type(layer).__name__,
        "ms": _ms(started),
    }


def _check_worker() -> dict:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return {"ok": True, "mode": "in-process"}
    from config.celery import app

    try:
        replies = app.control.inspect(timeout=1.0).ping() or {}
    except Exception as exc:
        return {"ok": False, "mode": "celery", "error": type(exc).__name__}
    return {"ok": bool(replies), "mode": "celery", "workers": len(replies)}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def healthz(request):
    checks = {
        "database": _check_database(),
        "channel_layer": _check_channel_layer(),
        "worker": _check_worker(),
    }
    # The worker is reported but does not fail the probe: the web tier serves
    # (and keeps accepting driver writes) while workers restart.
    healthy = checks["database"]["ok"] and checks["channel_layer"]["ok"]
    return JsonResponse(
        {"status": "ok" if healthy else "degraded", "checks": checks},
        status=200 if healthy else 503,
    )
