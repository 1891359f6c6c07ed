"""Build the demo: network, fleet, people and a day of shipments across all miles.

    hubs + producers + customers → vehicles + drivers (driver1…N) + dispatcher
      → shipments: history (delivered yesterday), at the last-mile hub (today's
        deliveries), on the middle mile, awaiting first-mile pickup today, returns
      → today's routes optimized, assigned and published (dispatch.demo)

Everything random comes from one ``random.Random(seed)``, so a seed gives the
same network and shipments every time.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal

from django.contrib.auth.models import Group, User
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from dispatch.models import Vehicle
from dispatch.services import driver_create
from shipments.models import Hub, Location, Party
from shipments.roles import DISPATCHER_GROUP
from shipments.services import ParcelInput, leg_transition, shipment_create
from shipments.states import LegStatus

from . import network


@dataclass
class SeedSummary:
    hubs: int
    producers: int
    customers: int
    vehicles: int
    drivers: int
    shipments: int
    tracking_urls: list[str]
    dispatch: dict


def _jitter(rng: random.Random, lat_lng: tuple[float, float]) -> tuple[float, float]:
    # North of the anchor only: on the Riviera the sea is to the south.
    lat, lng = lat_lng
    return round(lat + rng.uniform(0, 0.004), 6), round(
        lng + rng.uniform(-0.003, 0.003), 6
    )


def _ascii(text: str) -> str:
    return (
        unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    )


def _local(day, hour: int, minute: int = 0) -> datetime:
    return timezone.make_aware(datetime.combine(day, time(hour, minute)))


@transaction.atomic
def demo_seed(*, seed: int = 7, password: str, shipments: int = 300) -> SeedSummary:
    rng = random.Random(seed)
    today = timezone.localdate()

    hubs = {}
    for code, name, kind, lat_lng, address, radius, cutoffs in network.HUBS:
        location = Location.objects.create(
            address=address, latitude=lat_lng[0], longitude=lat_lng[1]
        )
        hubs[code] = Hub.objects.create(
            code=code,
            name=name,
            kind=kind,
            location=location,
            service_radius_km=radius,
            cutoff_times=cutoffs,
            # open every day, so the demo has work whatever day it starts
            opening_hours={
                **{d: ["06:00", "21:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat")},
                "sun": ["07:00", "21:00"],
            },
            handling_minutes=30,
        )

    producers = []
    for name, kind, lat_lng, address in network.PRODUCERS:
        location = Location.objects.create(
            address=address,
            latitude=lat_lng[0],
            longitude=lat_lng[1],
            contact_name=name,
        )
        producers.append(
            Party.objects.create(
                name=name,
                kind=kind,
                email="orders@"
                + _ascii(name).replace(" ", "-").replace("'", "")
                + ".example",
                default_location=location,
            )
        )

    area_pool = [area for area in network.CUSTOMER_AREAS for _ in range(area[2])]
    customers = []
    for index in range(220):
        area_name, anchor, _ = rng.choice(area_pool)
        lat, lng = _jitter(rng, anchor)
        first, last = rng.choice(network.FIRST_NAMES), rng.choice(network.LAST_NAMES)
        address = f"{rng.randint(1, 120)} {rng.choice(network.STREETS)}, {area_name}"
        location = Location.objects.create(
            address=address,
            latitude=lat,
            longitude=lng,
            contact_name=f"{first} {last}",
            contact_phone=f"+33 6 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}",
            contact_email=f"{_ascii(first)}.{_ascii(last)}{index}@example.com",
        )
        customers.append(
            Party.objects.create(
                name=f"{first} {last}",
                kind=Party.Kind.CONSIGNEE,
                email=location.contact_email,
                phone=location.contact_phone,
                language=rng.choice(["fr", "fr", "en"]),
                default_location=location,
            )
        )

    dispatcher = User.objects.create_user(
        "dispatcher",
        password=password,
        first_name="Dana",
        last_name="Dispatch",
        is_staff=True,
    )
    dispatcher.groups.add(Group.objects.get_or_create(name=DISPATCHER_GROUP)[0])
    Token.objects.create(user=dispatcher)
    if not User.objects.filter(username="admin").exists():
        User.objects.create_superuser("admin", password=password)

    vehicles = []
    driver_count = 0
    for hub_code, kind, kg, m3, parcels, skills, count in network.FLEET:
        for _ in range(count):
            vehicle = Vehicle.objects.create(
                code=f"{hub_code}-{kind}-{len(vehicles) + 1}",
                type=kind,
                home_hub=hubs[hub_code],
                capacity_kg=Decimal(kg),
                capacity_m3=Decimal(str(m3)),
                capacity_parcels=parcels,
                skills=skills,
                cost_per_km=Decimal("0.45") if kind != "truck" else Decimal("1.10"),
                cost_per_hour=Decimal("28"),
            )
            vehicles.append(vehicle)
            driver_count += 1
            first = rng.choice(network.FIRST_NAMES)
            driver_create(
                username=f"driver{driver_count}",
                password=password,
                home_hub=hubs[hub_code],
                first_name=first,
                last_name=rng.choice(network.LAST_NAMES),
                phone=f"+33 7 00 00 00 {driver_count:02d}",
                default_vehicle=vehicle,
                # long enough for first-mile rounds leaving ~07:00 and evening windows to 21:00
                shift_start=time(6, 0) if kind == "truck" else time(6, 30),
                shift_end=time(21, 30),
            )

    tracking_urls = []
    windows = [(9, 12), (12, 15), (15, 18), (18, 21)]
    made = 0
    for index in range(shipments):
        producer = rng.choice(producers)
        customer = rng.choice(customers)
        roll = rng.random()
        is_return = roll > 0.94
        start_hour, end_hour = rng.choice(windows)
        if roll < 0.12:
            stage, day = "delivered", today - timedelta(days=1)
        elif roll < 0.55:
            stage, day = "at_last_hub", today
        elif roll < 0.65:
            stage, day = "middle", today + timedelta(days=1)
        else:
            stage, day = "awaiting_pickup", today + timedelta(days=1)
        if is_return:
            stage, day = "awaiting_pickup", today
        origin_party, destination_party = (
            (customer, producer) if is_return else (producer, customer)
        )
        origin, destination = (
            origin_party.default_location,
            destination_party.default_location,
        )
        count = rng.choice([1, 1, 1, 2, 2, 3])
        parcels = [
            ParcelInput(
                weight_kg=Decimal(str(round(rng.uniform(0.3, 12.0), 2))),
                volume_m3=Decimal(str(round(rng.uniform(0.002, 0.06), 3))),
            )
            for _ in range(count)
        ]
        created = shipment_create(
            shipper=producer,
            consignee=customer,
            reference=f"{'RET' if is_return else 'AM'}-{today:%y%m%d}-{index + 1:04d}",
            origin=_location_dict(origin),
            destination=_location_dict(destination),
            parcels=parcels,
            service_level=rng.choice(["same_day", "next_day", "next_day", "standard"]),
            pickup_window_start=_local(today, 8)
            if stage == "awaiting_pickup"
            else None,
            pickup_window_end=_local(today, 12) if stage == "awaiting_pickup" else None,
            delivery_window_start=_local(day, start_hour),
            delivery_window_end=_local(day, end_hour),
            is_return=is_return,
            notes=rng.choice(
                ["", "", "", "Leave with the concierge", "Ring twice", "Fragile: glass"]
            ),
            source="system",
            now=_local(today - timedelta(days=2), 8)
            if stage != "awaiting_pickup"
            else None,
        )
        _advance(created.shipment, stage, today)
        made += 1
        if len(tracking_urls) < 3 and stage == "at_last_hub":
            from shipments.tracking_tokens import tracking_url

            tracking_urls.append(tracking_url(created.tracking_token))

    dispatch_summary = demo_dispatch(service_date=today)
    return SeedSummary(
        hubs=len(hubs),
        producers=len(producers),
        customers=len(customers),
        vehicles=len(vehicles),
        drivers=driver_count,
        shipments=made,
        tracking_urls=tracking_urls,
        dispatch=dispatch_summary,
    )


def _location_dict(location: Location) -> dict:
    return {
        "address": location.address,
        "latitude": location.latitude,
        "longitude": location.longitude,
        "contact_name": location.contact_name,
        "contact_phone": location.contact_phone,
        "contact_email": location.contact_email,
    }


def _advance(shipment, stage: str, today) -> None:
    """Walk the legs through real transitions (with events) to the shipment's stage."""
    legs = list(shipment.legs.order_by("sequence"))
    if stage == "awaiting_pickup":
        return
    done = {"delivered": len(legs), "at_last_hub": len(legs) - 1, "middle": 1}[stage]
    yesterday = today - timedelta(days=1)
    for index, leg in enumerate(legs[:done]):
        at = _local(yesterday, 8 + 3 * index)
        for status in (
            LegStatus.ASSIGNED,
            LegStatus.IN_TRANSIT,
            LegStatus.ARRIVED,
            LegStatus.COMPLETED,
        ):
            leg_transition(leg_id=leg.pk, to=status, source="system", occurred_at=at)
            at += timedelta(minutes=40)


def demo_dispatch(*, service_date) -> dict:
    """Today's routes optimized, assigned and published (the dispatch app's demo step)."""
    try:
        from dispatch.demo import demo_day_dispatch
    except ImportError:
        return {"note": "dispatch.demo is not available; no routes were planned"}
    return demo_day_dispatch(service_date=service_date)
