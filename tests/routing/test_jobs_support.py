"""Scenarios for the optimization-job tests (no tests in here).

Days of real work on the Riviera: parcels for doors around the Monaco city hub,
pickups at producers around Grasse for the Nice DC, returns collected in Monaco.
Everything is made through the real services, so legs, windows and hubs are what
production would plan.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time as time_module
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers
from django.utils import timezone

from dispatch.models import Vehicle
from shipments.models import Hub, Leg, Shipment
from shipments.states import Mile
from tests import factories

OPEN_WEEKDAYS = range(0, 6)  # days the tests plan on; closed_day() is a Sunday
MONDAY_TO_SATURDAY = {d: ["06:00", "22:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat")}


def hub_close_on_sundays(hub: Hub) -> Hub:
    """The factories' hubs open every day; closed-day tests close one on Sundays."""
    hub.opening_hours = dict(MONDAY_TO_SATURDAY)
    hub.save(update_fields=["opening_hours"])
    return hub


def service_day(days_ahead: int = 2) -> date:
    """The first day the test hubs are open, at least ``days_ahead`` from today."""
    day = timezone.localdate() + timedelta(days=days_ahead)
    while day.weekday() not in OPEN_WEEKDAYS:
        day += timedelta(days=1)
    return day


def closed_day() -> date:
    day = timezone.localdate() + timedelta(days=2)
    while day.weekday() in OPEN_WEEKDAYS:
        day += timedelta(days=1)
    return day


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return timezone.make_aware(datetime.combine(day, time(hour, minute)))


def near(
    center: tuple[float, float], rng: random.Random, radius_deg: float
) -> tuple[float, float]:
    return (
        round(center[0] + rng.uniform(-radius_deg, radius_deg), 6),
        round(center[1] + rng.uniform(-radius_deg, radius_deg), 6),
    )


@dataclass
class Day:
    hub: Hub
    day: date
    vehicles: list[Vehicle]
    shipments: list[Shipment]

    @property
    def vehicle_ids(self) -> list[int]:
        return [v.pk for v in self.vehicles]

    def legs(self, mile: str) -> list[Leg]:
        return list(
            Leg.objects.filter(shipment__in=self.shipments, mile=mile).order_by("pk")
        )


def last_mile_day(
    hubs,
    *,
    count: int = 8,
    vehicles: int = 2,
    day: date | None = None,
    seed: int = 7,
    window: tuple[int, int] = (9, 13),
    weight_kg: str = "2.5",
    **vehicle_fields,
) -> Day:
    """``count`` parcels from Grasse to doors around the Monaco hub, delivered on
    ``day`` inside ``window`` (hours)."""
    monaco = hubs[1]
    day = day or service_day()
    rng = random.Random(seed)
    shipments = [
        factories.shipment_make(
            destination=near(factories.MONACO_HUB, rng, 0.012),
            weight_kg=weight_kg,
            delivery_window_start=at(day, window[0]),
            delivery_window_end=at(day, window[1]),
        ).shipment
        for _ in range(count)
    ]
    fleet = [factories.vehicle_make(monaco, **vehicle_fields) for _ in range(vehicles)]
    return Day(hub=monaco, day=day, vehicles=fleet, shipments=shipments)


def first_mile_day(hubs, *, count: int = 6, vehicles: int = 2, seed: int = 11) -> Day:
    """Pickups at producers around Grasse, brought into the Nice DC on the day."""
    dc = hubs[0]
    day = service_day()
    rng = random.Random(seed)
    shipments = [
        factories.shipment_make(
            origin=near(factories.GRASSE, rng, 0.02),
            pickup_window_start=at(day, 8),
            pickup_window_end=at(day, 16),
            delivery_window_start=at(day + timedelta(days=1), 9),
            delivery_window_end=at(day + timedelta(days=1), 18),
        ).shipment
        for _ in range(count)
    ]
    fleet = [factories.vehicle_make(dc) for _ in range(vehicles)]
    return Day(hub=dc, day=day, vehicles=fleet, shipments=shipments)


def return_make(
    *, customer: tuple[float, float], shipper: tuple[float, float], day: date
) -> Shipment:
    """A return collected from ``customer`` on ``day`` and sent back to ``shipper``."""
    return factories.shipment_make(
        origin=customer,
        destination=shipper,
        is_return=True,
        pickup_window_start=at(day, 9),
        pickup_window_end=at(day, 12),
        delivery_window_start=at(day, 14),
        delivery_window_end=at(day, 19),
    ).shipment


def mile_legs(shipment: Shipment) -> dict[str, list[Leg]]:
    out: dict[str, list[Leg]] = {}
    for leg in shipment.legs.order_by("sequence"):
        out.setdefault(leg.mile, []).append(leg)
    return out


MILES = Mile


class GroupListener:
    """Collects what the channel layer delivers to one group, from its own thread
    and event loop with its own layer instance (as a consumer in another process
    would), until ``stop``."""

    def __init__(self, group: str):
        self.group = group
        self.messages: list[tuple[float, dict]] = []  # (monotonic arrival, message)
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main()), daemon=True
        )

    def __enter__(self) -> GroupListener:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("channel layer did not answer")
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _main(self) -> None:
        layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        channel = await layer.new_channel()
        await layer.group_add(self.group, channel)
        self._ready.set()
        try:
            while not self._stop.is_set():
                try:
                    message = await asyncio.wait_for(layer.receive(channel), 0.2)
                except TimeoutError:
                    continue
                self.messages.append((time_module.monotonic(), message))
        finally:
            await layer.group_discard(self.group, channel)
            flush = getattr(layer, "close_pools", None)
            if flush is not None:
                await flush()

    def of_type(self, message_type: str) -> list[dict]:
        return [m for _, m in self.messages if m.get("type") == message_type]

    def max_rate_per_second(self, message_type: str, clock: str | None = None) -> float:
        """The highest count of messages of this type inside any one second, by
        arrival, or by the sender's ``clock`` field (seconds) when given."""
        times = [
            m[clock] if clock else t
            for t, m in self.messages
            if m.get("type") == message_type
        ]
        best = 0
        for i, start in enumerate(times):
            best = max(best, sum(1 for t in times[i:] if t - start < 1.0))
        return float(best)
