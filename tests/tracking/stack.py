"""Real processes for the tests: a Celery worker and an ASGI server on the test database."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
LOGS = ROOT / "test-artifacts" / "logs"


def stack_env(**overrides) -> dict:
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "SECURE_SSL_REDIRECT": "false",
    }
    env.update(overrides)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def celery_worker(
    env: dict | None = None, name: str = "worker", pool: str = "solo", extra_args: tuple = ()
):
    LOGS.mkdir(parents=True, exist_ok=True)
    from config.celery import app

    # Tasks queued by earlier tests (their rows are gone) would be worked off
    # first and delay this module's own: start from an empty queue.
    app.control.purge()
    # A purged relay task may still hold its queue slot (tracking.kick): free it,
    # or the first kick of this module finds it taken and queues nothing.
    from tracking.kick import RELAY_PENDING_KEY, queue_slot_release

    queue_slot_release(RELAY_PENDING_KEY)
    worker = subprocess.Popen(
        [str(ROOT / ".venv/bin/celery"), "-A", "config", "worker", f"--pool={pool}",
         "-l", "warning", *extra_args],
        cwd=ROOT, env=env or stack_env(), stdout=open(LOGS / f"{name}.log", "w"), stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not app.control.ping(timeout=0.5):
            if worker.poll() is not None:
                raise RuntimeError("the Celery worker exited at start-up")
            time.sleep(0.3)
        yield worker
    finally:
        _stop([worker])


@contextlib.contextmanager
def asgi_server(env: dict | None = None, name: str = "server"):
    LOGS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/uvicorn"), "config.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env or stack_env(), stdout=open(LOGS / f"{name}.log", "w"), stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError("the server exited at start-up")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base_url + "/accounts/login/", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        else:
            raise RuntimeError("the server did not come up")
        yield base_url
    finally:
        _stop([server])
