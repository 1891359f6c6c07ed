"""Valid-by-default builders. A test overrides only the field it is about.

Shipments are built through the real service (``shipment_create``), so their
legs, parcels and events are what production would write.
"""

from __future__ import annotations

import itertools
from datetime import time, timedelta
from decimal import Decimal

from django.contrib.auth.models import Group, User
from django.utils import timezone
from rest_framework.authtoken.models import Token

from dispatch.models import Driver, Vehicle
from dispatch.services import driver_create
from shipments.models import Hub, Location, Party
from shipments.roles import DISPATCHER_GROUP
from shipments.services import ParcelInput, shipment_create

_counter = itertools.count(1)

# Real places on the French Riviera: the demo's region.
NICE_DC = (43.6730, 7.1900)  # Saint-Laurent-du-Var, regional distribution center
MONACO_HUB = (43.7311, 7.4167)  # Fontvieille, city hub
GRASSE = (43.6589, 6.9236)  # a producer, first mile into the DC
NICE_CENTER = (43.7009, 7.2683)
MONACO_CASINO = (43.7396, 7.4276)
PARIS = (48.8566, 2.3522)  # far from every hub


def location_make(lat_lng=NICE_CENTER, **kwargs) -> Location:
    lat, lng = lat_lng
    return Location.objects.create(
        address=kwargs.pop("address", f"{next(_counter)} Test street"),
        latitude=lat,
        longitude=lng,
        **kwargs,
    )


def hub_make(code: str, lat_lng, **kwargs) -> Hub:
    defaults = {
        "name": code.upper(),
        "kind": Hub.Kind.DEPOT,
        "service_radius_km": 12,
        "cutoff_times": ["12:00", "20:00"],
        # open every day, so tests that plan "today" pass on any weekday
        "opening_hours": {
            d: ["06:00", "22:00"]
            for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        },
        "handling_minutes": 30,
    }
    defaults.update(kwargs)
    return Hub.objects.create(
        code=code, location=location_make(lat_lng, address=f"{code} hub"), **defaults
    )


def hub_network() -> tuple[Hub, Hub]:
    """A regional DC near Nice (covering Grasse and Nice) and a Monaco city hub."""
    dc = hub_make(
        "nce-dc", NICE_DC, kind=Hub.Kind.DISTRIBUTION_CENTER, service_radius_km=30
    )
    monaco = hub_make("mco-hub", MONACO_HUB, service_radius_km=6)
    return dc, monaco


def party_make(kind=Party.Kind.SHIPPER, **kwargs) -> Party:
    n = next(_counter)
    return Party.objects.create(
        name=kwargs.pop("name", f"Party {n}"),
        kind=kind,
        email=kwargs.pop("email", f"party{n}@example.com"),
        **kwargs,
    )


def shipment_make(
    *,
    origin=GRASSE,
    destination=MONACO_CASINO,
    shipper: Party | None = None,
    weight_kg: str = "2.5",
    parcels: int = 1,
    **kwargs,
):
    """Create a shipment through the service; returns the CreatedShipment."""
    now = timezone.now()
    return shipment_create(
        shipper=shipper or party_make(),
        consignee=party_make(Party.Kind.CONSIGNEE, language="en"),
        reference=kwargs.pop("reference", f"REF-{next(_counter):06d}"),
        origin={
            "address": "Origin street 1",
            "latitude": origin[0],
            "longitude": origin[1],
        },
        destination={
            "address": "Destination street 2",
            "latitude": destination[0],
            "longitude": destination[1],
            "contact_name": "Camille Martin",
            "contact_phone": "+33600000000",
        },
        parcels=[ParcelInput(weight_kg=Decimal(weight_kg)) for _ in range(parcels)],
        service_level=kwargs.pop("service_level", "next_day"),
        delivery_window_start=kwargs.pop(
            "delivery_window_start", now + timedelta(days=1)
        ),
        delivery_window_end=kwargs.pop(
            "delivery_window_end", now + timedelta(days=1, hours=4)
        ),
        **kwargs,
    )


def dispatcher_make(username: str | None = None) -> User:
    user = User.objects.create_user(
        username=username or f"dispatcher{next(_counter)}", password="pass-1234-word"
    )
    user.groups.add(Group.objects.get_or_create(name=DISPATCHER_GROUP)[0])
    Token.objects.get_or_create(user=user)
    return user


def vehicle_make(hub: Hub, **kwargs) -> Vehicle:
    defaults = {
        "code": f"van-{next(_counter)}",
        "type": Vehicle.Type.VAN,
        "capacity_kg": Decimal("800"),
        "capacity_m3": Decimal("8"),
        "capacity_parcels": 120,
    }
    defaults.update(kwargs)
    return Vehicle.objects.create(home_hub=hub, **defaults)


def driver_make(hub: Hub, **kwargs) -> Driver:
    n = next(_counter)
    return driver_create(
        username=kwargs.pop("username", f"driver{n}"),
        password=kwargs.pop("password", "pass-1234-word"),
        home_hub=hub,
        first_name=kwargs.pop("first_name", "Alex"),
        last_name=kwargs.pop("last_name", f"Durand{n}"),
        shift_start=kwargs.pop("shift_start", time(7, 0)),
        shift_end=kwargs.pop("shift_end", time(17, 0)),
        **kwargs,
    )
