"""Customer actions through the tracking link's API: accepted within the
allowed choices, refused with a clear message outside them, never touching
another shipment, rate-limited, each one an event."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from django.utils import timezone

from notifications.models import CustomerRating, DeliveryInstruction, HubPickupRequest
from notifications.selectors import delivery_instructions_for_shipments
from shipments.models import Shipment, ShipmentEvent
from shipments.services import leg_transition
from tests import factories
from tests.notifications.journey import JOURNEY, leg_of, step
from tests.tracking.builders import chain_plan, legs_of, local_at

pytestmark = pytest.mark.django_db

HUB_WINDOW_STARTS = [
    "06:00",
    "08:00",
    "10:00",
    "12:00",
    "14:00",
    "16:00",
    "18:00",
    "20:00",
]


@pytest.fixture(autouse=True)
def _limits(fresh_limits):
    return fresh_limits


@pytest.fixture
def hubs(hubs_closed_on_sundays):
    return hubs_closed_on_sundays


def _plan_day() -> int:
    """Days from today to the plan: tomorrow, or the day after when the hub is
    closed tomorrow (Sunday)."""
    return 2 if (timezone.localdate() + timedelta(days=1)).weekday() == 6 else 1


def _make(**kwargs):
    """A shipment planned for the next open day (parcel ready at the Monaco hub
    at 13:30), and its token."""
    created = factories.shipment_make(**kwargs)
    chain_plan(
        created.shipment,
        day=_plan_day(),
        first=((8, 0), (9, 0)),
        middle=((12, 0), (13, 0)),
        last=((14, 0), (15, 0)),
        promised=(16, 0),
    )
    return Shipment.objects.get(pk=created.shipment.pk), created.tracking_token


@pytest.fixture
def planned(hubs):
    return _make()


def _url(token: str, action: str) -> str:
    return f"/api/v1/track/{token}/{action}/"


def _events(shipment: Shipment, prefix: str = "customer.") -> list[ShipmentEvent]:
    return list(
        ShipmentEvent.objects.filter(
            shipment=shipment, type__startswith=prefix
        ).order_by("id")
    )


def _next(weekday: int, *, after: date) -> date:
    """The first given weekday (0 = Monday) strictly after a date."""
    return after + timedelta(days=(weekday - after.weekday() - 1) % 7 + 1)


def _open_day(options: dict, index: int = 0) -> dict:
    return options["days"][index]


def _failed_attempt(shipment: Shipment) -> None:
    """Drive to a failed last-mile attempt that the failure policy re-planned."""
    for mile, status in JOURNEY[:8]:
        step(shipment, mile, status)
    step(shipment, "last", "failed", reason="not_home")
    leg_transition(
        leg_id=leg_of(shipment, "last").pk,
        to="planned",
        source="system",
        event_type="leg.rescheduled",
    )


# ---------------------------------------------------------------------------
# Delivery options
# ---------------------------------------------------------------------------


def test_options_list_the_days_and_windows_the_delivery_hub_serves(planned, api_client):
    shipment, token = planned

    answer = api_client.get(_url(token, "delivery-options"))

    assert answer.status_code == 200
    assert answer["Cache-Control"] == "no-store"
    body = answer.json()
    assert body["can_reschedule"] is True
    first = timezone.localdate() + timedelta(
        days=_plan_day()
    )  # the parcel reaches the hub
    days = [date.fromisoformat(d["date"]) for d in body["days"]]
    # Seven days from the first possible one, without Sundays (the hub is closed).
    assert days == [
        first + timedelta(days=i)
        for i in range(7)
        if (first + timedelta(days=i)).weekday() != 6
    ]
    for day in body["days"]:
        labels = [w["label"] for w in day["windows"]]
        starts = [label.split("-")[0] for label in labels]
        if date.fromisoformat(day["date"]) == timezone.localdate() + timedelta(
            days=_plan_day()
        ):
            # The parcel is ready at the hub at 13:30 that day: later windows only.
            assert starts == ["14:00", "16:00", "18:00", "20:00"]
        else:
            assert starts == HUB_WINDOW_STARTS
    assert body["can_rate"] is False
    assert body["can_request_redelivery"] is False


def test_options_say_why_a_delivered_shipment_cannot_be_moved(hubs, api_client):
    shipment, token = _make()
    for mile, status in JOURNEY:
        step(shipment, mile, status)

    body = api_client.get(_url(token, "delivery-options")).json()

    assert body["can_reschedule"] is False
    assert (
        body["reschedule_refusal"]
        == "This shipment is delivered; its delivery can no longer be changed."
    )
    assert body["days"] == []
    assert body["can_rate"] is True


# ---------------------------------------------------------------------------
# Rescheduling
# ---------------------------------------------------------------------------


def test_rescheduling_to_an_offered_window_replans_the_last_mile_and_says_so(
    planned, api_client, django_capture_on_commit_callbacks
):
    shipment, token = planned
    day = _open_day(api_client.get(_url(token, "delivery-options")).json(), 1)

    with django_capture_on_commit_callbacks(execute=True):
        answer = api_client.post(
            _url(token, "reschedule"),
            {"date": day["date"], "window_start": "10:00"},
            format="json",
        )

    assert answer.status_code == 200, answer.json()
    chosen = date.fromisoformat(day["date"])
    start, end = (
        local_at((chosen - timezone.localdate()).days, 10),
        local_at((chosen - timezone.localdate()).days, 12),
    )
    assert answer.json()["detail"].startswith("Your delivery is re-planned for ")
    assert answer.json()["detail"].endswith(", 10:00–12:00.")
    shipment.refresh_from_db()
    assert (shipment.delivery_window_start, shipment.delivery_window_end) == (
        start,
        end,
    )
    assert shipment.promised_by == end
    last = legs_of(shipment)["last"]
    assert last.planned_arrival == start + timedelta(hours=1)
    assert last.planned_arrival - last.planned_departure == timedelta(hours=1)
    (event,) = _events(shipment)
    assert (event.type, event.source, event.leg_id) == (
        "customer.rescheduled",
        "customer",
        last.pk,
    )
    assert event.payload["window_start"] == start.isoformat()


@pytest.mark.parametrize(
    ("when", "window_start", "field", "message_start"),
    [
        ("yesterday", "10:00", "date", "This day is in the past."),
        ("today", "10:00", "date", "Today can no longer be chosen"),
        ("sunday", "10:00", "date", "We do not deliver on Sunday"),
        ("in_a_month", "10:00", "date", "Choose a day within the next 7 days."),
        (
            "open_day",
            "05:00",
            "window_start",
            "We do not deliver in the window starting at 05:00",
        ),
        (
            "open_day",
            "09:00",
            "window_start",
            "We do not deliver in the window starting at 09:00",
        ),
        (
            "open_day",
            "22:00",
            "window_start",
            "We do not deliver in the window starting at 22:00",
        ),
    ],
)
def test_rescheduling_outside_the_offered_choices_is_refused_with_a_reason(
    planned, api_client, when, window_start, field, message_start
):
    shipment, token = planned
    today = timezone.localdate()
    open_day = date.fromisoformat(
        _open_day(api_client.get(_url(token, "delivery-options")).json(), 1)["date"]
    )
    day = {
        "yesterday": today - timedelta(days=1),
        "today": today,
        "sunday": _next(6, after=today + timedelta(days=1)),
        "in_a_month": today + timedelta(days=30),
        "open_day": open_day,
    }[when]
    before = (shipment.delivery_window_start, legs_of(shipment)["last"].planned_arrival)

    answer = api_client.post(
        _url(token, "reschedule"),
        {"date": day.isoformat(), "window_start": window_start},
        format="json",
    )

    assert answer.status_code == 422
    assert answer.json()[field][0].startswith(message_start)
    shipment.refresh_from_db()
    assert (
        shipment.delivery_window_start,
        legs_of(shipment)["last"].planned_arrival,
    ) == before
    assert _events(shipment) == []


def test_a_window_before_the_parcel_reaches_the_hub_is_refused(planned, api_client):
    shipment, token = planned
    ready_day = timezone.localdate() + timedelta(days=_plan_day())

    answer = api_client.post(
        _url(token, "reschedule"),
        {"date": ready_day.isoformat(), "window_start": "08:00"},
        format="json",
    )

    assert answer.status_code == 422
    assert answer.json()["window_start"][0] == (
        "We do not deliver in the window starting at 08:00 on that day; "
        "choose one of: 14:00-16:00, 16:00-18:00, 18:00-20:00, 20:00-22:00."
    )


def test_a_delivered_shipment_cannot_be_rescheduled(hubs, api_client):
    shipment, token = _make()
    for mile, status in JOURNEY:
        step(shipment, mile, status)
    day = (timezone.localdate() + timedelta(days=2)).isoformat()

    answer = api_client.post(
        _url(token, "reschedule"), {"date": day, "window_start": "10:00"}, format="json"
    )

    assert answer.status_code == 409
    assert (
        answer.json()["detail"]
        == "This shipment is delivered; its delivery can no longer be changed."
    )
    assert _events(shipment) == []


def test_a_delivery_already_on_a_drivers_route_cannot_be_moved_online(
    planned, api_client
):
    shipment, token = planned
    step(shipment, "last", "assigned")
    day = (timezone.localdate() + timedelta(days=2)).isoformat()

    answer = api_client.post(
        _url(token, "reschedule"), {"date": day, "window_start": "10:00"}, format="json"
    )

    assert answer.status_code == 409
    assert "already planned on a driver's route" in answer.json()["detail"]


def test_an_action_never_touches_another_shipment(hubs, api_client):
    mine, token = _make()
    other, _ = _make()
    other_before = (
        other.delivery_window_start,
        other.promised_by,
        legs_of(other)["last"].planned_arrival,
    )
    day = _open_day(api_client.get(_url(token, "delivery-options")).json(), 1)["date"]

    answers = [
        api_client.post(
            _url(token, "reschedule"),
            {
                "date": day,
                "window_start": "10:00",
                "shipment_id": other.pk,
                "shipment": other.pk,
            },
            format="json",
        ),
        api_client.post(
            _url(token, "instructions"),
            {"note": "Ring twice", "shipment_id": other.pk},
            format="json",
        ),
    ]

    assert [a.status_code for a in answers] == [200, 200]
    other.refresh_from_db()
    assert (
        other.delivery_window_start,
        other.promised_by,
        legs_of(other)["last"].planned_arrival,
    ) == other_before
    assert _events(other) == []
    assert not DeliveryInstruction.objects.filter(shipment=other).exists()
    assert {e.type for e in _events(mine)} == {
        "customer.rescheduled",
        "customer.instructions_updated",
    }


@pytest.mark.parametrize(
    "action", ["delivery-options", "instructions", "reschedule", "redelivery", "rating"]
)
def test_an_unknown_or_expired_link_answers_the_tracking_404(hubs, api_client, action):
    shipment, token = _make()
    for mile, status in JOURNEY:
        step(shipment, mile, status)
    Shipment.objects.filter(pk=shipment.pk).update(
        completed_at=timezone.now() - timedelta(days=15)
    )

    for candidate in ("x" * 43, token):
        call = api_client.get if action == "delivery-options" else api_client.post
        answer = call(_url(candidate, action), {}, format="json")
        assert answer.status_code == 404
        assert answer.json() == {
            "detail": "This tracking link is not valid or has expired."
        }
        assert answer["X-Robots-Tag"] == "noindex, nofollow"


@pytest.mark.parametrize(
    "body",
    [
        {"date": "99999-01-01", "window_start": "10:00"},
        {"date": "2026-02-30", "window_start": "10:00"},
        {"date": "tomorrow", "window_start": "10:00"},
        {"date": "2026-12-01", "window_start": "25:00"},
        {"date": "2026-12-01", "window_start": "１０:００"},
        {"date": ["2026-12-01"], "window_start": {"h": 10}},
        {},
    ],
)
def test_absurd_reschedule_input_is_a_400_never_a_500(planned, api_client, body):
    shipment, token = planned

    answer = api_client.post(_url(token, "reschedule"), body, format="json")

    assert answer.status_code == 400
    assert set(answer.json()) & {"date", "window_start"}


# ---------------------------------------------------------------------------
# Redelivery and pickup at the hub
# ---------------------------------------------------------------------------


def test_redelivery_and_hub_pickup_need_a_failed_attempt_first(planned, api_client):
    shipment, token = planned
    day = (timezone.localdate() + timedelta(days=2)).isoformat()

    answers = [
        api_client.post(
            _url(token, "redelivery"), {"option": "hub_pickup"}, format="json"
        ),
        api_client.post(
            _url(token, "redelivery"),
            {"option": "redelivery", "date": day, "window_start": "10:00"},
            format="json",
        ),
    ]

    assert [a.status_code for a in answers] == [409, 409]
    assert (
        answers[0].json()["detail"]
        == "A pickup at the hub can be asked for only after a failed delivery attempt."
    )
    assert (
        answers[1].json()["detail"]
        == "A redelivery can be asked for only after a failed delivery attempt."
    )
    assert _events(shipment) == []


def test_after_a_failed_attempt_the_customer_chooses_a_redelivery_day(hubs, api_client):
    shipment, token = _make()
    _failed_attempt(shipment)
    options = api_client.get(_url(token, "delivery-options")).json()
    assert options["can_request_redelivery"] is True
    assert options["can_pick_up_at_hub"] is True
    day = options["days"][0]

    answer = api_client.post(
        _url(token, "redelivery"),
        {
            "option": "redelivery",
            "date": day["date"],
            "window_start": day["windows"][-1]["label"][:5],
        },
        format="json",
    )

    assert answer.status_code == 200, answer.json()
    assert answer.json()["option"] == "redelivery"
    (event,) = _events(shipment)
    assert event.type == "customer.redelivery_requested"
    shipment.refresh_from_db()
    assert shipment.delivery_window_start == datetime.fromisoformat(
        day["windows"][-1]["start"]
    )


def test_after_a_failed_attempt_the_customer_collects_at_the_hub(hubs, api_client):
    shipment, token = _make()
    _failed_attempt(shipment)

    first = api_client.post(
        _url(token, "redelivery"), {"option": "hub_pickup"}, format="json"
    )
    again = api_client.post(
        _url(token, "redelivery"), {"option": "hub_pickup"}, format="json"
    )

    assert (first.status_code, again.status_code) == (200, 200)
    assert first.json()["hub"]["name"] == "MCO-HUB"
    assert first.json()["detail"].startswith("Your parcel will wait for you at MCO-HUB")
    assert [e.type for e in _events(shipment)] == ["customer.hub_pickup_requested"]
    assert (
        HubPickupRequest.objects.filter(shipment=shipment, status="requested").count()
        == 1
    )
    assert delivery_instructions_for_shipments([shipment.pk]) == {
        shipment.pk: "Do not deliver: the customer collects it at MCO-HUB"
    }


def test_choosing_a_redelivery_withdraws_the_hub_pickup(hubs, api_client):
    shipment, token = _make()
    _failed_attempt(shipment)
    api_client.post(_url(token, "redelivery"), {"option": "hub_pickup"}, format="json")
    day = api_client.get(_url(token, "delivery-options")).json()["days"][0]

    api_client.post(
        _url(token, "redelivery"),
        {
            "option": "redelivery",
            "date": day["date"],
            "window_start": day["windows"][0]["label"][:5],
        },
        format="json",
    )

    assert HubPickupRequest.objects.get(shipment=shipment).status == "withdrawn"
    assert delivery_instructions_for_shipments([shipment.pk]) == {}


def test_a_redelivery_without_a_day_is_a_field_error(hubs, api_client):
    shipment, token = _make()
    _failed_attempt(shipment)

    answer = api_client.post(
        _url(token, "redelivery"), {"option": "redelivery"}, format="json"
    )

    assert answer.status_code == 400
    assert answer.json() == {
        "date": ["Required for a redelivery."],
        "window_start": ["Required for a redelivery."],
    }


# ---------------------------------------------------------------------------
# Instructions
# ---------------------------------------------------------------------------


def test_instructions_are_kept_for_the_driver_and_the_door_code_stays_out_of_events(
    planned, api_client
):
    shipment, token = planned

    answer = api_client.post(
        _url(token, "instructions"),
        {
            "safe_place": "Behind the blue gate",
            "door_code": "4721B",
            "note": "Dog is friendly",
        },
        format="json",
    )

    assert answer.status_code == 200
    assert answer.json()["instructions"] == {
        "safe_place": "Behind the blue gate",
        "note": "Dog is friendly",
        "has_door_code": True,
    }
    assert "4721B" not in answer.content.decode()
    assert delivery_instructions_for_shipments([shipment.pk]) == {
        shipment.pk: "Safe place: Behind the blue gate · Door code: 4721B · Note: Dog is friendly"
    }
    (event,) = _events(shipment)
    assert event.type == "customer.instructions_updated"
    assert event.payload == {
        "safe_place": "Behind the blue gate",
        "has_door_code": True,
        "note": "Dog is friendly",
    }
    options = api_client.get(_url(token, "delivery-options")).json()
    assert "4721B" not in str(options)


def test_instructions_can_be_changed_and_cleared(planned, api_client):
    shipment, token = planned
    api_client.post(_url(token, "instructions"), {"note": "Ring twice"}, format="json")

    api_client.post(
        _url(token, "instructions"),
        {"safe_place": "", "door_code": "", "note": ""},
        format="json",
    )

    assert delivery_instructions_for_shipments([shipment.pk]) == {}
    assert len(_events(shipment)) == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"door_code": "1" * 21}, "door_code"),
        ({"note": "x" * 501}, "note"),
        ({"safe_place": "nul\x00byte"}, "safe_place"),
        ({"note": ["a list"]}, "note"),
    ],
)
def test_bad_instructions_are_field_errors(planned, api_client, body, field):
    shipment, token = planned

    answer = api_client.post(_url(token, "instructions"), body, format="json")

    assert answer.status_code == 400
    assert field in answer.json()
    assert not DeliveryInstruction.objects.filter(shipment=shipment).exists()


def test_instructions_for_a_delivered_shipment_are_refused(hubs, api_client):
    shipment, token = _make()
    for mile, status in JOURNEY:
        step(shipment, mile, status)

    answer = api_client.post(
        _url(token, "instructions"), {"note": "late"}, format="json"
    )

    assert answer.status_code == 409
    assert (
        answer.json()["detail"]
        == "This shipment is delivered; instructions are no longer needed."
    )


# ---------------------------------------------------------------------------
# Rating
# ---------------------------------------------------------------------------


def test_a_delivered_shipment_is_rated_once(hubs, api_client):
    shipment, token = _make()
    for mile, status in JOURNEY:
        step(shipment, mile, status)

    first = api_client.post(
        _url(token, "rating"),
        {"stars": 4, "comment": "Quick, polite driver"},
        format="json",
    )
    again = api_client.post(_url(token, "rating"), {"stars": 1}, format="json")

    assert first.status_code == 201
    assert (again.status_code, again.json()["detail"]) == (
        409,
        "This delivery has already been rated. Thank you!",
    )
    rating = CustomerRating.objects.get(shipment=shipment)
    assert (rating.stars, rating.comment) == (4, "Quick, polite driver")
    (event,) = _events(shipment)
    assert (event.type, event.payload["stars"]) == ("customer.rated", 4)


def test_a_delivery_cannot_be_rated_before_it_happens(planned, api_client):
    shipment, token = planned

    answer = api_client.post(_url(token, "rating"), {"stars": 5}, format="json")

    assert answer.status_code == 409
    assert (
        answer.json()["detail"]
        == "You can rate the delivery once your parcel has been delivered."
    )
    assert not CustomerRating.objects.exists()


@pytest.mark.parametrize("stars", [0, 6, -1, 10**30, "five", None, 4.5])
def test_stars_outside_one_to_five_are_refused(hubs, api_client, stars):
    shipment, token = _make()
    for mile, status in JOURNEY:
        step(shipment, mile, status)

    answer = api_client.post(_url(token, "rating"), {"stars": stars}, format="json")

    assert answer.status_code == 400
    assert "stars" in answer.json()


# ---------------------------------------------------------------------------
# Limits and retries
# ---------------------------------------------------------------------------


def test_actions_are_limited_per_link(planned, api_client, settings):
    settings.CUSTOMER_ACTIONS_PER_LINK_PER_MINUTE = 5
    shipment, token = planned

    codes = [
        api_client.post(
            _url(token, "instructions"), {"note": f"try {i}"}, format="json"
        ).status_code
        for i in range(8)
    ]

    assert codes == [200] * 5 + [429] * 3
    assert len(_events(shipment)) == 5
    # Another link from the same address is not held back by this one's limit.
    _, other_token = _make()
    assert (
        api_client.post(
            _url(other_token, "instructions"), {"note": "hi"}, format="json"
        ).status_code
        == 200
    )


def test_actions_are_limited_per_address(hubs, api_client, settings):
    settings.CUSTOMER_ACTIONS_PER_IP_PER_MINUTE = 4
    tokens = [_make()[1] for _ in range(6)]

    codes = [
        api_client.post(
            _url(token, "instructions"),
            {"note": "hi"},
            format="json",
            REMOTE_ADDR="203.0.113.7",
        ).status_code
        for token in tokens
    ]

    assert codes == [200] * 4 + [429] * 2
    answer = api_client.post(
        _url(tokens[-1], "instructions"),
        {"note": "hi"},
        format="json",
        REMOTE_ADDR="203.0.113.8",
    )
    assert answer.status_code == 200


def test_a_retried_action_with_the_same_key_has_one_effect(planned, api_client):
    shipment, token = planned
    day = _open_day(api_client.get(_url(token, "delivery-options")).json(), 1)["date"]
    body = {"date": day, "window_start": "12:00"}

    first = api_client.post(
        _url(token, "reschedule"), body, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )
    again = api_client.post(
        _url(token, "reschedule"), body, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )

    assert (first.status_code, again.status_code) == (200, 200)
    assert first.content == again.content
    assert again["Idempotent-Replayed"] == "true"
    assert len(_events(shipment)) == 1


def test_a_field_left_out_keeps_its_value(planned, api_client):
    shipment, token = planned
    api_client.post(
        _url(token, "instructions"),
        {"door_code": "4721B", "note": "Ring twice"},
        format="json",
    )

    answer = api_client.post(
        _url(token, "instructions"), {"note": "Ring once"}, format="json"
    )

    assert answer.json()["instructions"] == {
        "safe_place": "",
        "note": "Ring once",
        "has_door_code": True,
    }
    assert delivery_instructions_for_shipments([shipment.pk]) == {
        shipment.pk: "Door code: 4721B · Note: Ring once"
    }
