"""Fixtures for the notification tests: the default rules, and real SMTP and
SMS servers on loopback that the application is configured to use."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection

from notifications.defaults import notification_rules_install_defaults
from notifications.models import NotificationRule
from tests.notifications.servers import SmsApi, SmtpServer


@pytest.fixture(scope="session", autouse=True)
def _stray_connections_closed(django_db_setup, django_db_blocker):
    """Servers and workers started by these tests may leave a connection behind
    for a moment; close them before pytest-django drops the test database."""
    yield
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def hubs_closed_on_sundays(hubs):
    """Both hubs deliver 06:00-22:00 Monday to Saturday: a closed day to refuse."""
    week = {
        day: ["06:00", "22:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat")
    }
    for hub in hubs:
        hub.opening_hours = week
        hub.save(update_fields=["opening_hours"])
    return hubs


@pytest.fixture
def rules(db):
    """Exactly the default rules (a transactional test may have flushed the seeded ones)."""
    NotificationRule.objects.all().delete()
    return {rule.name: rule for rule in notification_rules_install_defaults()}


@pytest.fixture
def daytime_rules(rules):
    """The default rules without quiet hours, so a test does not depend on the clock."""
    NotificationRule.objects.update(quiet_hours_start=None, quiet_hours_end=None)
    return {
        name: NotificationRule.objects.get(pk=rule.pk) for name, rule in rules.items()
    }


@pytest.fixture
def smtp(settings):
    server = SmtpServer().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = server.port
    settings.EMAIL_USE_TLS = False
    settings.DEFAULT_FROM_EMAIL = "deliveries@allmile.test"
    yield server
    server.stop()


@pytest.fixture
def sms_api(settings):
    api = SmsApi().start()
    settings.SMS_API_BASE_URL = api.base_url
    settings.SMS_ACCOUNT_ID = "AC123"
    settings.SMS_AUTH_TOKEN = "secret-token"
    settings.SMS_FROM = "+33700000000"
    yield api
    api.stop()


@pytest.fixture
def fresh_limits():
    cache.clear()
    yield
    cache.clear()
