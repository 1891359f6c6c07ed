"""The embedded default: no DATABASE_URL/REDIS_URL → SQLite, in-memory layer, in-process tasks.

Boots the real ASGI server in a subprocess with nothing configured but DEBUG and
creates and reads a shipment over HTTP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent

SETUP = """
from django.contrib.auth.models import Group, User
from rest_framework.authtoken.models import Token
from shipments.models import Hub, Location, Party
user = User.objects.create_user("smoke", password="smoke-pass-1")
user.groups.add(Group.objects.get(name="dispatcher"))
print("TOKEN", Token.objects.create(user=user).key)
hub = Hub.objects.create(code="mco", name="Monaco", kind="depot", service_radius_km=30,
    location=Location.objects.create(address="Fontvieille", latitude=43.7311, longitude=7.4167))
print("SHIPPER", Party.objects.create(name="Smoke shipper", kind="shipper").pk)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def embedded_env(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "SECURE_SSL_REDIRECT")
    }
    env.update(
        DEBUG="true",
        DJANGO_SETTINGS_MODULE="config.settings.base",
        SQLITE_PATH=str(tmp_path / "embedded.sqlite3"),
    )
    return env


def _manage(env, *args, **kwargs):
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        **kwargs,
    )


def test_the_embedded_default_serves_the_api_on_sqlite(embedded_env):
    _manage(embedded_env, "migrate", "--noinput", "-v0")
    out = _manage(embedded_env, "shell", "-c", SETUP).stdout
    token = out.split("TOKEN ")[1].split()[0]
    shipper = int(out.split("SHIPPER ")[1].split()[0])
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=embedded_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.3)
        checks = health.json()["checks"]
        assert health.status_code == 200
        assert checks["database"]["vendor"] == "sqlite"
        assert checks["channel_layer"]["backend"] == "InMemoryChannelLayer"
        assert checks["worker"]["mode"] == "in-process"

        headers = {"Authorization": f"Token {token}"}
        created = httpx.post(
            f"{base}/api/v1/shipments/",
            headers=headers,
            json={
                "reference": "SMOKE-1",
                "shipper": shipper,
                "consignee": {"name": "Smoke"},
                "origin": {
                    "address": "Port Hercule",
                    "latitude": 43.7347,
                    "longitude": 7.4206,
                },
                "destination": {
                    "address": "Casino",
                    "latitude": 43.7396,
                    "longitude": 7.4276,
                },
                "parcels": [{"weight_kg": "1.5"}],
            },
            timeout=10,
        )
        assert created.status_code == 201, created.text
        shipment_id = created.json()["id"]
        read = httpx.get(
            f"{base}/api/v1/shipments/{shipment_id}/", headers=headers, timeout=10
        )
        assert read.status_code == 200
        assert read.json()["reference"] == "SMOKE-1"
        assert [leg["mile"] for leg in read.json()["legs"]] == ["first", "last"]
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_production_settings_refuse_to_start_without_a_secret(embedded_env):
    env = dict(
        embedded_env,
        DEBUG="false",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/allmile",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY is required" in result.stderr


def test_check_deploy_is_clean_under_production_settings(embedded_env):
    env = dict(
        embedded_env,
        DEBUG="false",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/allmile",
        REDIS_URL="redis://127.0.0.1:6379/14",
        SECRET_KEY="prod-" + "k9Xq2" * 12,
        ALLOWED_HOSTS="allmile.example.com",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
