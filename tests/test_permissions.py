"""Permission matrix: every API endpoint × (anonymous, driver, dispatcher).

Endpoints are read from the project's own OpenAPI schema, so a new endpoint is
covered the day it is added. Roles:

* public endpoints (token login, customer tracking): anyone;
* driver endpoints (``/api/v1/driver/…``): drivers only, each scoped to their own work;
* everything else: dispatchers only.

No request in the matrix may answer 500.
"""

from __future__ import annotations

import re

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

PUBLIC_PREFIXES = ("/api/v1/auth/token/", "/api/v1/track/")
DRIVER_PREFIX = "/api/v1/driver/"  # a driver's own work; a dispatcher may also read some
SHARED_PREFIXES = ("/api/v1/pods/",)  # proof-of-delivery files: the driver's own, or a dispatcher
METHODS = ("get", "post", "put", "patch", "delete")
# Path parameters constrained by the URL pattern but not enumerated in the schema.
KNOWN_PATH_VALUES = {"part": "photo", "token": "not-a-real-token-000000000000"}


def _endpoints() -> list[tuple[str, str, dict]]:
    """(method, concrete url, operation) for every operation in the schema."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    found = []
    for path, operations in schema["paths"].items():
        for method in METHODS:
            if method in operations:
                found.append((method, path, operations[method]))
    return found


def _concrete(path: str, operation: dict) -> str:
    """Fill path parameters: ids that exist nowhere (the permission answer must
    come before the lookup), or the first allowed value of an enumerated one."""
    values = {}
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "path":
            enum = parameter.get("schema", {}).get("enum")
            fallback = KNOWN_PATH_VALUES.get(parameter["name"], "999999")
            values[parameter["name"]] = str(enum[0]) if enum else fallback
    return re.sub(r"\{([^}]+)\}", lambda m: values.get(m.group(1), "999999"), path)


def _role(path: str) -> str:
    if path.startswith(PUBLIC_PREFIXES):
        return "public"
    if path.startswith(DRIVER_PREFIX):
        return "driver"
    if path.startswith(SHARED_PREFIXES):
        return "shared"
    return "dispatcher"


@pytest.fixture
def clients(dispatcher, driver):
    anonymous = APIClient()
    as_driver = APIClient()
    as_driver.credentials(HTTP_AUTHORIZATION=f"Token {driver.user.auth_token.key}")
    as_dispatcher = APIClient()
    as_dispatcher.credentials(HTTP_AUTHORIZATION=f"Token {dispatcher.auth_token.key}")
    return {"anonymous": anonymous, "driver": as_driver, "dispatcher": as_dispatcher}


def test_the_schema_lists_the_foundation_endpoints(db):
    paths = {path for _, path, _ in _endpoints()}
    for expected in (
        "/api/v1/hubs/",
        "/api/v1/vehicles/",
        "/api/v1/drivers/",
        "/api/v1/shipments/",
        "/api/v1/shipments/{shipment_id}/events/",
        "/api/v1/legs/",
        "/api/v1/shipments/import/",
        "/api/v1/shipments/bulk/",
        "/api/v1/auth/token/",
    ):
        assert expected in paths


@pytest.mark.django_db
def test_permission_matrix(clients):
    endpoints = _endpoints()
    assert len(endpoints) > 20
    failures = []
    for method, path, operation in endpoints:
        role = _role(path)
        url = _concrete(path, operation)
        for who, client in clients.items():
            response = getattr(client, method)(url, {}, format="json")
            status = response.status_code
            if status >= 500:
                failures.append(f"{who} {method.upper()} {url} → {status}")
                continue
            denied = status in (401, 403)
            if role == "public":
                continue
            if who == "anonymous" and status != 401:
                failures.append(f"anonymous {method.upper()} {url} → {status}, expected 401")
            if role == "shared" or (role == "driver" and who == "dispatcher"):
                continue
            allowed = who == role
            if allowed and denied:
                failures.append(f"{who} {method.upper()} {url} refused with {status}")
            if not allowed and not denied:
                failures.append(f"{who} {method.upper()} {url} not refused ({status})")
            if who == "anonymous" and status != 401:
                failures.append(
                    f"anonymous {method.upper()} {url} → {status}, expected 401"
                )
    assert not failures, "\n".join(failures)


@pytest.mark.django_db
def test_session_login_gives_a_dispatcher_the_api(dispatcher):
    client = APIClient()
    assert client.login(username=dispatcher.username, password="pass-1234-word")
    assert client.get("/api/v1/shipments/").status_code == 200


@pytest.mark.django_db
def test_token_login(dispatcher):
    client = APIClient()
    good = client.post(
        "/api/v1/auth/token/",
        {"username": dispatcher.username, "password": "pass-1234-word"},
        format="json",
    )
    bad = client.post(
        "/api/v1/auth/token/",
        {"username": dispatcher.username, "password": "wrong"},
        format="json",
    )
    assert good.status_code == 200
    assert good.json()["token"] == dispatcher.auth_token.key
    assert bad.status_code == 400
