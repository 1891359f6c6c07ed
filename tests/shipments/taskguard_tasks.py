"""Tasks for tests/shipments/test_taskguard.py, loaded by its worker (``-I``).

Each run appends a line to the file it is given, before doing anything else,
so the test counts runs even of a task that kills its worker.
"""

import os
from pathlib import Path

from celery import shared_task


def _run_record(path: str) -> int:
    with Path(path).open("a") as runs:
        runs.write(f"{os.getpid()}\n")
    return len(Path(path).read_text().splitlines())


@shared_task(name="tests.taskguard.poison", acks_late=True, idempotent=True)
def poison_task(path: str) -> None:
    _run_record(path)
    os._exit(1)


@shared_task(name="tests.taskguard.crash_once", acks_late=True, idempotent=True)
def crash_once_task(path: str) -> None:
    if _run_record(path) == 1:
        os._exit(1)


@shared_task(name="tests.taskguard.record", acks_late=True, idempotent=True)
def record_task(path: str) -> None:
    _run_record(path)
