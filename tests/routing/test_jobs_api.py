"""/api/v1/optimizations/: start (202), watch, cancel; input that does not fit
the schema is a 400, well-formed input a rule refuses a 422, each with the
reason, writing nothing; dispatchers only."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from routing.models import OptimizationJob, Route
from routing.services import optimization_job_run
from routing.tasks import optimization_job_run_task
from shipments.states import Mile
from tests import factories
from tests.routing.test_jobs_support import closed_day, hub_close_on_sundays, last_mile_day

pytestmark = pytest.mark.django_db

URL = "/api/v1/optimizations/"
S = OptimizationJob.Status


@pytest.fixture
def day(hubs):
    return last_mile_day(hubs, count=4, vehicles=2)


def body(day, **overrides) -> dict:
    return {
        "service_date": day.day.isoformat(),
        "hub": day.hub.pk,
        "mile": Mile.LAST,
        "vehicles": day.vehicle_ids,
        "time_limit_seconds": 1,
        **overrides,
    }


def test_post_answers_202_with_the_queued_job_and_queues_the_run_after_commit(
    dispatcher_client, dispatcher, day, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = dispatcher_client.post(
            URL, body(day, objective_weights={"distance": 2}), format="json"
        )

    assert response.status_code == 202, response.data
    data = response.data
    job = OptimizationJob.objects.get(pk=data["id"])
    assert data["status"] == S.QUEUED
    assert data["progress"] == 0
    assert data["result"] is None
    assert data["hub_code"] == day.hub.code
    assert sorted(data["vehicles"]) == sorted(day.vehicle_ids)
    assert data["objective_weights"] == {"distance": 2.0}
    assert data["created_by"] == dispatcher.username
    assert job.created_by == dispatcher
    assert data["selected_leg_count"] == 0  # the day's scope is read when it runs
    # The task goes out only once the job row is committed, with its time limits.
    (queue_run,) = callbacks
    assert queue_run.func == optimization_job_run_task.apply_async
    assert queue_run.keywords["args"] == [job.pk]
    assert queue_run.keywords["soft_time_limit"] > job.time_limit_seconds
    assert queue_run.keywords["time_limit"] > queue_run.keywords["soft_time_limit"]


def test_the_same_idempotency_key_starts_one_job(dispatcher_client, day):
    first = dispatcher_client.post(
        URL, body(day), format="json", HTTP_IDEMPOTENCY_KEY="plan-1"
    )
    again = dispatcher_client.post(
        URL, body(day), format="json", HTTP_IDEMPOTENCY_KEY="plan-1"
    )

    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert OptimizationJob.objects.count() == 1


def test_get_shows_status_progress_and_the_result_summary(dispatcher_client, day):
    job_id = dispatcher_client.post(URL, body(day), format="json").data["id"]
    optimization_job_run(job_id=job_id)

    response = dispatcher_client.get(f"{URL}{job_id}/")

    assert response.status_code == 200
    data = response.data
    assert data["status"] == S.SUCCEEDED
    assert data["progress"] == 1.0
    result = data["result"]
    routes = Route.objects.filter(job_id=job_id)
    assert sorted(result["route_ids"]) == sorted(r.pk for r in routes)
    assert result["route_count"] == routes.count() >= 1
    assert result["stop_count"] == 4
    assert result["unassigned_count"] == 0
    assert result["distance_meters"] == sum(r.distance_meters for r in routes)
    assert data["best_cost"] == pytest.approx(result["cost"])
    assert data["engine"]
    assert data["attempts"] == 1


def test_list_filters_by_status_in_a_fixed_number_of_queries(
    dispatcher_client, day, django_assert_num_queries
):
    jobs = [
        dispatcher_client.post(URL, body(day), format="json").data["id"]
        for _ in range(3)
    ]
    dispatcher_client.post(f"{URL}{jobs[0]}/cancel/", {}, format="json")

    # Queries: auth token + user groups, count, jobs (hub, author, leg count), vehicles.
    with django_assert_num_queries(5):
        response = dispatcher_client.get(URL, {"status": S.QUEUED})

    assert response.status_code == 200
    assert [item["id"] for item in response.data["results"]] == [jobs[2], jobs[1]]
    assert dispatcher_client.get(URL, {"status": S.CANCELLED}).data["count"] == 1


def test_cancel_of_a_queued_job_answers_200_cancelled(dispatcher_client, day):
    job_id = dispatcher_client.post(URL, body(day), format="json").data["id"]

    response = dispatcher_client.post(
        f"{URL}{job_id}/cancel/", {"keep_best": False}, format="json"
    )

    assert response.status_code == 200
    assert response.data["status"] == S.CANCELLED
    assert response.data["cancel_requested"] is True
    assert (
        dispatcher_client.post(f"{URL}{job_id}/cancel/", {}, format="json").status_code
        == 200
    )


def test_cancel_of_a_running_job_answers_202_while_the_search_stops(
    dispatcher_client, day
):
    from routing.services import optimization_job_claim

    job_id = dispatcher_client.post(URL, body(day), format="json").data["id"]
    optimization_job_claim(job_id=job_id)

    response = dispatcher_client.post(f"{URL}{job_id}/cancel/", {}, format="json")

    assert response.status_code == 202
    assert response.data["status"] == S.RUNNING
    assert response.data["cancel_requested"] is True


def test_cancel_of_a_finished_job_is_a_409_and_of_an_unknown_one_a_404(
    dispatcher_client, day
):
    job_id = dispatcher_client.post(URL, body(day), format="json").data["id"]
    optimization_job_run(job_id=job_id)

    conflict = dispatcher_client.post(f"{URL}{job_id}/cancel/", {}, format="json")
    missing = dispatcher_client.post(f"{URL}999999999/cancel/", {}, format="json")

    assert conflict.status_code == 409
    assert conflict.data["current_state"] == S.SUCCEEDED
    assert OptimizationJob.objects.get(pk=job_id).status == S.SUCCEEDED
    assert missing.status_code == 404
    assert dispatcher_client.get(f"{URL}999999999/").status_code == 404
    huge = "9" * 30  # beyond a bigint: still a plain 404
    assert dispatcher_client.get(f"{URL}{huge}/").status_code == 404
    assert (
        dispatcher_client.post(f"{URL}{huge}/cancel/", {}, format="json").status_code
        == 404
    )


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"vehicles": []}, "vehicles", "at least 1"),
        ({"vehicles": ["van"]}, "vehicles", "whole number"),
        ({"vehicles": [-1]}, "vehicles", "greater than"),
        ({"hub": 2**70}, "hub", "less than"),
        ({"time_limit_seconds": 0}, "time_limit_seconds", "greater than"),
        ({"time_limit_seconds": 86_400}, "time_limit_seconds", "less than"),
        ({"mile": "sideways"}, "mile", "not a valid choice"),
        ({"service_date": "2026-02-30"}, "service_date", "format"),
        ({"objective_weights": {"speed": 1}}, "objective_weights", "Unknown objective"),
        ({"objective_weights": {"distance": -1}}, "objective_weights", "greater than"),
        ({"objective_weights": [1, 2]}, "objective_weights", "dictionary"),
    ],
)
def test_input_that_does_not_fit_the_schema_is_a_400_naming_the_field(
    dispatcher_client, day, overrides, field, words
):
    response = dispatcher_client.post(URL, body(day, **overrides), format="json")

    assert response.status_code == 400, response.data
    assert field in response.data, response.data
    assert words.lower() in json.dumps(response.data).lower()
    assert not OptimizationJob.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"vehicles": [999_999_999]}, "vehicles", "Unknown vehicles"),
        ({"hub": 999_999_999}, "hub", "Unknown hub"),
        ({"mile": Mile.MIDDLE}, "mile", "line-haul"),
        ({"service_date": "9999-12-31"}, "service_date", "between"),
        ({"legs": [999_999_999]}, "legs", "Unknown legs"),
        ({"shipments": [999_999_999]}, "shipments", "Unknown shipments"),
    ],
)
def test_well_formed_input_a_rule_refuses_is_a_422_naming_the_field(
    dispatcher_client, day, overrides, field, words
):
    response = dispatcher_client.post(URL, body(day, **overrides), format="json")

    assert response.status_code == 422, response.data
    assert field in response.data, response.data
    assert words.lower() in json.dumps(response.data).lower()
    assert not OptimizationJob.objects.exists()


@pytest.mark.parametrize(
    "query", [{"hub": "abc"}, {"service_date": "yesterday"}, {"status": "lost"}]
)
def test_a_bad_list_filter_is_a_400(dispatcher_client, query):
    assert dispatcher_client.get(URL, query).status_code == 400


def test_missing_fields_are_each_named(dispatcher_client):
    response = dispatcher_client.post(URL, {}, format="json")

    assert response.status_code == 400
    assert {"service_date", "hub", "mile", "vehicles"} <= set(response.data)


def test_a_nan_weight_is_a_400(dispatcher_client, day):
    raw = json.dumps(body(day))[:-1] + ', "objective_weights": {"distance": NaN}}'

    response = dispatcher_client.post(URL, raw, content_type="application/json")

    assert response.status_code == 400
    assert not OptimizationJob.objects.exists()


def test_vehicles_of_another_hub_or_out_of_service_are_refused(
    dispatcher_client, day, hubs
):
    elsewhere = factories.vehicle_make(hubs[0])
    resting = factories.vehicle_make(day.hub, is_active=False)

    for vehicle in (elsewhere, resting):
        response = dispatcher_client.post(
            URL, body(day, vehicles=[*day.vehicle_ids, vehicle.pk]), format="json"
        )
        assert response.status_code == 422
        assert vehicle.code in response.data["vehicles"][0]
    assert not OptimizationJob.objects.exists()


def test_a_day_the_hub_is_closed_or_with_nothing_to_plan_is_a_422(
    dispatcher_client, day
):
    hub_close_on_sundays(day.hub)
    closed = dispatcher_client.post(
        URL, body(day, service_date=closed_day().isoformat()), format="json"
    )
    empty_day = (day.day + timedelta(days=7)).isoformat()
    empty = dispatcher_client.post(
        URL, body(day, service_date=empty_day), format="json"
    )

    assert closed.status_code == 422
    assert "closed" in closed.data["service_date"][0]
    assert empty.status_code == 422
    assert "Nothing to plan" in empty.data["legs"][0]


def test_legs_of_another_mile_or_hub_are_refused(dispatcher_client, day):
    first_mile_leg = day.legs(Mile.FIRST)[0]

    response = dispatcher_client.post(
        URL, body(day, legs=[first_mile_leg.pk]), format="json"
    )

    assert response.status_code == 422
    assert str(first_mile_leg.pk) in response.data["legs"][0]


@pytest.mark.parametrize("who", ["driver", "anonymous"])
def test_only_dispatchers_may_start_watch_or_cancel_jobs(
    who, driver_client, api_client, dispatcher_client, day
):
    job_id = dispatcher_client.post(URL, body(day), format="json").data["id"]
    client, refused = (driver_client, 403) if who == "driver" else (api_client, 401)

    answers = [
        client.get(URL).status_code,
        client.post(URL, body(day), format="json").status_code,
        client.get(f"{URL}{job_id}/").status_code,
        client.post(f"{URL}{job_id}/cancel/", {}, format="json").status_code,
    ]

    assert answers == [refused] * 4
    assert OptimizationJob.objects.count() == 1
    assert OptimizationJob.objects.get(pk=job_id).status == S.QUEUED


def test_the_schema_documents_the_operations(dispatcher_client):
    schema = dispatcher_client.get("/api/schema/", {"format": "json"})

    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/optimizations/"])
    assert "202" in paths["/api/v1/optimizations/"]["post"]["responses"]
    assert "/api/v1/optimizations/{job_id}/cancel/" in paths
