"""R7: the Celery configuration guard.

Celery on Redis re-delivers a task whose worker died (acks_late) once the
visibility timeout passes, and also any task still unacknowledged by then —
even a healthy one with a long countdown. So: one timeout everywhere, longer
than any delay or time limit in the code, and every late-acked task safe to
run twice.
"""

from __future__ import annotations

import ast
from importlib.metadata import version
from pathlib import Path

from django.conf import settings

from config.celery import app

ROOT = Path(__file__).resolve().parent.parent
APPS = ["shipments", "routing", "dispatch", "tracking", "notifications"]
DELAY_KEYWORDS = {"countdown", "retry_backoff_max", "default_retry_delay", "time_limit", "soft_time_limit"}


def _visibility_timeouts() -> list[int]:
    app.loader.import_default_modules()
    conf = app.conf
    return [
        conf.broker_transport_options["visibility_timeout"],
        conf.result_backend_transport_options["visibility_timeout"],
        settings.CELERY_VISIBILITY_TIMEOUT_SECONDS,
    ]


def test_all_visibility_timeouts_are_equal():
    timeouts = _visibility_timeouts()
    assert len(set(timeouts)) == 1, timeouts


def test_every_delay_and_time_limit_in_the_code_is_below_the_visibility_timeout():
    timeout = _visibility_timeouts()[0]
    too_long = []
    for app_name in APPS:
        for path in (ROOT / app_name).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.keyword) and node.arg in DELAY_KEYWORDS:
                    value = node.value
                    if isinstance(value, ast.Constant) and isinstance(value.value, (int, float)):
                        if value.value >= timeout:
                            too_long.append(f"{path.relative_to(ROOT)}:{node.value.lineno} {node.arg}={value.value}")
    for task in app.tasks.values():
        for attribute in ("time_limit", "soft_time_limit", "default_retry_delay", "retry_backoff_max"):
            value = getattr(task, attribute, None)
            if isinstance(value, (int, float)) and value >= timeout:
                too_long.append(f"{task.name}.{attribute}={value}")
    assert settings.ROUTING_MAX_TIME_LIMIT_SECONDS < timeout
    assert not too_long, too_long


def test_every_late_acked_task_is_declared_idempotent():
    app.loader.import_default_modules()
    ours = [t for name, t in app.tasks.items() if name.split(".")[0] in APPS]
    assert ours, "no project task registered"
    offenders = [
        task.name
        for task in ours
        if (task.acks_late or app.conf.task_acks_late) and getattr(task, "idempotent", False) is not True
    ]
    assert not offenders, offenders


def test_worker_settings_guard_against_loss():
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1


def test_the_shipped_redis_configuration_is_durable_and_never_evicts():
    lines = {
        line.split()[0]: line.split()[1:]
        for line in (ROOT / "deploy" / "redis.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert lines["appendonly"] == ["yes"]
    assert lines["maxmemory-policy"] == ["noeviction"]


def test_kombu_is_at_least_5_4():
    major, minor = (int(part) for part in version("kombu").split(".")[:2])
    assert (major, minor) >= (5, 4)
