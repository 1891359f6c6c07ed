"""Location pings: a driver's batch of GPS fixes, judged one by one and stored once.

    batch ──▶ per-device limit (an atomic counter; over it: 429 + Retry-After,
              nothing stored, the phone resends later with the same key)
          ──▶ each fix checked (range, accuracy, not in the future, not a jump
              faster than any vehicle from the fix before it in time)
          ──▶ INSERT … ON CONFLICT DO NOTHING on (driver, device, fix time):
              a re-sent batch stores nothing twice
          ──▶ latest position = the fix with the latest fix time (conditional upsert,
              so a late batch of old fixes never moves the driver backwards)
          ──▶ one outbox message for the dashboard; ``route_activity`` after commit
              when the fixes enter a new 30-s slot (the ETA engine re-times the route)

The statements are raw SQL: the ORM's ``bulk_create(ignore_conflicts=True)``
cannot say which rows were new, and building ORM queries costs more CPU than
the rest of the batch. PostgreSQL stores fixes and position in one statement;
SQLite (the embedded default) in two.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import Throttled

from routing.models import Route
from shipments.outbox import DASHBOARD_GROUP, driver_group, outbox_enqueue
from shipments.ratelimit import rate_limit_count

from .models import DriverPosition, LocationPing
from .selectors import ACTIVE_ROUTE_STATUSES
from .signals import route_activity_send_on_commit

MAX_PINGS_PER_BATCH = 500
# A phone sends a batch every few seconds; 120 a minute leaves room for an
# offline queue to catch up (500 fixes a batch) and stops a runaway client.
DEFAULT_PING_BATCHES_PER_DEVICE_PER_MINUTE = 120
PING_LIMIT_WINDOW_SECONDS = 60
# A moving driver's route is re-timed once per this many seconds of fix time.
PING_ETA_REFRESH_SECONDS = 30
# Faster than any vehicle in the fleet (250 km/h), after allowing for both fixes' accuracy.
MAX_SPEED_MPS = 70.0
MAX_ACCURACY_METERS = 5_000.0
MAX_CLOCK_AHEAD = timedelta(minutes=2)
MAX_AGE = timedelta(days=7)
EARTH_RADIUS_METERS = 6_371_008.8


@dataclass(frozen=True)
class PingInput:
    latitude: float
    longitude: float
    accuracy_meters: float
    recorded_at: datetime
    speed_mps: float | None = None
    heading_degrees: float | None = None


@dataclass(frozen=True)
class StoredPosition(PingInput):
    route_id: int | None = None


@dataclass
class PingBatchResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict] = field(default_factory=list)  # {"index", "reason"}


class PingRateLimited(Throttled):
    """Too many batches from one device this minute (429 with Retry-After).

    A DRF exception on purpose: the API's error handler answers it with the
    ``Retry-After`` header the phone's upload queue obeys.
    """

    default_detail = "Too many ping batches from this device; retry later."
    default_code = "ping_rate_limited"


def ping_batches_per_device_limit() -> int:
    return getattr(
        settings,
        "PING_BATCHES_PER_DEVICE_PER_MINUTE",
        DEFAULT_PING_BATCHES_PER_DEVICE_PER_MINUTE,
    )


def ping_rate_limit_check(*, driver_id: int, device_id: str) -> None:
    """Count one batch for the device; raise ``PingRateLimited`` over the limit.

    An atomic counter (Redis ``INCR``, PostgreSQL row while Redis is down), so
    50 batches at once against a limit of 20 admit 20, never more.
    """
    count = rate_limit_count(
        key=f"pings:{driver_id}:{device_id}", window_seconds=PING_LIMIT_WINDOW_SECONDS
    )
    if count > ping_batches_per_device_limit():
        left = PING_LIMIT_WINDOW_SECONDS - time.time() % PING_LIMIT_WINDOW_SECONDS
        raise PingRateLimited(wait=max(1, math.ceil(left)))


def distance_meters(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_METERS * math.asin(min(1.0, math.sqrt(h)))


def ping_problem(ping: PingInput, *, now: datetime) -> str | None:
    """Why a fix on its own is implausible, or None."""
    if not (-90 <= ping.latitude <= 90) or not (-180 <= ping.longitude <= 180):
        return "out_of_range"
    if not all(
        math.isfinite(v) for v in (ping.latitude, ping.longitude, ping.accuracy_meters)
    ):
        return "out_of_range"
    if not 0 <= ping.accuracy_meters <= MAX_ACCURACY_METERS:
        return "inaccurate"
    if ping.speed_mps is not None and not 0 <= ping.speed_mps <= MAX_SPEED_MPS:
        return "implausible_speed"
    if ping.heading_degrees is not None and not 0 <= ping.heading_degrees <= 360:
        return "out_of_range"
    if ping.recorded_at > now + MAX_CLOCK_AHEAD:
        return "in_the_future"
    if ping.recorded_at < now - MAX_AGE:
        return "too_old"
    return None


def eta_refresh_due(
    before: StoredPosition | None, latest: PingInput, route_id: int
) -> bool:
    """Whether this batch should ask the ETA engine to re-time the route.

    ETAs move in minutes while phones send fixes every few seconds: a moving
    driver's route is re-timed when the fix time enters a new
    ``PING_ETA_REFRESH_SECONDS`` slot, on the first fix, and on a new route.
    Stop events re-time at once (driver_events), and the sweep catches the rest.
    """
    if before is None or before.route_id != route_id:
        return True
    slot = PING_ETA_REFRESH_SECONDS
    return int(before.recorded_at.timestamp() // slot) != int(
        latest.recorded_at.timestamp() // slot
    )


def is_jump(a: PingInput, b: PingInput) -> bool:
    """Whether going from fix ``a`` to fix ``b`` needs a speed no vehicle has."""
    seconds = abs((b.recorded_at - a.recorded_at).total_seconds())
    meters = distance_meters(a.latitude, a.longitude, b.latitude, b.longitude)
    slack = a.accuracy_meters + b.accuracy_meters
    return max(0.0, meters - slack) > MAX_SPEED_MPS * max(seconds, 1.0)


# The driver's stored position and today's route (driver_route_current's rule:
# the route under way, else the first published one) in one round trip.
_POSITION_AND_ROUTE = (
    "SELECT p.latitude, p.longitude, p.accuracy_meters, p.recorded_at, p.route_id, "
    "(SELECT r.id FROM {route} r WHERE r.driver_id = %s AND r.service_date = %s "
    "AND r.status IN (%s, %s) "
    "ORDER BY CASE WHEN r.status = %s THEN 0 ELSE 1 END, r.planned_start, r.id LIMIT 1) "
    "FROM (SELECT %s AS driver_id) d LEFT JOIN {position} p ON p.driver_id = d.driver_id"
)
_INSERT_PINGS = (
    "INSERT INTO {table} (driver_id, route_id, device_id, latitude, longitude, "
    "accuracy_meters, speed_mps, heading_degrees, recorded_at, received_at) VALUES {rows} "
    "ON CONFLICT (driver_id, device_id, recorded_at) DO NOTHING RETURNING id"
)
_UPSERT_POSITION = (
    "INSERT INTO {table} AS p (driver_id, route_id, latitude, longitude, accuracy_meters, "
    "speed_mps, heading_degrees, recorded_at, updated_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (driver_id) DO UPDATE SET route_id = excluded.route_id, "
    "latitude = excluded.latitude, longitude = excluded.longitude, "
    "accuracy_meters = excluded.accuracy_meters, speed_mps = excluded.speed_mps, "
    "heading_degrees = excluded.heading_degrees, recorded_at = excluded.recorded_at, "
    "updated_at = excluded.updated_at WHERE p.recorded_at < excluded.recorded_at "
    "RETURNING driver_id"
)
# PostgreSQL runs both writes in one statement (one round trip on the hottest
# endpoint); SQLite, which has no data-modifying WITH, runs them one by one.
_INSERT_PINGS_AND_POSITION = (
    "WITH new_pings AS ({insert_pings}), moved AS ({upsert_position}) "
    "SELECT (SELECT count(*) FROM new_pings), (SELECT count(*) FROM moved)"
)


def _as_datetime(value) -> datetime:
    """A timestamp from raw SQL: PostgreSQL gives an aware datetime, SQLite a
    naive one (or a string) in UTC."""
    parsed = value if isinstance(value, datetime) else parse_datetime(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _position_and_route(
    *, driver_id: int, day: date
) -> tuple[StoredPosition | None, int | None]:
    sql = _POSITION_AND_ROUTE.format(
        route=Route._meta.db_table, position=DriverPosition._meta.db_table
    )
    params = [
        driver_id,
        connection.ops.adapt_datefield_value(day),
        *ACTIVE_ROUTE_STATUSES,
        Route.Status.IN_PROGRESS,
        driver_id,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    latitude, longitude, accuracy, recorded_at, position_route_id, route_id = row
    if latitude is None:
        return None, route_id
    position = StoredPosition(
        latitude=latitude,
        longitude=longitude,
        accuracy_meters=accuracy,
        recorded_at=_as_datetime(recorded_at),
        route_id=position_route_id,
    )
    return position, route_id


def _store(
    *,
    driver_id: int,
    route_id: int | None,
    device_id: str,
    kept: list[PingInput],
    received: datetime,
) -> tuple[int, bool]:
    """Insert the fixes (known ones skipped) and move the position if the latest
    fix is newer; returns (fixes inserted, position moved)."""
    ops = connection.ops
    received_value = ops.adapt_datetimefield_value(received)
    ping_params: list = []
    for ping in kept:
        ping_params += [
            driver_id,
            route_id,
            device_id,
            ping.latitude,
            ping.longitude,
            ping.accuracy_meters,
            ping.speed_mps,
            ping.heading_degrees,
            ops.adapt_datetimefield_value(ping.recorded_at),
            received_value,
        ]
    latest = kept[-1]
    position_params = [
        driver_id,
        route_id,
        latest.latitude,
        latest.longitude,
        latest.accuracy_meters,
        latest.speed_mps,
        latest.heading_degrees,
        ops.adapt_datetimefield_value(latest.recorded_at),
        received_value,
    ]
    insert_pings = _INSERT_PINGS.format(
        table=LocationPing._meta.db_table,
        rows=", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(kept)),
    )
    upsert_position = _UPSERT_POSITION.format(table=DriverPosition._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                _INSERT_PINGS_AND_POSITION.format(
                    insert_pings=insert_pings, upsert_position=upsert_position
                ),
                ping_params + position_params,
            )
            inserted, moved = cursor.fetchone()
            return inserted, bool(moved)
        cursor.execute(insert_pings, ping_params)
        inserted = len(cursor.fetchall())
        cursor.execute(upsert_position, position_params)
        return inserted, bool(cursor.fetchall())


# No savepoint: the caller's transaction (the idempotency record's) is the unit,
# and a savepoint costs two round trips on the hottest endpoint.
@transaction.atomic(savepoint=False)
def driver_pings_record(
    *,
    driver_id: int,
    device_id: str,
    pings: list[PingInput],
    now: datetime | None = None,
) -> PingBatchResult:
    """Three statements in all: the position and route, the fixes and the
    position, the outbox message (the ORM, so the relay is kicked on commit)."""
    ping_rate_limit_check(driver_id=driver_id, device_id=device_id)
    now = now or timezone.now()
    result = PingBatchResult()
    candidates: list[tuple[int, PingInput]] = []
    for index, ping in enumerate(pings):
        problem = ping_problem(ping, now=now)
        if problem:
            result.rejected.append({"index": index, "reason": problem})
        else:
            candidates.append((index, ping))
    candidates.sort(key=lambda pair: pair[1].recorded_at)
    if not candidates:
        return result

    position, route = _position_and_route(driver_id=driver_id, day=timezone.localdate())
    kept: list[PingInput] = []
    seen_times: set[datetime] = set()
    for index, ping in candidates:
        if ping.recorded_at in seen_times:
            result.duplicates += 1  # the same fix twice in one batch
            continue
        before = kept[-1] if kept else None
        if (
            before is None
            and position is not None
            and position.recorded_at < ping.recorded_at
        ):
            before = position
        if before is not None and is_jump(before, ping):
            result.rejected.append({"index": index, "reason": "implausible_jump"})
            continue
        seen_times.add(ping.recorded_at)
        kept.append(ping)
    result.rejected.sort(key=lambda r: r["index"])
    if not kept:
        return result

    inserted, moved = _store(
        driver_id=driver_id,
        route_id=route,
        device_id=device_id,
        kept=kept,
        received=now,
    )
    latest = kept[-1]
    result.accepted = len(kept) + result.duplicates
    result.duplicates += len(kept) - inserted
    if moved:
        outbox_enqueue(
            type="driver.position",
            groups=[DASHBOARD_GROUP, driver_group(driver_id)],
            payload={
                "driver_id": driver_id,
                "route_id": route,
                "latitude": latest.latitude,
                "longitude": latest.longitude,
                "accuracy_meters": latest.accuracy_meters,
                "speed_mps": latest.speed_mps,
                "heading_degrees": latest.heading_degrees,
                "recorded_at": latest.recorded_at.isoformat(),
            },
        )
        if route is not None and eta_refresh_due(position, latest, route):
            route_activity_send_on_commit(route)
    return result
