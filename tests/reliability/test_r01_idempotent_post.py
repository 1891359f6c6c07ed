"""R1: idempotent POST under replay and concurrency, on a real server.

gunicorn (2 workers) on the test database; an httpx thread pool sends. For every
key: 10 copies at once (an in-flight race), then 3 in sequence: 13 sends. Then
the same key with a changed body, no key at all, the same key from another
principal, and (in process, with time-machine) the same key 25 h later. Effect
rows are counted by SQL per key.

CI size: 160 event-batch keys + 40 ping-batch keys + 40 shipment-create keys
(240 keys x 13 sends = 3,120 requests). Full bar (RELIABILITY_SCALE=10, about
10 minutes): 2,400 keys x 13 sends, 2,000 of them on the driver endpoints.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
import time_machine
from django.utils import timezone
from rest_framework.test import APIClient

from dispatch.models import DriverEventReceipt, LocationPing
from reliability.harness.http_pool import HttpPool, Sent
from reliability.harness.sizing import scaled, seed
from shipments.models import IdempotencyRecord, Shipment, ShipmentEvent
from tests import factories
from tests.reliability import builders

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

EVENT_KEYS = scaled(160, full=1600)
PING_KEYS = scaled(40, full=400)
SHIPMENT_KEYS = scaled(40, full=400)
CONCURRENT_COPIES = 10
SEQUENTIAL_COPIES = 3
KEYS_RACING_AT_ONCE = 2  # two keys' ten copies share the pool: 20 requests in flight


def _digest(sent: Sent) -> str:
    return hashlib.sha256(f"{sent.status}|".encode() + sent.body).hexdigest()


def _campaign(pool: HttpPool, path: str, headers: dict, bodies: dict[str, dict]):
    """10 concurrent then 3 sequential sends of each key's body; answers per key."""
    answers: dict[str, list[Sent]] = {key: [] for key in bodies}
    keys = list(bodies)
    for start in range(0, len(keys), KEYS_RACING_AT_ONCE):
        wave = [
            (key, {"json": bodies[key], "headers": {**headers, "Idempotency-Key": key}})
            for key in keys[start : start + KEYS_RACING_AT_ONCE]
            for _ in range(CONCURRENT_COPIES)
        ]
        sent = pool.burst([("POST", path, kwargs) for _, kwargs in wave])
        for (key, _), one in zip(wave, sent, strict=True):
            answers[key].append(one)
    for _round in range(SEQUENTIAL_COPIES):
        sent = pool.burst(
            [
                (
                    "POST",
                    path,
                    {
                        "json": bodies[key],
                        "headers": {**headers, "Idempotency-Key": key},
                    },
                )
                for key in keys
            ]
        )
        for key, one in zip(keys, sent, strict=True):
            answers[key].append(one)
    return answers


def _judge(answers: dict[str, list[Sent]], success: int) -> dict:
    statuses = Counter(one.status for many in answers.values() for one in many)
    replays = identical = in_flight_409 = 0
    mismatched_keys = []
    for key, many in answers.items():
        settled = [one for one in many if one.status != 409]
        first = _digest(settled[0]) if settled else None
        replays += len(settled) - 1
        same = sum(1 for one in settled[1:] if _digest(one) == first)
        identical += same
        in_flight_409 += len(many) - len(settled)
        if same != len(settled) - 1 or (settled and settled[0].status != success):
            mismatched_keys.append(key)
    return {
        "statuses": dict(statuses),
        "replays": replays,
        "identical_replays": identical,
        "in_flight_409": in_flight_409,
        "server_errors": sum(n for s, n in statuses.items() if s >= 500 or s == 0),
        "keys_not_identical": mismatched_keys[:5],
        "keys_not_identical_count": len(mismatched_keys),
    }


@pytest.fixture
def scene(hubs):
    """Drivers A and B with a published route each, a dispatcher and a shipper."""
    monaco = hubs[1]
    a = factories.driver_make(monaco)
    b = factories.driver_make(monaco)
    route_a = builders.published_route(hub=monaco, driver=a, stops=2)
    route_b = builders.published_route(hub=monaco, driver=b, stops=1)
    return {
        "a": a,
        "b": b,
        "route_a": route_a,
        "route_b": route_b,
        "barcode_a": route_a.stops.first()
        .legs.first()
        .shipment.parcels.first()
        .barcode,
        "barcode_b": route_b.stops.first()
        .legs.first()
        .shipment.parcels.first()
        .barcode,
        "dispatcher": factories.dispatcher_make(),
        "dispatcher_2": factories.dispatcher_make(),
        "shipper": factories.party_make(),
    }


def _scan_batch(route_id: int, barcode: str, seq: int, device: str) -> dict:
    """A scan: applied every time it is new, and it changes no state, so each
    applied copy would show as one more parcel.scanned event."""
    return {
        "device_id": device,
        "events": [
            builders.driver_event(
                "scanned",
                seq,
                timezone.now().isoformat(),
                route_id=route_id,
                barcode=barcode,
            )
        ],
    }


def _ping_batch(base, index: int) -> dict:
    at = base + timedelta(seconds=2 * index)
    return {
        # 50 batches per phone: below the per-device limit on ping batches
        # (120 a minute), which a single phone sending 400 at once would meet.
        "device_id": f"r1-phone-{index // 50}",
        "pings": [
            {
                "latitude": 43.7310 + index * 1e-5,
                "longitude": 7.4170,
                "accuracy": 8,
                "recorded_at": at.isoformat(),
            },
            {
                "latitude": 43.7311 + index * 1e-5,
                "longitude": 7.4171,
                "accuracy": 8,
                "recorded_at": (at + timedelta(seconds=1)).isoformat(),
            },
        ],
    }


def _shipment_body(shipper_id: int, reference: str, rng: random.Random) -> dict:
    return {
        "reference": reference,
        "shipper": shipper_id,
        "consignee": {"name": "Lou Martin"},
        "origin": {
            "address": "Grasse",
            "latitude": factories.GRASSE[0],
            "longitude": factories.GRASSE[1],
        },
        "destination": {
            "address": "Monaco",
            "latitude": round(43.7396 + rng.uniform(-0.004, 0.004), 6),
            "longitude": round(7.4276 + rng.uniform(-0.004, 0.004), 6),
        },
        "parcels": [{"weight_kg": str(round(rng.uniform(0.2, 20), 2))}],
        "notes": f"r1 {rng.random()}",
    }


def _effects_per_key(rows: dict[str, int], keys) -> Counter:
    """How many keys had 0, 1, 2… effect rows."""
    return Counter(rows.get(key, 0) for key in keys)


def test_r1_every_key_has_one_effect_and_identical_replays(
    live_server_url, scene, figure
):
    """Driver events, driver pings and shipment create: 13 sends per key."""
    rng = random.Random(seed())
    a, route_a = scene["a"], scene["route_a"]
    auth_a = builders.token_header(a.user)
    auth_d = builders.token_header(scene["dispatcher"])
    event_bodies = {
        builders.new_key("r1-ev"): _scan_batch(
            route_a.pk, scene["barcode_a"], seq, "r1-phone"
        )
        for seq in range(1, EVENT_KEYS + 1)
    }
    base = timezone.now() - timedelta(hours=2)
    ping_bodies = {
        builders.new_key("r1-pg"): _ping_batch(base, i) for i in range(PING_KEYS)
    }
    shipment_bodies = {
        key: _shipment_body(
            scene["shipper"].pk, f"R1-{i:05d}-{rng.randrange(10**6)}", rng
        )
        for i, key in enumerate(builders.new_key("r1-sh") for _ in range(SHIPMENT_KEYS))
    }

    started = time.monotonic()
    with HttpPool(live_server_url.url, workers=20) as pool:
        events = _campaign(pool, "/api/v1/driver/events/", auth_a, event_bodies)
        pings = _campaign(pool, "/api/v1/driver/pings/", auth_a, ping_bodies)
        shipments = _campaign(pool, "/api/v1/shipments/", auth_d, shipment_bodies)
    send_seconds = time.monotonic() - started

    # Effect rows by SQL, per key.
    receipt_rows = Counter(
        str(e) for e in DriverEventReceipt.objects.values_list("event_id", flat=True)
    )
    scan_rows = Counter(
        ShipmentEvent.objects.filter(type="parcel.scanned").values_list(
            "payload__driver_event_id", flat=True
        )
    )
    event_effects = {}
    for key, body in event_bodies.items():
        event_id = body["events"][0]["event_id"]
        # One receipt and one scan event per key; anything else is a miss or a double.
        n_receipts, n_scans = receipt_rows[event_id], scan_rows[event_id]
        event_effects[key] = n_receipts if n_receipts == n_scans else -1
    fix_rows = Counter(
        LocationPing.objects.filter(driver=a).values_list("recorded_at", flat=True)
    )
    ping_effects = {}
    for key, body in ping_bodies.items():
        times = [datetime.fromisoformat(p["recorded_at"]) for p in body["pings"]]
        counts = {fix_rows[t] for t in times}
        ping_effects[key] = counts.pop() if len(counts) == 1 else -1
    shipment_rows = Counter(
        Shipment.objects.filter(reference__startswith="R1-").values_list(
            "reference", flat=True
        )
    )
    shipment_effects = {
        key: shipment_rows[body["reference"]] for key, body in shipment_bodies.items()
    }
    record_rows = Counter(
        IdempotencyRecord.objects.filter(key__startswith="r1-").values_list(
            "key", flat=True
        )
    )
    # A record is written with its effect or not at all: none is left half-done.
    half_written = IdempotencyRecord.objects.filter(status_code=0).count()

    all_keys = [*event_bodies, *ping_bodies, *shipment_bodies]
    effects = {**event_effects, **ping_effects, **shipment_effects}
    distribution = _effects_per_key(effects, all_keys)
    not_one = sum(n for count, n in distribution.items() if count != 1)
    records_not_one = sum(1 for key in all_keys if record_rows[key] != 1)
    judged = {
        "driver_events": _judge(events, 200),
        "driver_pings": _judge(pings, 200),
        "shipment_create": _judge(shipments, 201),
    }
    replays = sum(j["replays"] for j in judged.values())
    identical = sum(j["identical_replays"] for j in judged.values())
    errors = sum(j["server_errors"] for j in judged.values())
    sends = len(all_keys) * (CONCURRENT_COPIES + SEQUENTIAL_COPIES)

    figure(
        "R1",
        "keys whose effect rows != 1",
        f"{not_one} of {len(all_keys)} keys x 13 sends ({sends} requests in {send_seconds:.1f} s)",
        "0",
        not_one == 0 and records_not_one == 0 and half_written == 0,
        details={
            "effect_rows_per_key": {str(k): v for k, v in distribution.items()},
            "idempotency_records_not_one": records_not_one,
            "idempotency_records_half_written": half_written,
            "per_endpoint": judged,
        },
    )
    figure(
        "R1",
        "replays byte-identical",
        f"{identical} of {replays} ({100 * identical / max(replays, 1):.2f}%)",
        "100%",
        identical == replays,
    )
    figure("R1", "5xx or transport errors", errors, "0", errors == 0)
    in_flight = sum(j["in_flight_409"] for j in judged.values())
    figure(
        "R1",
        "in-flight duplicates answered 409 (the rest replayed)",
        in_flight,
        "409 or replay, never a 2nd effect",
        not_one == 0,
    )

    assert errors == 0, judged
    assert not_one == 0, distribution
    assert records_not_one == 0
    assert half_written == 0
    assert identical == replays, judged


def test_r1_changed_body_missing_key_and_another_principal(
    live_server_url, scene, figure
):
    """Same key + changed body: 422 every time; no key on a driver write: 400 and
    nothing stored; driver B (or a second dispatcher) reusing A's key values gets
    a fresh answer of its own, never A's."""
    rng = random.Random(seed() + 1)
    a, b = scene["a"], scene["b"]
    route_a, route_b = scene["route_a"], scene["route_b"]
    auth_a, auth_b = builders.token_header(a.user), builders.token_header(b.user)
    auth_d1 = builders.token_header(scene["dispatcher"])
    auth_d2 = builders.token_header(scene["dispatcher_2"])
    n = scaled(30, full=300)

    a_bodies = {
        builders.new_key("r1b-ev"): _scan_batch(
            route_a.pk, scene["barcode_a"], s, "a-phone"
        )
        for s in range(1, n + 1)
    }
    ship_bodies = {
        builders.new_key("r1b-sh"): _shipment_body(
            scene["shipper"].pk, f"R1B-{i:04d}-{rng.randrange(10**6)}", rng
        )
        for i in range(max(5, n // 3))
    }
    with HttpPool(live_server_url.url, workers=16) as pool:

        def post(path, body, headers, key=None):
            extra = {"Idempotency-Key": key} if key else {}
            return pool.send("POST", path, json=body, headers={**headers, **extra})

        first_a = pool.map(
            lambda kv: post("/api/v1/driver/events/", kv[1], auth_a, kv[0]),
            a_bodies.items(),
        )
        first_ship = pool.map(
            lambda kv: post("/api/v1/shipments/", kv[1], auth_d1, kv[0]),
            ship_bodies.items(),
        )
        # 1. The same key with a changed body.
        changed = pool.map(
            lambda kv: post(
                "/api/v1/driver/events/",
                _scan_batch(route_a.pk, scene["barcode_a"], 10_000 + kv[0], "a-phone"),
                auth_a,
                kv[1],
            ),
            enumerate(a_bodies),
        )
        changed += pool.map(
            lambda kv: post(
                "/api/v1/shipments/", {**kv[1], "notes": "changed"}, auth_d1, kv[0]
            ),
            ship_bodies.items(),
        )
        # 2. No key on driver writes.
        receipts_before = DriverEventReceipt.objects.count()
        pings_before = LocationPing.objects.count()
        no_key = (
            [
                post(
                    "/api/v1/driver/events/",
                    _scan_batch(route_a.pk, scene["barcode_a"], 90_000 + i, "a-phone"),
                    auth_a,
                )
                for i in range(5)
            ]
            + [
                post(
                    "/api/v1/driver/pings/",
                    _ping_batch(timezone.now() - timedelta(hours=1), 500 + i),
                    auth_a,
                )
                for i in range(5)
            ]
            + [
                post("/api/v1/driver/duty/", {"status": "on_duty"}, auth_a)
                for _ in range(3)
            ]
        )
        stored_without_key = (
            DriverEventReceipt.objects.count()
            - receipts_before
            + LocationPing.objects.count()
            - pings_before
        )
        # 3. Driver B sends A's key values: with A's exact body, and with its own.
        # (Half the keys each: one key of B's carries one body of B's.)
        a_keys = list(a_bodies)
        b_with_a_body = pool.map(
            lambda key: post("/api/v1/driver/events/", a_bodies[key], auth_b, key),
            a_keys[::2],
        )
        b_own = pool.map(
            lambda kv: post(
                "/api/v1/driver/events/",
                _scan_batch(route_b.pk, scene["barcode_b"], kv[0] + 1, "b-phone"),
                auth_b,
                kv[1],
            ),
            enumerate(a_keys[1::2]),
        )
        d2_own = pool.map(
            lambda kv: post(
                "/api/v1/shipments/",
                {**kv[1], "reference": kv[1]["reference"] + "-D2"},
                auth_d2,
                kv[0],
            ),
            ship_bodies.items(),
        )

    a_answers = {one.body for one in first_a}
    changed_422 = sum(1 for one in changed if one.status == 422)
    no_key_400 = sum(1 for one in no_key if one.status == 400)
    leaked = sum(1 for one in b_with_a_body + b_own if one.body in a_answers)
    b_fresh_ok = [
        one.status == 200
        and json.loads(one.body)["results"][0]["status"] == "rejected"
        and json.loads(one.body)["results"][0]["reason"] == "unknown_route"
        for one in b_with_a_body
    ]
    b_own_ok = [
        one.status == 200 and json.loads(one.body)["results"][0]["status"] == "applied"
        for one in b_own
    ]
    d2_ok = [
        one.status == 201
        and json.loads(one.body)["reference"].endswith("-D2")
        and one.body not in {s.body for s in first_ship}
        for one in d2_own
    ]
    b_scans = (
        ShipmentEvent.objects.filter(
            type="parcel.scanned", shipment__legs__route_stops__route=route_b
        )
        .distinct()
        .count()
    )

    figure(
        "R1",
        "changed body answered 422",
        f"{changed_422} of {len(changed)}",
        "100%",
        changed_422 == len(changed),
        details={"statuses": dict(Counter(one.status for one in changed))},
    )
    figure(
        "R1",
        "driver writes without a key answered 400",
        f"{no_key_400} of {len(no_key)}; rows stored {stored_without_key}",
        "100% and 0 rows",
        no_key_400 == len(no_key) and stored_without_key == 0,
    )
    cross_ok = all(b_fresh_ok) and all(b_own_ok) and all(d2_ok) and leaked == 0
    figure(
        "R1",
        "another principal's key: own fresh result",
        f"{sum(b_fresh_ok) + sum(b_own_ok) + sum(d2_ok)} of "
        f"{len(b_fresh_ok) + len(b_own_ok) + len(d2_ok)}; first principal's body leaked {leaked}",
        "100%; 0 leaked",
        cross_ok,
    )

    assert [one.status for one in first_a] == [200] * len(first_a)
    assert [one.status for one in first_ship] == [201] * len(first_ship)
    assert changed_422 == len(changed)
    assert no_key_400 == len(no_key)
    assert stored_without_key == 0
    assert leaked == 0
    assert all(b_fresh_ok), [one.body[:200] for one in b_with_a_body[:3]]
    assert all(b_own_ok)
    assert all(d2_ok)
    assert b_scans == len(b_own)


def test_r1_a_key_still_replays_after_25_hours(live_server_url, scene, figure):
    """Keys are kept at least 24 h: 25 h later (time-machine, in process) the same
    key and body replay the first answer byte for byte and change nothing."""
    a, route_a = scene["a"], scene["route_a"]
    bodies = {
        builders.new_key("r1c"): _scan_batch(
            route_a.pk, scene["barcode_a"], s, "c-phone"
        )
        for s in range(1, 6)
    }
    with HttpPool(live_server_url.url, workers=5) as pool:
        first = {
            key: pool.send(
                "POST",
                "/api/v1/driver/events/",
                content=json.dumps(body).encode(),  # the same bytes as the retry below
                headers={
                    **builders.token_header(a.user),
                    "Idempotency-Key": key,
                    "Content-Type": "application/json",
                },
            )
            for key, body in bodies.items()
        }
    receipts = DriverEventReceipt.objects.count()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {a.user.auth_token.key}")

    with time_machine.travel(timezone.now() + timedelta(hours=25), tick=True):
        later = {
            key: client.post(
                "/api/v1/driver/events/",
                data=json.dumps(body),
                content_type="application/json",
                HTTP_IDEMPOTENCY_KEY=key,
            )
            for key, body in bodies.items()
        }

    identical = sum(
        1
        for key in bodies
        if later[key].status_code == first[key].status
        and later[key].content == first[key].body
    )
    figure(
        "R1",
        "replay 25 h later identical",
        f"{identical} of {len(bodies)}; new receipts {DriverEventReceipt.objects.count() - receipts}",
        "100%; 0 new effects",
        identical == len(bodies) and DriverEventReceipt.objects.count() == receipts,
    )
    assert identical == len(bodies)
    assert DriverEventReceipt.objects.count() == receipts
