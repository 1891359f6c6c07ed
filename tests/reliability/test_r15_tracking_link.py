"""R15: the tracking link is unguessable, non-enumerable, minimal and expiring.

(a) token quality: 100,000 tokens from the real generator (length, alphabet,
    collisions, per-position entropy); the token is a function of a random
    per-shipment salt only (no id in it); only its SHA-256 is stored, and no
    table holds the raw token (a scan of every text and JSON column);
(b) guessing: random guesses from one client (0 hits; 429 after the miss
    threshold), more from rotating addresses (0 hits), 100,000 more by hash
    against the table; invalid, expired and revoked answer identically;
(c) PII: response keys within the A6 allow-list, no phone/e-mail pattern, no
    known personal value; the driver's position only while out for delivery;
(d) expiry: gone 14 days after a terminal state (time-machine); revocation;
(e) headers: ``Referrer-Policy: no-referrer``, ``Cache-Control: no-store``,
    ``X-Robots-Tag: noindex`` on every public answer.

CI size: 100,000 generated tokens (the full bar), 1,000 one-client guesses,
2,000 rotating-address guesses. Full bar (RELIABILITY_SCALE=5): 5,000 and 10,000.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import re
import secrets
from collections import Counter
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from dispatch.pings import PingInput, driver_pings_record
from dispatch.pod import PodInput, pod_create
from dispatch.services import route_assign, route_publish
from notifications.defaults import notification_rules_install_defaults
from notifications.models import Message
from notifications.tasks import notification_event_process_task
from reliability.harness.sizing import scaled
from shipments import tracking_tokens
from shipments.models import Shipment
from shipments.services import leg_transition, shipment_tracking_token
from shipments.states import LegStatus, Mile
from shipments.tracking_tokens import (
    tracking_salt_new,
    tracking_token_hash,
    tracking_token_make,
)
from tests import factories
from tests.dispatch import builders as dispatch_builders
from tests.reliability import builders

pytestmark = pytest.mark.django_db

TOKENS = 100_000
ONE_CLIENT_GUESSES = scaled(1_000, full=5_000)
ROTATING_GUESSES = scaled(2_000, full=10_000)
MISS_THRESHOLD = 30  # misses per minute per address before 429 (RELIABILITY R15)
EXPIRY_DAYS = 14
TOKEN_ALPHABET = re.compile(r"^[A-Za-z0-9_-]+$")

# A6: what a link holder may see, as a tree of allowed keys.
ALLOWED = {
    "reference": None,
    "status": None,
    "status_label": None,
    "status_text": None,
    "is_return": None,
    "parcel_count": None,
    "service_level": None,
    "promised_by": None,
    "eta_window": {"start": None, "end": None},
    "is_delayed": None,
    "milestones": {"key": None, "label": None, "at": None, "done": None},
    "next_step": None,
    "driver": {
        "first_name": None,
        "position": {"latitude": None, "longitude": None, "recorded_at": None},
    },
    "proof_of_delivery": {
        "delivered_at": None,
        "received_by": None,
        "has_photo": None,
        "has_signature": None,
    },
    "updated_at": None,
    "live": {"websocket": None, "seq": None, "poll_seconds": None},
}
PHONE = re.compile(
    r"(?<![\w:.-])(?:\+|00)\d[\d .-]{6,16}\d|(?<![\w:.-])0\d(?:[ .-]?\d\d){4}(?!\d)"
)
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
HEADERS = {
    "Referrer-Policy": lambda v: v == "no-referrer",
    "Cache-Control": lambda v: "no-store" in v,
    "X-Robots-Tag": lambda v: "noindex" in v,
}


class Public:
    """An anonymous client; every answer's headers are checked as it passes."""

    def __init__(self):
        self.client = APIClient()
        self.checked = 0
        self.missing: list[str] = []

    def get(self, path: str, address: str = "198.51.100.7"):
        response = self.client.get(path, REMOTE_ADDR=address)
        self.checked += 1
        absent = [h for h, ok in HEADERS.items() if not ok(response.get(h, ""))]
        if absent:  # one entry per answer that lacks any of the three
            self.missing.append(f"{path[:48]} {response.status_code}: {absent}")
        return response

    def track(self, token: str, address: str = "198.51.100.7"):
        return self.get(f"/api/v1/track/{token}/", address)

    def page(self, token: str, address: str = "198.51.100.7"):
        return self.get(f"/t/{token}", address)


def _bits_per_position(tokens: list[str]) -> float:
    """Sum over positions of the observed Shannon entropy (an estimate)."""
    total = 0.0
    for position in range(len(tokens[0])):
        counts = Counter(t[position] for t in tokens)
        n = sum(counts.values())
        total -= sum(c / n * math.log2(c / n) for c in counts.values())
    return total


def test_r15a_tokens_are_long_random_and_unrelated_to_ids(figure):
    salts = [tracking_salt_new() for _ in range(TOKENS)]
    tokens = [tracking_token_make(salt=salt, version=1) for salt in salts]
    lengths = Counter(len(t) for t in tokens)
    bad_alphabet = sum(1 for t in tokens if not TOKEN_ALPHABET.match(t))
    collisions = TOKENS - len(set(tokens))
    salt_collisions = TOKENS - len(set(salts))
    estimated_bits = _bits_per_position(tokens)
    # The randomness comes from ``secrets``: 128 bits of salt per shipment.
    salt_bits = len(salts[0]) * 4
    uses_secrets = "secrets." in inspect.getsource(tracking_tokens.tracking_salt_new)

    figure(
        "R15",
        "token quality (100,000 generated)",
        f"{collisions} collisions, lengths {dict(lengths)}, ~{estimated_bits:.0f} bits "
        f"observed, {salt_bits}-bit salt from secrets={uses_secrets}",
        "0 collisions, >= 128 bits from secrets",
        collisions == 0 and salt_bits >= 128 and uses_secrets and estimated_bits >= 128,
    )
    assert collisions == 0
    assert salt_collisions == 0
    assert bad_alphabet == 0
    assert min(lengths) >= 22  # 128 bits in base64url
    assert salt_bits >= 128
    assert uses_secrets
    assert estimated_bits >= 128


def test_r15a_only_the_hash_is_stored_and_no_table_holds_the_token(
    hubs, dispatcher_client, figure
):
    """Tokens issued through the API (create with an Idempotency-Key, as an
    integrator retries it, and a reissue) then a scan of every text column."""
    shipper = factories.party_make()
    created = dispatcher_client.post(
        "/api/v1/shipments/",
        {
            "reference": "R15-LEAK-1",
            "shipper": shipper.pk,
            "consignee": {
                "name": "Lou Martin",
                "phone": "+33611223344",
                "email": "lou.martin@example.com",
            },
            "origin": {"address": "Grasse", "latitude": 43.6589, "longitude": 6.9236},
            "destination": {
                "address": "Monaco",
                "latitude": 43.7396,
                "longitude": 7.4276,
            },
            "parcels": [{"weight_kg": "2"}],
        },
        format="json",
        HTTP_IDEMPOTENCY_KEY="r15-create",
    )
    assert created.status_code == 201, created.content[:300]
    first_token = created.json()["tracking_url"].rsplit("/", 1)[1]
    shipment = Shipment.objects.get(reference="R15-LEAK-1")
    reissued = dispatcher_client.post(
        f"/api/v1/shipments/{shipment.pk}/tracking-link/",
        HTTP_IDEMPOTENCY_KEY="r15-reissue",
    )
    assert reissued.status_code == 200
    token = reissued.json()["tracking_url"].rsplit("/", 1)[1]
    shipment.refresh_from_db()
    # The parcel is picked up; the worker turns the events into customer
    # messages (the task function, called in process, with the default rules).
    notification_rules_install_defaults()
    first = shipment.legs.order_by("sequence").first()
    dispatch_builders.leg_walk(first, LegStatus.ASSIGNED, LegStatus.IN_TRANSIT)
    for event_id in shipment.events.values_list("id", flat=True):
        notification_event_process_task(event_id)

    # The token is a function of the random salt and version: ids play no part.
    rederived = shipment_tracking_token(shipment) == token
    others = [factories.shipment_make() for _ in range(20)]
    # A short id ("7") turns up inside a random 43-character token by chance
    # about half the time, so only ids of 4+ digits and references are looked for.
    id_in_token = sum(
        1
        for c in others
        if (len(str(c.shipment.pk)) >= 4 and str(c.shipment.pk) in c.tracking_token)
        or c.shipment.reference in c.tracking_token
    )
    ordered = [c.tracking_token for c in sorted(others, key=lambda c: c.shipment.pk)]
    ascending = sum(1 for a, b in zip(ordered, ordered[1:], strict=False) if a < b)

    leaks = _tables_holding(token) + _tables_holding(first_token)
    stored_hash_ok = (
        shipment.tracking_token_hash == hashlib.sha256(token.encode()).hexdigest()
    )
    figure(
        "R15",
        "tables holding a raw token (DB leak = link leak)",
        f"{len(set(leaks))}: {sorted(set(leaks))}",
        "0 (only the SHA-256 stored)",
        not leaks and stored_hash_ok,
        details={"customer_messages_rendered": Message.objects.count()},
    )
    assert stored_hash_ok
    assert rederived
    assert id_in_token == 0
    assert 2 <= ascending <= 17  # no ordering shared with ids (19 pairs)
    assert not leaks, f"raw tracking tokens stored in {sorted(set(leaks))}"


def _tables_holding(needle: str) -> list[str]:
    """``table.column`` of every text or JSON column containing ``needle``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type IN "
            "('text', 'character varying', 'json', 'jsonb')"
        )
        columns = cursor.fetchall()
        found = []
        for table, column in columns:
            cursor.execute(
                f'SELECT 1 FROM "{table}" WHERE "{column}"::text LIKE %s LIMIT 1',  # names from the catalogue
                [f"%{needle}%"],
            )
            if cursor.fetchone():
                found.append(f"{table}.{column}")
    return found


def test_r15b_guessing_finds_nothing_and_is_throttled(hubs, figure):
    for _ in range(5):
        factories.shipment_make()
    public = Public()
    with time_machine.travel(timezone.now(), tick=False):  # one rate-limit window
        answers = [
            public.track(secrets.token_urlsafe(32), "203.0.113.9")
            for _ in range(ONE_CLIENT_GUESSES)
        ]
    statuses = [a.status_code for a in answers]
    hits = statuses.count(200)
    first_429 = statuses.index(429) + 1 if 429 in statuses else None
    admitted_misses = statuses.count(404)
    after_threshold_all_429 = all(s == 429 for s in statuses[MISS_THRESHOLD:])

    # An attacker with many addresses gets past the per-address limit; the
    # token space must still hold.
    rotating_hits = 0
    rotating_judged = 0
    with time_machine.travel(timezone.now(), tick=False):
        for n in range(ROTATING_GUESSES):
            answer = public.track(
                secrets.token_urlsafe(32), f"10.{n // 25 // 250}.{n // 25 % 250}.9"
            )
            rotating_judged += answer.status_code in (200, 404)
            rotating_hits += answer.status_code == 200
    by_hash = [tracking_token_hash(secrets.token_urlsafe(32)) for _ in range(100_000)]
    hash_hits = Shipment.objects.filter(tracking_token_hash__in=by_hash).count()

    figure(
        "R15",
        "guessing hits",
        f"{hits} of {ONE_CLIENT_GUESSES} one-client, {rotating_hits} of {rotating_judged} "
        f"rotating, {hash_hits} of 100,000 by hash",
        "0",
        hits == 0 and rotating_hits == 0 and hash_hits == 0,
    )
    figure(
        "R15",
        "one client: first 429 at guess",
        f"{first_429} ({admitted_misses} misses admitted)",
        f"429 after {MISS_THRESHOLD} misses/min",
        first_429 == MISS_THRESHOLD + 1 and after_threshold_all_429,
    )
    assert hits == rotating_hits == hash_hits == 0
    assert rotating_judged == ROTATING_GUESSES
    assert first_429 == MISS_THRESHOLD + 1
    assert after_threshold_all_429
    assert not public.missing, public.missing[:5]


def _delivered_shipment(hub, driver):
    route = builders.published_route(hub=hub, driver=driver, stops=1)
    stop = builders.delivery_stops(route)[0]
    pod_create(
        stop_id=stop.pk, driver_id=driver.pk, data=PodInput(recipient_name="Neighbour")
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {driver.user.auth_token.key}")
    answer = client.post(
        "/api/v1/driver/events/",
        {
            "device_id": "r15",
            "events": [
                builders.driver_event(
                    "delivered", 1, timezone.now().isoformat(), stop_id=stop.pk
                )
            ],
        },
        format="json",
        HTTP_IDEMPOTENCY_KEY=builders.new_key("r15"),
    )
    assert answer.json()["results"][0]["status"] == "applied"
    shipment = stop.legs.first().shipment
    shipment.refresh_from_db()
    assert shipment.status == "delivered"
    return shipment


def test_r15b_invalid_expired_and_revoked_answer_identically(
    hubs, dispatcher_client, figure
):
    driver = factories.driver_make(hubs[1])
    delivered = _delivered_shipment(hubs[1], driver)
    expired_token = shipment_tracking_token(delivered)
    live = factories.shipment_make()
    revoked_token = live.tracking_token
    assert (
        dispatcher_client.post(
            f"/api/v1/shipments/{live.shipment.pk}/tracking-link/",
            HTTP_IDEMPOTENCY_KEY="r15-revoke",
        ).status_code
        == 200
    )
    public = Public()
    later = delivered.completed_at + timedelta(days=EXPIRY_DAYS, hours=1)
    with time_machine.travel(later, tick=False):
        cases = {
            "invalid": secrets.token_urlsafe(32),
            "expired": expired_token,
            "revoked": revoked_token,
        }
        api = {
            k: public.track(t, f"192.0.2.{i}") for i, (k, t) in enumerate(cases.items())
        }
        page = {
            k: public.page(t, f"192.0.2.{10 + i}")
            for i, (k, t) in enumerate(cases.items())
        }
    shapes = {
        (a.status_code, a.content, page[k].status_code, page[k].content)
        for k, a in api.items()
    }
    figure(
        "R15",
        "invalid / expired / revoked answers",
        f"{len(shapes)} distinct (API {[a.status_code for a in api.values()]}, "
        f"page {[p.status_code for p in page.values()]})",
        "1 (identical status and body)",
        len(shapes) == 1,
    )
    assert len(shapes) == 1
    assert {a.status_code for a in api.values()} <= {404, 410}
    assert not public.missing, public.missing


def test_r15d_the_link_expires_14_days_after_the_terminal_state(hubs, figure):
    driver = factories.driver_make(hubs[1])
    delivered = _delivered_shipment(hubs[1], driver)
    token = shipment_tracking_token(delivered)
    public = Public()
    answers = {}
    for label, delta in (
        ("13 d 23 h", timedelta(days=EXPIRY_DAYS) - timedelta(hours=1)),
        ("14 d 1 h", timedelta(days=EXPIRY_DAYS, hours=1)),
    ):
        with time_machine.travel(delivered.completed_at + delta, tick=False):
            answers[label] = public.track(token, "192.0.2.50").status_code
    figure(
        "R15",
        "expiry after the terminal state",
        answers,
        "200 before 14 d, 404/410 after",
        answers["13 d 23 h"] == 200 and answers["14 d 1 h"] in (404, 410),
    )
    assert answers["13 d 23 h"] == 200
    assert answers["14 d 1 h"] in (404, 410)


def _keys_outside(body, allowed, path="") -> list[str]:
    out = []
    if isinstance(body, list):
        for item in body:
            out += _keys_outside(item, allowed, path + "[]")
    elif isinstance(body, dict):
        for key, value in body.items():
            if allowed is None or key not in allowed:
                out.append(f"{path}.{key}")
            elif allowed[key] is not None:
                out += _keys_outside(value, allowed[key], f"{path}.{key}")
    return out


def _strings(body) -> list[str]:
    if isinstance(body, dict):
        return [s for v in body.values() for s in _strings(v)]
    if isinstance(body, list):
        return [s for v in body for s in _strings(v)]
    return [body] if isinstance(body, str) else []


def _fresh_fix(driver):
    driver_pings_record(
        driver_id=driver.pk,
        device_id="r15",
        pings=[
            PingInput(
                latitude=43.735,
                longitude=7.42,
                accuracy_meters=5,
                recorded_at=timezone.now(),
            )
        ],
    )


def test_r15c_minimal_view_in_every_state(hubs, figure):
    """Planned, middle mile (its last leg already on a driver's route, the driver
    live), out for delivery, delivered: keys, PII and the driver's position."""
    dc, monaco = hubs
    public = Public()
    views = {}
    # Planned
    planned = factories.shipment_make()
    views["planned"] = public.track(planned.tracking_token).json()
    # Middle mile, with the last leg on a published route of a live driver
    middle = factories.shipment_make().shipment
    legs = {leg.mile: leg for leg in middle.legs.order_by("sequence")}
    dispatch_builders.leg_walk(
        legs[Mile.FIRST], LegStatus.ASSIGNED, LegStatus.IN_TRANSIT, LegStatus.COMPLETED
    )
    leg_transition(leg_id=legs[Mile.MIDDLE].pk, to=LegStatus.ASSIGNED, source="system")
    leg_transition(
        leg_id=legs[Mile.MIDDLE].pk, to=LegStatus.IN_TRANSIT, source="system"
    )
    middle_driver = factories.driver_make(monaco)
    route = dispatch_builders.route_make(
        hub=monaco, stops=[{"kind": "delivery", "legs": [legs[Mile.LAST]]}]
    )
    route_assign(
        route_id=route.pk,
        driver_id=middle_driver.pk,
        vehicle_id=factories.vehicle_make(monaco).pk,
    )
    route_publish(route_id=route.pk)
    _fresh_fix(middle_driver)
    middle.refresh_from_db()
    views[f"middle mile ({middle.status})"] = public.track(
        shipment_tracking_token(middle)
    ).json()
    # Out for delivery, live driver
    driver = factories.driver_make(monaco)
    out_route = builders.published_route(hub=monaco, driver=driver, stops=1)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {driver.user.auth_token.key}")
    client.post(
        "/api/v1/driver/events/",
        {
            "device_id": "r15",
            "events": [
                builders.driver_event(
                    "route_started",
                    1,
                    timezone.now().isoformat(),
                    route_id=out_route.pk,
                )
            ],
        },
        format="json",
        HTTP_IDEMPOTENCY_KEY=builders.new_key("r15"),
    )
    _fresh_fix(driver)
    out = builders.delivery_stops(out_route)[0].legs.first().shipment
    out.refresh_from_db()
    views[f"last mile ({out.status})"] = public.track(
        shipment_tracking_token(out)
    ).json()
    # Delivered (same driver still live)
    delivered = _delivered_shipment(monaco, factories.driver_make(monaco))
    views["delivered"] = public.track(shipment_tracking_token(delivered)).json()

    known_pii = set()
    for s in Shipment.objects.select_related(
        "consignee", "shipper", "destination", "origin"
    ):
        for value in (
            s.consignee.email,
            s.consignee.phone,
            s.consignee.name,
            s.shipper.email,
            s.destination.address,
            s.destination.contact_phone,
            s.destination.contact_name,
            s.origin.address,
        ):
            if value and len(value) > 4:
                known_pii.add(value)
    for d in (middle_driver, driver):
        known_pii |= {d.user.last_name, d.user.username, d.user.email} - {""}

    outside = {state: _keys_outside(v, ALLOWED) for state, v in views.items()}
    pattern_hits = {
        state: [s for s in _strings(v) if PHONE.search(s) or EMAIL.search(s)]
        for state, v in views.items()
    }
    known_hits = {
        state: [p for p in known_pii if p in json.dumps(v)]
        for state, v in views.items()
    }
    positions = {
        state: bool((v.get("driver") or {}).get("position"))
        for state, v in views.items()
    }
    keys_total = sum(len(v) for v in outside.values())
    pii_total = sum(len(v) for v in pattern_hits.values()) + sum(
        len(v) for v in known_hits.values()
    )
    position_wrong = [
        state
        for state, shown in positions.items()
        if shown != state.startswith("last mile")
    ]
    figure(
        "R15",
        "keys outside the allow-list",
        f"{keys_total}: {outside}",
        "0",
        keys_total == 0,
    )
    figure(
        "R15",
        "PII regex / known-value matches",
        f"{pii_total}: {pattern_hits} {known_hits}",
        "0",
        pii_total == 0,
    )
    figure(
        "R15",
        "driver position shown only out for delivery",
        positions,
        "only in the last mile",
        not position_wrong,
    )
    figure(
        "R15",
        "header coverage",
        f"{public.checked - len(public.missing)} of {public.checked}",
        "100%",
        not public.missing,
    )
    assert out.status == "out_for_delivery"
    assert middle.status == "in_transit"
    assert keys_total == 0, outside
    assert pii_total == 0, (pattern_hits, known_hits)
    assert not position_wrong, positions
    assert not public.missing, public.missing


def test_r15e_headers_on_every_public_answer(hubs, figure):
    """The JSON API, the page and the customer-action reads, for 200, 404, 429."""
    live = factories.shipment_make()
    public = Public()
    public.track(live.tracking_token, "192.0.2.90")
    public.page(live.tracking_token, "192.0.2.90")
    public.get(f"/api/v1/track/{live.tracking_token}/delivery-options/", "192.0.2.90")
    public.track("x" * 43, "192.0.2.91")
    public.page("x" * 43, "192.0.2.91")
    public.get(f"/api/v1/track/{'x' * 43}/delivery-options/", "192.0.2.91")
    statuses = set()
    with time_machine.travel(timezone.now(), tick=False):
        for _ in range(MISS_THRESHOLD + 2):
            statuses.add(
                public.track(secrets.token_urlsafe(32), "192.0.2.92").status_code
            )
        statuses.add(public.page(secrets.token_urlsafe(32), "192.0.2.92").status_code)
    covered = public.checked - len(public.missing)
    figure(
        "R15",
        "public answers with all three headers",
        f"{covered} of {public.checked} (statuses {sorted(statuses)})",
        "100%",
        not public.missing,
        details={"missing": public.missing[:10]},
    )
    assert 429 in statuses
    assert not public.missing, public.missing
