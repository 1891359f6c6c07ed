"""The day's communication figures: delivery rate and average rating."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from notifications.selectors import notification_kpis
from shipments.models import Location, Party
from tests import factories
from tests.notifications.journey import JOURNEY, process_in_process, step

pytestmark = pytest.mark.django_db


def _delivered(*, email: str, phone: str):
    created = factories.shipment_make()
    Party.objects.filter(pk=created.shipment.consignee_id).update(
        email=email, phone=phone
    )
    # The delivery contact is the fallback address: same as the party's here.
    Location.objects.filter(pk=created.shipment.destination_id).update(
        contact_email=email, contact_phone=phone
    )
    for mile, status in JOURNEY:
        step(created.shipment, mile, status)
        process_in_process(created.shipment)
    return created


def test_kpis_count_sent_failed_and_not_sent_messages_and_average_the_ratings(
    hubs, daytime_rules, smtp, sms_api, api_client, fresh_limits
):
    sms_api.script = [(400, {"code": 21211, "message": "invalid number"})]
    reached = _delivered(
        email="camille@example.test", phone="+33600000001"
    )  # 6 e-mails sent, 1 SMS failed
    unreachable = _delivered(email="", phone="")  # 7 messages without an address
    for created, stars in ((reached, 4), (unreachable, 2)):
        answer = api_client.post(
            f"/api/v1/track/{created.tracking_token}/rating/",
            {"stars": stars},
            format="json",
        )
        assert answer.status_code == 201

    today = notification_kpis(timezone.localdate())
    yesterday = notification_kpis(timezone.localdate() - timedelta(days=1))

    assert (
        today["messages_sent"],
        today["messages_failed"],
        today["messages_suppressed"],
    ) == (6, 1, 7)
    assert today["messages_pending"] == 0
    assert today["delivery_rate"] == round(6 / 7, 4)
    assert today["by_channel"] == {
        "email": {"sent": 6, "suppressed": 6},
        "sms": {"failed": 1, "suppressed": 1},
    }
    assert (today["ratings"], today["average_rating"], today["low_ratings"]) == (
        2,
        3.0,
        1,
    )
    assert yesterday["delivery_rate"] is None
    assert yesterday["average_rating"] is None
    assert yesterday["ratings"] == 0


def test_kpis_answer_in_two_queries(db, django_assert_num_queries):
    # 1: messages by channel and status, 2: ratings aggregate.
    with django_assert_num_queries(2):
        notification_kpis(timezone.localdate())
