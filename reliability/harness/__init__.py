"""Shared pieces of the reliability tests (tests/reliability/).

* ``live_server``: gunicorn on a free loopback port, pointed at a given database;
* ``http_pool``: an httpx client driven from a bounded thread pool;
* ``results``: one JSON file per target under ``test-artifacts/reliability/``;
* ``sizing``: ``RELIABILITY_SCALE`` (1 = the CI size) and the seed.
"""
