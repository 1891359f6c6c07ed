"""The mobile app's wire contract, as published in the OpenAPI schema."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    from drf_spectacular.generators import SchemaGenerator

    with django_db_blocker.unblock():
        return SchemaGenerator().get_schema(request=None, public=True)


def _resolve(schema, node):
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    if "allOf" in node:
        return _resolve(schema, node["allOf"][0])
    return node


def _properties(schema, node):
    return _resolve(schema, node)["properties"]


def _json_body(operation, schema, *, response="200"):
    content = operation["responses"][response]["content"]["application/json"]["schema"]
    return _resolve(schema, content)


def test_the_route_has_the_fixed_names(schema):
    operation = schema["paths"]["/api/v1/driver/route/"]["get"]
    route = _json_body(operation, schema)
    assert {"id", "date", "status", "stops"} <= set(route["properties"])
    stop = _resolve(schema, route["properties"]["stops"]["items"])
    assert {
        "id",
        "sequence",
        "kind",
        "latitude",
        "longitude",
        "address",
        "window_start",
        "window_end",
        "planned_arrival",
        "eta",
        "status",
        "parcels",
        "requires",
        "notes",
    } <= set(stop["properties"])
    assert _resolve(schema, stop["properties"]["kind"])["enum"] == [
        "pickup",
        "delivery",
        "hub",
    ]
    requires = _resolve(schema, stop["properties"]["requires"]["items"])
    assert requires["enum"] == ["photo", "signature", "recipient_name"]
    parcel = _resolve(schema, stop["properties"]["parcels"]["items"])
    assert "barcode" in parcel["properties"]
    assert "304" in operation["responses"]
    assert operation["responses"]["200"]["content"]["application/json"]["examples"]


def test_the_events_request_and_answer_have_the_fixed_names(schema):
    operation = schema["paths"]["/api/v1/driver/events/"]["post"]
    body = _resolve(
        schema, operation["requestBody"]["content"]["application/json"]["schema"]
    )
    assert {"device_id", "events"} <= set(body["properties"])
    item = _resolve(schema, body["properties"]["events"]["items"])
    assert {
        "event_id",
        "seq",
        "type",
        "occurred_at",
        "stop_id",
        "barcode",
        "reason",
        "latitude",
        "longitude",
    } <= set(item["properties"])
    assert set(body["required"]) == {"device_id", "events"}
    answer = _json_body(operation, schema)
    result = _resolve(schema, answer["properties"]["results"]["items"])
    assert {"event_id", "status", "reason", "current_state"} <= set(
        result["properties"]
    )
    assert _resolve(schema, result["properties"]["status"])["enum"] == [
        "applied",
        "duplicate",
        "rejected",
    ]
    header = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert header
    assert header[0]["required"] is True
    assert operation["requestBody"]["content"]["application/json"]["examples"]


def test_the_pings_request_and_answer_have_the_fixed_names(schema):
    operation = schema["paths"]["/api/v1/driver/pings/"]["post"]
    body = _resolve(
        schema, operation["requestBody"]["content"]["application/json"]["schema"]
    )
    items = body["properties"]["pings"]["items"]
    # Any object is admitted (each fix is judged alone); the shape is PingItem.
    shapes = [_resolve(schema, option) for option in items.get("anyOf", [items])]
    ping = next(shape for shape in shapes if "properties" in shape)
    assert {
        "latitude",
        "longitude",
        "accuracy",
        "speed",
        "heading",
        "recorded_at",
    } <= set(ping["properties"])
    answer = _json_body(operation, schema)
    assert {"accepted", "rejected"} <= set(answer["properties"])
    rejection = _resolve(schema, answer["properties"]["rejected"]["items"])
    assert {"index", "reason"} <= set(rejection["properties"])


def test_the_pod_upload_is_multipart(schema):
    operation = schema["paths"]["/api/v1/driver/stops/{stop_id}/pod/"]["post"]
    body = _resolve(
        schema, operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    )
    assert {
        "photo",
        "signature",
        "recipient_name",
        "note",
        "latitude",
        "longitude",
        "captured_at",
    } <= set(body["properties"])
    assert "201" in operation["responses"]
