"""Settings for the Celery worker the notification tests start: the test
settings, with the test's own SMTP server, SMS API and a 1 s retry back-off."""

import os

from config.settings.test import *  # noqa: F403

EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = int(os.environ["NOTIFICATIONS_TEST_SMTP_PORT"])
DEFAULT_FROM_EMAIL = "deliveries@allmile.test"
SMS_API_BASE_URL = os.environ.get("NOTIFICATIONS_TEST_SMS_URL", "")
SMS_ACCOUNT_ID = "AC123"
SMS_AUTH_TOKEN = "secret-token"
SMS_FROM = "+33700000000"
NOTIFICATIONS_RETRY_BACKOFF_SECONDS = 1
