"""Rules and wording in the admin: editing is checked, the preview renders
with a real shipment, the delivery log shows on the dashboard's shipment page."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.template import Context, Template
from django.test import Client

from notifications.models import MessageTemplate, NotificationOptOut
from shipments.models import Party, Shipment
from tests import factories
from tests.notifications.journey import process_in_process, step

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(db) -> Client:
    client = Client()
    client.force_login(
        User.objects.create_superuser("root", "root@example.test", "pass-1234-word")
    )
    return client


@pytest.fixture
def picked_up(hubs):
    shipment = factories.shipment_make().shipment
    Party.objects.filter(pk=shipment.consignee_id).update(email="camille@example.test")
    step(shipment, "first", "assigned")
    step(shipment, "first", "in_transit")
    return Shipment.objects.get(pk=shipment.pk)


def _preview(admin_client, rule, **params):
    return admin_client.get(
        f"/admin/notifications/notificationrule/{rule.pk}/preview/", params
    )


def test_the_preview_renders_a_rule_for_a_real_shipment_in_each_language(
    admin_client, rules, picked_up
):
    rule = rules["Picked up (e-mail)"]

    answer = _preview(admin_client, rule, shipment=picked_up.reference)

    assert answer.status_code == 200
    html = answer.content.decode()
    assert (
        f"Your parcel {picked_up.reference} from {picked_up.shipper.name} is on its way"
        in html
    )
    assert (
        f"Votre colis {picked_up.reference} de {picked_up.shipper.name} est en route"
        in html
    )
    assert "/t/" in html  # the tracking link
    assert (
        Shipment.objects.get(pk=picked_up.pk).messages.count() == 0
    )  # nothing was sent


def test_the_preview_uses_an_edited_template_and_tells_an_unknown_shipment(
    admin_client, rules, picked_up
):
    rule = rules["Picked up (e-mail)"]
    MessageTemplate.objects.create(
        rule=rule,
        language="en",
        subject="Hi {{ recipient_name }}",
        body="{{ reference }} left {{ shipper_name }}.",
    )

    by_id = _preview(
        admin_client, rule, shipment=str(picked_up.pk), language="en"
    ).content.decode()
    unknown = _preview(admin_client, rule, shipment="NOPE-1").content.decode()

    assert "Hi Camille Martin" in by_id
    assert f"{picked_up.reference} left {picked_up.shipper.name}." in by_id
    assert "No shipment with this reference or id." in unknown


def test_a_template_that_does_not_compile_is_refused_in_the_admin(admin_client, rules):
    rule = rules["Delivered (e-mail)"]
    answer = admin_client.post(
        "/admin/notifications/messagetemplate/add/",
        {
            "rule": rule.pk,
            "language": "fr",
            "subject": "Livré",
            "body": "{% if reference %}oops",
        },
    )

    assert answer.status_code == 200
    assert "Template error" in answer.content.decode()
    assert not MessageTemplate.objects.exists()


def test_an_edited_template_is_what_the_customer_receives(rules, picked_up, smtp):
    rule = rules["Picked up (e-mail)"]
    MessageTemplate.objects.create(
        rule=rule,
        language="en",
        subject="On its way: {{ reference }}",
        body="Dear {{ recipient_name }}, it left.",
    )

    (message,) = process_in_process(picked_up)

    (email,) = smtp.wait_for(1)
    assert email["Subject"] == f"On its way: {picked_up.reference}"
    # The template forgot the tracking link: it is added.
    assert (
        email.get_content()
        .replace("\r\n", "\n")
        .startswith("Dear Camille Martin, it left.\n\nhttp")
    )
    assert "/t/" in email.get_content()
    assert message.status == "queued"


def test_an_opt_out_added_in_the_admin_is_normalised(admin_client):
    answer = admin_client.post(
        "/admin/notifications/notificationoptout/add/",
        {"channel": "sms", "address": "+33 6 12-34-56-78"},
    )

    assert answer.status_code == 302
    assert NotificationOptOut.objects.get().address == "+33612345678"


def test_the_rule_list_and_the_delivery_log_pages_open(admin_client, rules, picked_up):
    process_in_process(picked_up)

    pages = [
        "/admin/notifications/notificationrule/",
        f"/admin/notifications/notificationrule/{rules['At risk (e-mail)'].pk}/change/",
        "/admin/notifications/message/",
        "/admin/notifications/messagetemplate/",
        "/admin/notifications/deliveryinstruction/",
        "/admin/notifications/customerrating/",
        "/admin/notifications/hubpickuprequest/",
    ]

    assert [admin_client.get(page).status_code for page in pages] == [200] * len(pages)
    change = admin_client.get(pages[1]).content.decode()
    assert "Votre colis {{ reference }} risque" in change  # the shipped French wording


def test_the_delivery_log_partial_lists_the_shipments_messages(rules, picked_up, smtp):
    other = factories.shipment_make().shipment
    process_in_process(picked_up)

    html = Template(
        "{% load notifications %}{% notification_log shipment_id %}"
    ).render(Context({"shipment_id": picked_up.pk}))
    empty = Template(
        "{% load notifications %}{% notification_log shipment_id %}"
    ).render(Context({"shipment_id": other.pk}))

    assert 'data-status="sent"' in html
    assert "Picked up (e-mail)" in html
    assert "camille@example.test" in html
    assert "No message to the customer yet." in empty
