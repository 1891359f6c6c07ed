"""Where drivers are: the latest fix per driver, read from dispatch.

Dispatch keeps one ``DriverPosition`` row per driver (the fix with the latest
fix time). This module is the only place tracking reads it, so the ETA engine,
the dashboard and the tracking page agree on what "the driver's position" is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.apps import apps


@dataclass(frozen=True)
class Position:
    driver_id: int
    latitude: float
    longitude: float
    recorded_at: datetime
    heading_degrees: float | None = None
    speed_mps: float | None = None
    route_id: int | None = None


def _position_model():
    try:
        return apps.get_model("dispatch", "DriverPosition")
    except LookupError:  # dispatch without pings: no positions
        return None


def driver_positions(driver_ids: list[int]) -> dict[int, Position]:
    model = _position_model()
    if model is None or not driver_ids:
        return {}
    rows = model.objects.filter(driver_id__in=driver_ids).values(
        "driver_id",
        "latitude",
        "longitude",
        "recorded_at",
        "heading_degrees",
        "speed_mps",
        "route_id",
    )
    return {row["driver_id"]: Position(**row) for row in rows}


def driver_position(driver_id: int) -> Position | None:
    return driver_positions([driver_id]).get(driver_id)
