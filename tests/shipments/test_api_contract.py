"""The API's contract as the schema states it, and the answers that keep it:
every operation documents its error answers; list parameters and JSON bodies
are read strictly (400 when they do not fit); a well-formed request a rule
refuses is a 422; a value that must be unique is a 409."""

from __future__ import annotations

import random
import re
from decimal import Decimal

import pytest
from django.test import RequestFactory
from drf_spectacular.generators import SchemaGenerator

from shipments import api_errors
from shipments.schema import TIME_PATTERN
from shipments.serializers import decimal_pattern

pytestmark = pytest.mark.django_db

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    with django_db_blocker.unblock():
        return SchemaGenerator().get_schema(request=None, public=True)


def _operations(schema):
    for path, item in schema["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def test_every_operation_documents_the_errors_it_can_answer(schema):
    missing = []
    for path, method, operation in _operations(schema):
        responses = operation["responses"]
        security = operation.get("security", [])
        expected = {"503"}
        if security and {} not in security:
            expected |= {"401", "403"}
        if "{" in path:
            expected.add("404")
        if method != "get":
            expected |= {"409", "422"}
        if "requestBody" in operation:
            expected |= {"400", "413", "415"}
        missing += [
            f"{method.upper()} {path} {code}" for code in expected - set(responses)
        ]
    assert not missing, missing[:20]
    refs = schema["paths"]["/api/v1/hubs/"]["post"]["responses"]["422"]["content"]
    assert refs["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_every_post_that_honours_an_idempotency_key_declares_it(schema):
    def key(path, method="post"):
        parameters = schema["paths"][path][method].get("parameters", [])
        return next(
            (
                p
                for p in parameters
                if p["in"] == "header" and p["name"] == "Idempotency-Key"
            ),
            None,
        )

    assert key("/api/v1/driver/events/")["required"] is True
    assert key("/api/v1/hubs/")["required"] is False  # honoured, not required
    assert key("/api/v1/optimizations/") is not None
    assert key("/api/v1/shipments/{shipment_id}/cancel/") is not None


def test_times_are_local_patterns_and_strings_hold_no_nul(schema):
    text = str(schema)
    assert "'format': 'time'" not in text
    driver = schema["components"]["schemas"]["Driver"]["properties"]
    assert driver["shift_start"]["pattern"] == TIME_PATTERN
    assert re.match(TIME_PATTERN, "07:00:00")
    assert not re.match(TIME_PATTERN, "7:00")
    party = schema["components"]["schemas"]["PartyRequest"]["properties"]
    assert party["phone"]["pattern"] == r"^[^\x00]*$"


def test_a_list_parameter_that_does_not_fit_answers_400_naming_it(dispatcher_client):
    url = "/api/v1/shipments/"
    for query, name in (
        ("is_return=maybe", "is_return"),
        ("mile=sideways", "mile"),
        ("page_size=null", "page_size"),
        ("page=0", "page"),
        ("created_after=2030-01-01T00:00:00", "created_after"),  # no offset
    ):
        response = dispatcher_client.get(f"{url}?{query}")
        assert response.status_code == 400, query
        assert name in response.json(), query


def test_an_empty_list_parameter_is_no_parameter_and_a_page_past_the_end_is_404(
    dispatcher_client,
):
    assert (
        dispatcher_client.get("/api/v1/shipments/?is_return=&mile=").status_code == 200
    )
    assert (
        dispatcher_client.get("/api/v1/shipments/?is_return=false").status_code == 200
    )
    assert dispatcher_client.get("/api/v1/shipments/?page=99").status_code == 404
    wide = dispatcher_client.get("/api/v1/hubs/?page_size=100000")
    assert wide.status_code == 200  # served as 100 a page


def test_json_bodies_are_typed_as_the_schema_says(dispatcher_client):
    wrong = dispatcher_client.post(
        "/api/v1/parties/", {"name": 7, "kind": "shipper"}, format="json"
    )
    right = dispatcher_client.post(
        "/api/v1/parties/", {"name": "7", "kind": "shipper"}, format="json"
    )

    assert wrong.status_code == 400
    assert wrong.json() == {"name": ["Expected a text."]}
    assert right.status_code == 201, right.content


def test_a_value_that_must_be_unique_is_a_409_and_a_missing_reference_a_422(
    hubs, dispatcher_client
):
    hub = {
        "code": hubs[1].code,
        "name": "Again",
        "kind": "depot",
        "location": {"address": "Fontvieille", "latitude": 43.73, "longitude": 7.41},
    }
    taken = dispatcher_client.post("/api/v1/hubs/", hub, format="json")
    vehicle = dispatcher_client.post(
        "/api/v1/vehicles/",
        {
            "code": "van-x",
            "type": "van",
            "home_hub": "no-such-hub",
            "capacity_kg": "800",
            "capacity_m3": "8",
            "capacity_parcels": 100,
        },
        format="json",
    )

    assert taken.status_code == 409
    assert "code" in taken.json()
    assert vehicle.status_code == 422
    assert "home_hub" in vehicle.json()


def test_an_api_path_that_matches_no_route_answers_json():
    factory = RequestFactory()

    api = api_errors.not_found(factory.get("/api/v1/routes/not-an-id/"))
    page = api_errors.not_found(factory.get("/nowhere/"))

    assert api.status_code == 404
    assert api["Content-Type"] == "application/json"
    assert page.status_code == 404
    assert page["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("maximum", "places", "positive"),
    [(1000, 3, True), (20, 4, False), (40000, 2, True)],
)
def test_the_decimal_pattern_admits_exactly_the_values_in_range(
    maximum, places, positive
):
    pattern = re.compile(
        decimal_pattern(maximum=maximum, places=places, positive=positive)
    )
    rng = random.Random(7)
    for _ in range(5000):
        whole = rng.randint(0, maximum + 2)
        digits = rng.randint(0, places)
        fraction = str(rng.randint(0, 10**places - 1)).zfill(places)[:digits]
        text = f"{whole}.{fraction}" if digits else str(whole)
        value = Decimal(text)
        in_range = (value > 0 if positive else value >= 0) and value <= maximum
        assert bool(pattern.match(text)) == in_range, text
    for text in ("007", "+1", "-1", "1e3", ".5", "5.", ""):
        assert not pattern.match(text), text
