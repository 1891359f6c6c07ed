"""The delivery cap: deliveries that never finish are counted in PostgreSQL, a
task over the cap is dead-lettered instead of run, and a dead letter can be
sent again. The poison case runs on a real prefork worker, since it is the
worker's death that the cap is about."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from celery.app.trace import task_has_custom
from celery.exceptions import Ignore
from django.core.management import CommandError, call_command

from config.celery import app
from shipments.models import DeadLetter, TaskDelivery
from shipments.taskguard import (
    WORKER_LOST,
    dead_letter_record,
    dead_letter_requeue,
    task_delivery_begin,
)
from shipments.tasks import idempotency_purge_task
from tests.tracking.stack import celery_worker

PROJECT_APPS = ("shipments", "routing", "dispatch", "tracking", "notifications")


def test_every_project_task_is_guarded():
    app.loader.import_default_modules()
    ours = [t for name, t in app.tasks.items() if name.split(".")[0] in PROJECT_APPS]

    assert ours
    assert [t.name for t in ours if not task_has_custom(t, "before_start")] == []


@pytest.mark.django_db
def test_deliveries_count_up_until_one_finishes():
    assert task_delivery_begin(task_id="t-1", task_name="x")[0] == 1
    assert task_delivery_begin(task_id="t-1", task_name="x")[0] == 2
    assert task_delivery_begin(task_id="t-2", task_name="x")[0] == 1

    TaskDelivery.objects.filter(task_id="t-1").delete()  # what postrun does

    assert task_delivery_begin(task_id="t-1", task_name="x")[0] == 1


@pytest.mark.django_db
def test_the_sixth_delivery_is_dead_lettered_not_run(settings):
    settings.TASK_MAX_DELIVERIES = 5
    for _ in range(5):
        idempotency_purge_task.before_start("t-cap", [7], {"a": 1})  # runs

    with pytest.raises(Ignore):
        idempotency_purge_task.before_start("t-cap", [7], {"a": 1})

    letter = DeadLetter.objects.get(task_id="t-cap")
    assert letter.task_name == idempotency_purge_task.name
    assert (letter.args, letter.kwargs, letter.deliveries) == ([7], {"a": 1}, 6)
    assert letter.last_error == WORKER_LOST
    assert letter.first_seen_at <= letter.last_seen_at
    assert not TaskDelivery.objects.filter(task_id="t-cap").exists()


@pytest.mark.django_db
def test_the_cap_is_a_setting(settings):
    settings.TASK_MAX_DELIVERIES = 1
    idempotency_purge_task.before_start("t-one", [], {})

    with pytest.raises(Ignore):
        idempotency_purge_task.before_start("t-one", [], {})


def _letter(
    task_id: str = "t-dead", task_name: str = "shipments.tasks.idempotency_purge_task"
):
    task_delivery_begin(task_id=task_id, task_name=task_name)
    return dead_letter_record(
        task_id=task_id,
        task_name=task_name,
        args=[],
        kwargs={},
        deliveries=6,
        last_error="",
    )


@pytest.mark.django_db
def test_a_requeued_dead_letter_is_sent_after_commit_with_a_fresh_count(
    django_capture_on_commit_callbacks,
):
    letter = _letter()
    task_delivery_begin(task_id=letter.task_id, task_name=letter.task_name)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        dead_letter_requeue(dead_letter_id=letter.pk)

    assert len(callbacks) == 1
    letter.refresh_from_db()
    assert letter.requeued_at is not None
    assert letter.requeue_count == 1
    assert not TaskDelivery.objects.filter(task_id=letter.task_id).exists()


@pytest.mark.django_db
def test_the_requeue_command_refuses_what_it_cannot_do():
    with pytest.raises(CommandError, match="--all"):
        call_command("deadletter_requeue")
    with pytest.raises(CommandError, match="No dead letter"):
        call_command("deadletter_requeue", "999999")


@pytest.mark.django_db
def test_the_admin_lists_dead_letters_and_requeues_them(admin_client):
    letter = _letter()

    listing = admin_client.get("/admin/shipments/deadletter/")
    response = admin_client.post(
        "/admin/shipments/deadletter/",
        {"action": "requeue", "_selected_action": [letter.pk]},
    )

    assert listing.status_code == 200
    assert letter.task_id in listing.content.decode()
    assert response.status_code == 302
    letter.refresh_from_db()
    assert letter.requeue_count == 1


# ---------------------------------------------------------------------------
# A real prefork worker
# ---------------------------------------------------------------------------


def prefork_worker():
    """A prefork worker (a solo worker would die with its poison) that also
    loads the test tasks."""
    return celery_worker(
        name="taskguard-worker",
        pool="prefork",
        extra_args=("--concurrency=1", "-I", "tests.shipments.taskguard_tasks"),
    )


def _runs(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _wait_for(check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not check():
        time.sleep(0.2)


@pytest.mark.django_db(transaction=True)
def test_a_poison_task_runs_five_times_then_rests_in_the_dead_letter_table(tmp_path):
    poison, crash_once, requeued = (
        tmp_path / n for n in ("poison", "crash-once", "requeued")
    )
    with prefork_worker() as worker:
        poison_id = app.send_task("tests.taskguard.poison", args=[str(poison)]).id
        crash_once_id = app.send_task(
            "tests.taskguard.crash_once", args=[str(crash_once)]
        ).id
        _wait_for(lambda: DeadLetter.objects.filter(task_id=poison_id).exists())
        _wait_for(lambda: _runs(crash_once) == 2)

        # A dead letter re-queued by the command runs again, once.
        letter = _letter(task_id="t-requeued", task_name="tests.taskguard.record")
        DeadLetter.objects.filter(pk=letter.pk).update(args=[str(requeued)])
        call_command("deadletter_requeue", str(letter.pk))
        _wait_for(lambda: _runs(requeued) == 1)
        time.sleep(2)  # anything more would show by now
        assert worker.poll() is None  # the main process outlived its children

    assert _runs(poison) == 5
    letter = DeadLetter.objects.get(task_id=poison_id)
    assert (letter.task_name, letter.deliveries, letter.args) == (
        "tests.taskguard.poison",
        6,
        [str(poison)],
    )
    assert _runs(crash_once) == 2
    assert not DeadLetter.objects.filter(task_id=crash_once_id).exists()
    assert not TaskDelivery.objects.filter(task_id=crash_once_id).exists()
    assert _runs(requeued) == 1
