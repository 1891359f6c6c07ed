"""R13: object-level authorization (BOLA/BFLA) probes from the schema.

tests/test_permissions.py checks function level (role x endpoint on ids that
exist nowhere). This adds the object level: every operation in the OpenAPI
schema that names an object in its path is called with a real object that
belongs to driver A and with an id that exists nowhere, as

* driver B (same hub, their own route): A's objects must be answered exactly
  like missing ones (uniform 404; 403 where the whole operation is refused);
* anonymous, and a tracking-token holder (A's shipment's token): nothing but
  the public tracking operations, and those only for that token;

and objects named in a body: A's stop and route in B's event batch, A's stop
as B's proof-of-delivery target. Driver A on their own objects is the positive
control (the probes would see a leak). The policy is the table below.

Tenancy (T1/T2 in RELIABILITY.md) does not exist in Allmile yet: the two
relations tested are driver-vs-driver and driver-vs-dispatcher.

CI size = full bar: every operation with an object in its path, all principals.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import uuid

import pytest
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from PIL import Image
from rest_framework.test import APIClient

from dispatch.pod import PodInput, pod_create
from shipments.services import shipment_tracking_token
from tests import factories
from tests.reliability import builders

pytestmark = pytest.mark.django_db

MISSING_ID = "987654321"
METHODS = ("get", "post", "put", "patch", "delete")
# Policy: who may use an operation on A's objects (path prefix -> principals).
# "own" = driver A; "dispatcher" = any dispatcher; "token" = the link holder.
POLICY = [
    (
        r"^/api/v1/track/\{token\}/",
        {"own", "dispatcher", "token", "anonymous", "other"},
    ),
    (r"^/api/v1/driver/(routes|stops)/\{\w+\}/(pod/)?$", {"own", "dispatcher"}),
    (r"^/api/v1/driver/", {"own"}),
    (r"^/api/v1/pods/", {"own", "dispatcher"}),
    (r"^/api/v1/", {"dispatcher"}),
]


def _allowed(path: str) -> set[str]:
    for pattern, principals in POLICY:
        if re.match(pattern, path):
            return principals
    return set()


def _operations():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    for path, operations in schema["paths"].items():
        if "{" not in path:
            continue
        for method in METHODS:
            if method in operations:
                yield method, path


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), "green").save(out, "JPEG")
    return out.getvalue()


@pytest.fixture
def world(hubs):
    """Driver A's work (route, stops, shipment, leg, POD), driver B's own route."""
    monaco = hubs[1]
    a = factories.driver_make(monaco)
    b = factories.driver_make(monaco)
    route_a = builders.published_route(hub=monaco, driver=a, stops=2)
    route_b = builders.published_route(hub=monaco, driver=b, stops=1)
    stop_a = builders.delivery_stops(route_a)[0]
    leg_a = stop_a.legs.first()
    shipment_a = leg_a.shipment
    pod = pod_create(
        stop_id=stop_a.pk,
        driver_id=a.pk,
        data=PodInput(photo=_jpeg(), recipient_name="C. Martin"),
    )
    return {
        "a": a,
        "b": b,
        "route_a": route_a,
        "route_b": route_b,
        "stop_a": stop_a,
        "stop_b": builders.delivery_stops(route_b)[0],
        "ids": {
            "route_id": route_a.pk,
            "stop_id": stop_a.pk,
            "shipment_id": shipment_a.pk,
            "pod_id": pod.pk,
            "leg_id": leg_a.pk,
            "token": shipment_tracking_token(shipment_a),
            "part": "photo",
            "/shipments/{id}/": shipment_a.pk,
            "/legs/{id}/": leg_a.pk,
            "/drivers/{id}/": a.pk,
            "/vehicles/{id}/": route_a.vehicle_id,
            "/hubs/{id}/": monaco.pk,
            "/parties/{id}/": shipment_a.consignee_id,
        },
        "dispatcher": factories.dispatcher_make(),
    }


def _client(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {user.auth_token.key}")
    return client


def _fill(path: str, ids: dict, *, missing: bool) -> str | None:
    def value(match):
        name = match.group(1)
        if name == "part":
            return "photo"
        if name == "token":
            return secrets.token_urlsafe(32) if missing else str(ids["token"])
        if missing:
            return MISSING_ID
        if name == "id":
            for prefix, object_id in ids.items():
                if prefix.startswith("/") and prefix in path:
                    return str(object_id)
            return None
        return str(ids[name]) if name in ids else None

    parts = []
    for piece in re.split(r"(\{\w+\})", path):
        match = re.fullmatch(r"\{(\w+)\}", piece)
        if match:
            filled = value(match)
            if filled is None:
                return None  # no object of that kind exists in this world
            parts.append(filled)
        else:
            parts.append(piece)
    return "".join(parts)


def _call(client, method: str, url: str):
    kwargs = {
        "HTTP_IDEMPOTENCY_KEY": f"r13-{uuid.uuid4()}",
        "REMOTE_ADDR": "192.0.2.13",
    }
    if method == "get":
        return client.get(url, **kwargs)
    return getattr(client, method)(url, {}, format="json", **kwargs)


def _shape(response) -> tuple[int, bytes]:
    """Status and body, with per-request noise (ids echoed back) removed."""
    return response.status_code, re.sub(rb"\d{6,}", b"N", response.content)


def test_r13_foreign_objects_answer_like_missing_ones(world, figure):
    principals = {
        "own": _client(world["a"].user),
        "other": _client(world["b"].user),
        "dispatcher": _client(world["dispatcher"]),
        "anonymous": _client(),
    }
    probes = unauthorized = 0
    leaks, non_uniform, own_refused, skipped = [], [], [], []
    for method, path in _operations():
        real = _fill(path, world["ids"], missing=False)
        if real is None:
            skipped.append(f"{method.upper()} {path}")
            continue
        missing = _fill(path, world["ids"], missing=True)
        allowed = _allowed(path)
        for name, client in principals.items():
            if name in ("own", "dispatcher") and method != "get":
                continue  # allowed writes with an empty body prove nothing here
            answer = _call(client, method, real)
            if name not in allowed:
                probes += 1
                if answer.status_code < 300:
                    unauthorized += 1
                    leaks.append(
                        f"{name} {method.upper()} {real}: {answer.status_code}"
                    )
                other = _call(client, method, missing)
                if _shape(answer) != _shape(other):
                    non_uniform.append(
                        f"{name} {method.upper()} {path}: "
                        f"{answer.status_code} {answer.content[:80]!r} vs missing "
                        f"{other.status_code} {other.content[:80]!r}"
                    )
            elif name == "own" and answer.status_code >= 400:
                own_refused.append(f"{method.upper()} {real}: {answer.status_code}")

    figure(
        "R13",
        "unauthorized successes in cross-principal path probes",
        f"{unauthorized} of {probes}",
        "0",
        unauthorized == 0,
        details={"leaks": leaks[:20], "skipped_no_object": skipped},
    )
    figure(
        "R13",
        "foreign object answered differently from a missing one",
        f"{len(non_uniform)} of {probes}",
        "0 (uniform 404)",
        not non_uniform,
        details={"differences": non_uniform[:20]},
    )
    assert unauthorized == 0, leaks
    assert not non_uniform, non_uniform
    assert not own_refused, own_refused  # positive control: A reads A's work
    assert probes > 50  # every operation with an object in its path was probed


def test_r13_objects_named_in_a_body_are_scoped_to_the_sender(world, figure):
    """B's event batch naming A's stop and route, and B's proof for A's stop,
    are answered exactly as for ids that exist nowhere, and change nothing."""
    b = _client(world["b"].user)
    now = timezone.now().isoformat()
    answers = {}
    for seq, (label, fields) in enumerate(
        (
            ("A's stop", {"stop_id": world["stop_a"].pk}),
            ("missing stop", {"stop_id": int(MISSING_ID)}),
            ("A's route", {"route_id": world["route_a"].pk}),
            ("missing route", {"route_id": int(MISSING_ID)}),
        ),
        start=1,
    ):
        kind = "arrived" if "stop_id" in fields else "route_started"
        response = b.post(
            "/api/v1/driver/events/",
            {
                "device_id": "b",
                "events": [builders.driver_event(kind, seq, now, **fields)],
            },
            format="json",
            HTTP_IDEMPOTENCY_KEY=builders.new_key("r13"),
        )
        result = response.json()["results"][0]
        answers[label] = (response.status_code, result["status"], result.get("reason"))
    pods = {}
    for label, stop_id in (
        ("A's stop", world["stop_a"].pk),
        ("missing stop", MISSING_ID),
    ):
        response = b.post(
            f"/api/v1/driver/stops/{stop_id}/pod/",
            {"photo": io.BytesIO(_jpeg()), "recipient_name": "X"},
            format="multipart",
            HTTP_IDEMPOTENCY_KEY=builders.new_key("r13"),
        )
        pods[label] = (response.status_code, response.content)
    world["stop_a"].refresh_from_db()
    uniform = (
        answers["A's stop"] == answers["missing stop"]
        and answers["A's route"] == answers["missing route"]
        and pods["A's stop"] == pods["missing stop"]
    )
    applied = [k for k, v in answers.items() if v[1] == "applied"]
    figure(
        "R13",
        "body-named foreign objects: uniform and without effect",
        f"events {answers}; pod {[p[0] for p in pods.values()]}",
        "identical to missing ids; nothing applied",
        uniform and not applied and world["stop_a"].status == "pending",
    )
    assert not applied
    assert uniform, (answers, pods)
    assert world["stop_a"].status == "pending"


def test_r13_a_tracking_token_opens_only_its_own_shipment(world, figure):
    """The holder of A's shipment's link reads that shipment's public view and
    nothing else: every non-public operation refuses anonymous callers."""
    public = _client()
    token = world["ids"]["token"]
    own = public.get(f"/api/v1/track/{token}/", REMOTE_ADDR="192.0.2.77")
    refused = []
    for method, path in _operations():
        if path.startswith("/api/v1/track/"):
            continue
        url = _fill(path, world["ids"], missing=False)
        if url is None:
            continue
        answer = _call(public, method, url)
        if answer.status_code < 300:
            refused.append(f"{method.upper()} {url}: {answer.status_code}")
    body = json.dumps(own.json())
    other_reference = world["stop_b"].legs.first().shipment.reference
    figure(
        "R13",
        "token holder: other objects reachable",
        len(refused),
        "0",
        own.status_code == 200 and not refused and other_reference not in body,
    )
    assert own.status_code == 200
    assert other_reference not in body
    assert not refused, refused
