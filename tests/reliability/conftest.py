"""The reliability tier ([CI] targets of RELIABILITY.md) as tests.

Run it alone: ``pytest tests/reliability -q`` (about 8 minutes at the CI size on
2 cores). ``RELIABILITY_SCALE=10`` runs the full bar sizes where a test names
them; ``RELIABILITY_SEED`` changes the seed. Every test asserts its figure
against the bar, prints one line, records a JUnit property and writes
``test-artifacts/reliability/<ID>.json``.
"""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.db import connection

from reliability.harness.live_server import LiveServer, database_url
from reliability.harness.results import result_record
from reliability.harness.sizing import seed


@pytest.fixture(scope="session")
def live_server_url(django_db_setup, django_db_blocker):
    """gunicorn (2 workers) on this session's test database; tests that use it
    commit their rows (``django_db(transaction=True)``)."""
    with django_db_blocker.unblock():
        url = database_url(connection.settings_dict)
    with LiveServer(
        database_url=url, redis_url=settings.REDIS_URL, name="reliability"
    ) as server:
        yield server


@pytest.fixture
def figure(request, record_property):
    """``figure(target, name, value, bar, passed, **details)``: print, record, write."""
    started = time.monotonic()

    def record(target, name, value, bar, passed, *, details=None, seed_used=None):
        entry = result_record(
            target=target,
            figure=name,
            value=value,
            bar=bar,
            passed=passed,
            seed=seed() if seed_used is None else seed_used,
            runtime_seconds=time.monotonic() - started,
            details=details,
        )
        record_property(f"{target}:{name}", f"{value} (bar {bar})")
        verdict = "PASS" if passed else "FAIL"
        print(f"\n[{target}] {name}: {value} | bar {bar} | {verdict}")
        return entry

    return record
