"""R14: property-level authorization and mass assignment.

* Every write that matters gets its documented body plus forbidden extras
  (``driver``, ``tenant``, ``status``, ``assigned_at``, ``is_staff``,
  ``pod_verified``, ``id``, ``created_at``, ``seq`` and the model's own
  protected fields): the answer is 2xx with the extras ignored or 400, and the
  database shows none of them applied.
* The request schemas declare none of the forbidden fields as writable.
* Every read (as dispatcher and as driver) is validated against its response
  schema with ``additionalProperties: false`` on every object: undeclared
  fields are counted, and so are operations whose answer has no declared shape.
* Role-specific fields: the customer's phone only on the assigned driver's
  stops still to serve.

(tests/test_static_security.py already refuses ``fields = "__all__"`` and
``exclude`` in serializers.)

CI size = full bar: every write probe once, every read once.
"""

from __future__ import annotations

import io
import re
from datetime import datetime, timedelta

import jsonschema
import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from PIL import Image
from rest_framework.test import APIClient

from dispatch.models import Driver, DriverEventReceipt, LocationPing, ProofOfDelivery
from dispatch.pod import PodInput, pod_create
from routing.models import Route
from shipments.models import Hub, Leg, Shipment
from shipments.services import shipment_tracking_token
from tests import factories
from tests.reliability import builders

pytestmark = pytest.mark.django_db

LONG_AGO = "2000-01-01T00:00:00Z"
FORBIDDEN = {
    "tenant": 2,
    "is_staff": True,
    "is_superuser": True,
    "pod_verified": True,
    "assigned_at": LONG_AGO,
    "created_at": LONG_AGO,
    "id": 999_999_001,
}
# Fields no request schema may declare writable; on the driver's and the
# customer's own endpoints also whose work it is; on a create, the status.
FORBIDDEN_IN_REQUEST_SCHEMAS = {
    "tenant",
    "is_staff",
    "is_superuser",
    "pod_verified",
    "assigned_at",
    "created_at",
    "updated_at",
    "id",
    "tracking_token_hash",
}
FORBIDDEN_ON_OWN_WORK = {"driver", "driver_id", "user", "shipment", "shipment_id"}
OWN_WORK_PATHS = ("/api/v1/driver/", "/api/v1/track/")


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), "blue").save(out, "JPEG")
    return out.getvalue()


def _client(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {user.auth_token.key}")
    return client


@pytest.fixture
def world(hubs):
    monaco = hubs[1]
    a = factories.driver_make(monaco)
    b = factories.driver_make(monaco)
    route_a = builders.published_route(hub=monaco, driver=a, stops=3)
    route_b = builders.published_route(hub=monaco, driver=b, stops=1)
    dispatcher = factories.dispatcher_make()
    return {
        "hub": monaco,
        "a": a,
        "b": b,
        "route_a": route_a,
        "route_b": route_b,
        "stops_a": builders.delivery_stops(route_a),
        "stop_b": builders.delivery_stops(route_b)[0],
        "dispatcher": dispatcher,
        "ca": _client(a.user),
        "cd": _client(dispatcher),
    }


def _recent(value: datetime) -> bool:
    return abs((timezone.now() - value).total_seconds()) < 3600


def _key() -> dict:
    return {"HTTP_IDEMPOTENCY_KEY": builders.new_key("r14")}


def test_r14_forbidden_extras_on_writes_are_never_applied(world, figure):
    a, b = world["a"], world["b"]
    ca, cd = world["ca"], world["cd"]
    stops = world["stops_a"]
    now = timezone.now()
    changed: list[str] = []
    statuses: dict[str, int] = {}

    def judge(name, response, problems):
        statuses[name] = response.status_code
        assert response.status_code < 500
        if response.status_code < 300:
            changed.extend(f"{name}: {p}" for p in problems() if p)

    # 1. Shipment create (dispatcher)
    shipper = factories.party_make()
    response = cd.post(
        "/api/v1/shipments/",
        {
            "reference": "R14-SHIP-1",
            "shipper": shipper.pk,
            "consignee": {"name": "Lou", **FORBIDDEN},
            "origin": {"address": "Grasse", "latitude": 43.6589, "longitude": 6.9236},
            "destination": {
                "address": "Monaco",
                "latitude": 43.7396,
                "longitude": 7.4276,
            },
            "parcels": [{"weight_kg": "2", **FORBIDDEN}],
            **FORBIDDEN,
            "status": "delivered",
            "completed_at": LONG_AGO,
            "tracking_version": 99,
            "tracking_token_hash": "0" * 64,
            "driver": b.pk,
            "seq": 7,
        },
        format="json",
        **_key(),
    )

    def shipment_problems():
        s = Shipment.objects.get(reference="R14-SHIP-1")
        return [
            s.pk == FORBIDDEN["id"] and "id",
            s.status != "planned" and f"status {s.status}",
            not _recent(s.created_at) and "created_at",
            s.completed_at is not None and "completed_at",
            s.tracking_version != 1 and "tracking_version",
            s.tracking_token_hash == "0" * 64 and "tracking_token_hash",
        ]

    judge("POST /shipments/", response, shipment_problems)

    # 2. Driver events: another driver, a status, a device per item
    item = builders.driver_event(
        "arrived",
        1,
        now.isoformat(),
        stop_id=stops[0].pk,
        driver=b.pk,
        driver_id=b.pk,
        status="applied",
        device_id="forged-device",
        route_id=world["route_a"].pk,
        **{k: v for k, v in FORBIDDEN.items() if k != "id"},
    )
    response = ca.post(
        "/api/v1/driver/events/",
        {"device_id": "r14-phone", "events": [item], "driver_id": b.pk, "driver": b.pk},
        format="json",
        **_key(),
    )

    def event_problems():
        receipt = DriverEventReceipt.objects.get(event_id=item["event_id"])
        return [
            receipt.driver_id != a.pk and "driver",
            receipt.device_id != "r14-phone" and "device_id",
            DriverEventReceipt.objects.filter(driver=b).exists() and "written as B",
        ]

    judge("POST /driver/events/", response, event_problems)

    # 3. Driver pings: another driver, a route, a received time
    fix_at = now - timedelta(minutes=1)
    response = ca.post(
        "/api/v1/driver/pings/",
        {
            "device_id": "r14-phone",
            "driver_id": b.pk,
            "driver": b.pk,
            "pings": [
                {
                    "latitude": 43.7311,
                    "longitude": 7.4167,
                    "accuracy": 5,
                    "recorded_at": fix_at.isoformat(),
                    "driver": b.pk,
                    "route": world["route_b"].pk,
                    "route_id": world["route_b"].pk,
                    "received_at": LONG_AGO,
                    "device_id": "forged",
                }
            ],
        },
        format="json",
        **_key(),
    )

    def ping_problems():
        ping = LocationPing.objects.get(recorded_at=fix_at)
        return [
            ping.driver_id != a.pk and "driver",
            ping.route_id == world["route_b"].pk and "route",
            not _recent(ping.received_at) and "received_at",
            ping.device_id != "r14-phone" and "device_id",
        ]

    judge("POST /driver/pings/", response, ping_problems)

    # 4. Proof of delivery (multipart): another driver, another stop, verified
    response = ca.post(
        f"/api/v1/driver/stops/{stops[1].pk}/pod/",
        {
            "photo": io.BytesIO(_jpeg()),
            "recipient_name": "C. Martin",
            "driver": b.pk,
            "driver_id": b.pk,
            "stop": world["stop_b"].pk,
            "stop_id": world["stop_b"].pk,
            "pod_verified": "true",
            "id": FORBIDDEN["id"],
            "created_at": LONG_AGO,
        },
        format="multipart",
        **_key(),
    )

    def pod_problems():
        pod = ProofOfDelivery.objects.get(stop=stops[1])
        return [
            pod.driver_id != a.pk and "driver",
            ProofOfDelivery.objects.filter(stop=world["stop_b"]).exists() and "stop",
            pod.pk == FORBIDDEN["id"] and "id",
            hasattr(pod, "created_at") and not _recent(pod.created_at) and "created_at",
        ]

    judge("POST /driver/stops/{id}/pod/", response, pod_problems)

    # 5. Duty: someone else's duty, staff flags
    b_duty = Driver.objects.get(pk=b.pk).duty_status
    response = ca.post(
        "/api/v1/driver/duty/",
        {"status": "on_duty", "driver": b.pk, "driver_id": b.pk, **FORBIDDEN},
        format="json",
        **_key(),
    )

    def duty_problems():
        user = User.objects.get(pk=a.user_id)
        return [
            Driver.objects.get(pk=b.pk).duty_status != b_duty and "B's duty",
            user.is_staff and "is_staff",
            user.is_superuser and "is_superuser",
        ]

    judge("POST /driver/duty/", response, duty_problems)

    # 6. Driver profile update (dispatcher): the account behind it, staff flags
    response = cd.patch(
        f"/api/v1/drivers/{a.pk}/",
        {
            "phone": "+33699990000",
            "user": world["dispatcher"].pk,
            "username": "renamed",
            "duty_status": "on_break",
            **FORBIDDEN,
        },
        format="json",
    )

    def driver_problems():
        driver = Driver.objects.select_related("user").get(pk=a.pk)
        return [
            driver.user_id != a.user_id and "user",
            driver.user.username == "renamed" and "username",
            driver.user.is_staff and "is_staff",
            Driver.objects.filter(pk=FORBIDDEN["id"]).exists() and "id",
        ]

    judge("PATCH /drivers/{id}/", response, driver_problems)

    # 7. Hub update (dispatcher)
    hub = world["hub"]
    response = cd.patch(
        f"/api/v1/hubs/{hub.pk}/", {"name": "MCO", **FORBIDDEN}, format="json"
    )
    judge(
        "PATCH /hubs/{id}/",
        response,
        lambda: [Hub.objects.filter(pk=FORBIDDEN["id"]).exists() and "id"],
    )

    # 8. Leg transition with a status and another shipment
    leg = Shipment.objects.get(reference="R14-SHIP-1").legs.order_by("sequence").first()
    other_leg = stops[2].legs.first()
    response = cd.post(
        f"/api/v1/legs/{leg.pk}/transition/",
        {
            "to": "assigned",
            "status": "completed",
            "shipment": other_leg.shipment_id,
            "leg_id": other_leg.pk,
            **FORBIDDEN,
        },
        format="json",
        **_key(),
    )

    def leg_problems():
        return [
            Leg.objects.get(pk=leg.pk).status != "assigned" and "status",
            Leg.objects.get(pk=other_leg.pk).status != other_leg.status and "other leg",
        ]

    judge("POST /legs/{id}/transition/", response, leg_problems)

    # 9. Route assign with a status and version
    route_b = world["route_b"]
    response = cd.post(
        f"/api/v1/routes/{route_b.pk}/assign/",
        {
            "driver_id": b.pk,
            "vehicle_id": route_b.vehicle_id,
            "status": "completed",
            "version": 999,
            "published_at": LONG_AGO,
            **FORBIDDEN,
        },
        format="json",
        **_key(),
    )

    def route_problems():
        route = Route.objects.get(pk=route_b.pk)
        return [
            route.status == "completed" and "status",
            route.version == 999 and "version",
        ]

    judge("POST /routes/{id}/assign/", response, route_problems)

    # 10. Customer instructions through the link, naming another shipment
    target = stops[2].legs.first().shipment
    token = shipment_tracking_token(target)
    victim = Shipment.objects.get(reference="R14-SHIP-1")
    public = APIClient()
    response = public.post(
        f"/api/v1/track/{token}/instructions/",
        {
            "instructions": "Leave with the concierge.",
            "shipment": victim.pk,
            "shipment_id": victim.pk,
            "status": "delivered",
            **FORBIDDEN,
        },
        format="json",
        REMOTE_ADDR="192.0.2.14",
    )

    def instruction_problems():
        victim.refresh_from_db()
        target.refresh_from_db()
        return [
            victim.status != "planned" and "other shipment's status",
            target.status == "delivered" and "status",
        ]

    judge("POST /track/{token}/instructions/", response, instruction_problems)

    figure(
        "R14",
        "protected fields changed by writes with forbidden extras",
        f"{len(changed)} across {len(statuses)} writes",
        "0",
        not changed,
        details={"changed": changed, "statuses": statuses},
    )
    assert not changed, changed
    accepted = [name for name, code in statuses.items() if code < 300]
    assert len(accepted) >= 6, statuses  # teeth: most probes were applied writes


def _operations():
    return SchemaGenerator().get_schema(request=None, public=True)


def test_r14_request_schemas_declare_no_protected_field_writable(figure):
    schema = _operations()
    components = schema["components"]["schemas"]

    def properties(node, seen=()):
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[1]
            if name in seen:
                return {}
            return properties(components[name], (*seen, name))
        props = {
            k: v for k, v in node.get("properties", {}).items() if not v.get("readOnly")
        }
        for key in ("allOf", "oneOf", "anyOf"):
            for part in node.get(key, []):
                props.update(properties(part, seen))
        return props

    offenders = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {})
            for content in body.values():
                writable = properties(content.get("schema", {}))
                bad = set(writable) & FORBIDDEN_IN_REQUEST_SCHEMAS
                if path.startswith(OWN_WORK_PATHS):
                    bad |= set(writable) & FORBIDDEN_ON_OWN_WORK
                is_create = method == "post" and "get" in operations
                if is_create and "status" in writable:
                    bad.add("status (on create)")
                if bad:
                    offenders.append(f"{method.upper()} {path}: {sorted(bad)}")
    offenders = sorted(set(offenders))
    figure(
        "R14",
        "request schemas declaring protected fields writable",
        len(offenders),
        "0",
        not offenders,
        details={"offenders": offenders},
    )
    assert not offenders, offenders


def _closed(node):
    """A copy of an OpenAPI 3.0 schema for jsonschema: objects closed
    (``additionalProperties: false`` where properties are declared), ``nullable``
    as a null alternative."""
    if isinstance(node, list):
        return [_closed(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _closed(v) for k, v in node.items() if k not in ("nullable",)}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def test_r14_reads_return_only_declared_fields(world, figure):
    """Every GET as the dispatcher and as driver A, on real objects."""
    a = world["a"]
    stop = world["stops_a"][0]
    pod = pod_create(stop_id=stop.pk, driver_id=a.pk, data=PodInput(recipient_name="X"))
    schema = _operations()
    components = _closed(schema["components"])
    ids = {
        "route_id": world["route_a"].pk,
        "stop_id": stop.pk,
        "shipment_id": stop.legs.first().shipment_id,
        "pod_id": pod.pk,
        "leg_id": stop.legs.first().pk,
    }
    by_prefix = {
        "/shipments/": ids["shipment_id"],
        "/legs/": ids["leg_id"],
        "/drivers/": a.pk,
        "/vehicles/": world["route_a"].vehicle_id,
        "/hubs/": world["hub"].pk,
        "/parties/": Shipment.objects.get(pk=ids["shipment_id"]).consignee_id,
    }
    undeclared, other_mismatch, free_form, checked = [], [], set(), 0
    for path, operations in schema["paths"].items():
        if "get" not in operations or "{token}" in path or "{part}" in path:
            continue
        url = path
        for name in re.findall(r"\{(\w+)\}", path):
            value = ids.get(name)
            if name == "id":
                value = next((v for p, v in by_prefix.items() if p in path), None)
            if value is None:
                url = None
                break
            url = url.replace("{" + name + "}", str(value))
        if url is None:
            continue
        client = world["ca"] if path.startswith("/api/v1/driver/") else world["cd"]
        response = client.get(url)
        if response.status_code != 200:
            continue
        spec = operations["get"]["responses"].get("200", {}).get("content", {})
        body_schema = next(iter(spec.values()), {}).get("schema")
        if not body_schema or (
            body_schema.get("type") == "object"
            and "properties" not in body_schema
            and "$ref" not in body_schema
        ):
            free_form.add(f"GET {path}")
            continue
        checked += 1
        validator = jsonschema.Draft7Validator(
            {**_closed(body_schema), "components": components}
        )
        for error in validator.iter_errors(response.json()):
            text = f"GET {path}: {error.message[:160]}"
            if "Additional properties" in error.message:
                undeclared.append(text)
            else:
                other_mismatch.append(text)
    figure(
        "R14",
        "read responses with undeclared fields",
        f"{len(undeclared)} in {checked} reads checked; {len(free_form)} reads with no declared shape",
        "0",
        not undeclared,
        details={
            "undeclared": undeclared[:20],
            "other_schema_mismatches": other_mismatch[:20],
            "no_declared_shape": sorted(free_form),
        },
    )
    assert checked > 20
    assert not undeclared, undeclared


def test_r14_customer_phone_only_on_stops_still_to_serve(world, figure):
    """The assigned driver sees the contact of stops to serve; once a stop is
    served its contact is gone (driver B cannot read the route at all: R13)."""
    stops = world["stops_a"]
    answer = world["ca"].post(
        "/api/v1/driver/events/",
        {
            "device_id": "r14",
            "events": [
                builders.driver_event(
                    "delivered", 1, timezone.now().isoformat(), stop_id=stops[0].pk
                )
            ],
        },
        format="json",
        **_key(),
    )
    assert answer.json()["results"][0]["status"] == "applied"
    route = world["ca"].get(f"/api/v1/driver/routes/{world['route_a'].pk}/").json()
    contact = {s["id"]: (s["status"], s["contact"]) for s in route["stops"]}
    served_with_phone = [i for i, (st, c) in contact.items() if st == "completed" and c]
    pending_without = [i for i, (st, c) in contact.items() if st == "pending" and not c]
    figure(
        "R14",
        "customer phone shown outside the assigned driver's stops to serve",
        len(served_with_phone),
        "0",
        not served_with_phone,
        details={"stops": {str(k): v[0] for k, v in contact.items()}},
    )
    assert not served_with_phone
    assert not pending_without  # teeth: the phone is there while it is needed
