"""Allmile settings, read from the environment in this one place.

Two shapes from the same code:

* **embedded default** (``DEBUG`` on, no ``DATABASE_URL``/``REDIS_URL``): SQLite,
  Channels' in-memory layer, Celery tasks run in-process. Used by ``make demo``.
* **production shape** (``DATABASE_URL`` and ``REDIS_URL`` set): PostgreSQL,
  channels-redis, Celery on Redis with real workers.

With ``DEBUG`` off the process refuses to start without a real ``SECRET_KEY``.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
if env.bool("ALLMILE_READ_DOT_ENV", default=False):
    environ.Env.read_env(BASE_DIR / ".env")

# ---------------------------------------------------------------------------
# Core
# ---------------------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=False)


def _secret_key() -> str:
    key = env.str("SECRET_KEY", default="")
    if key:
        if not DEBUG and len(key) < 50:
            raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters.")
        return key
    if not DEBUG:
        # Fail closed: a production process without a secret must not serve traffic.
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off.")
    # Development only: a generated key kept in a local, git-ignored file so
    # sessions survive restarts of the demo server.
    key_file = BASE_DIR / ".local" / "secret_key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_urlsafe(64))
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
TIME_ZONE = env.str("TIME_ZONE", default="Europe/Paris")
USE_TZ = True
USE_I18N = True
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("fr", "Français")]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

INSTALLED_APPS = [
    "daphne",  # first, so runserver serves WebSockets too
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served locally, no CDN
    "channels",
    "shipments",
    "routing",
    "dispatch",
    "tracking",
    "notifications",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.DatabaseUnavailableMiddleware",
    "config.middleware.BodySizeLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# ---------------------------------------------------------------------------
# Database: PostgreSQL when DATABASE_URL is set, SQLite otherwise
# ---------------------------------------------------------------------------
DATABASE_URL = env.str("DATABASE_URL", default="")
if DATABASE_URL:
    DATABASES = {"default": env.db_url_config(DATABASE_URL)}
    # 0 under ASGI: Django opens a connection per request thread there, and
    # persistent ones pile up until PostgreSQL refuses clients (measured).
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # While PostgreSQL restarts or is unreachable a request must fail fast (503,
    # config.middleware) rather than hold a web worker: connecting gives up after
    # DB_CONNECT_TIMEOUT_SECONDS; a server that vanished without closing the socket
    # is noticed within about 9 s (unacknowledged data: tcp_user_timeout; a silent
    # peer while waiting for an answer: keepalive probes), not after minutes of TCP
    # retransmission. Probes are answered by a live host, so long queries are safe.
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options.setdefault("connect_timeout", env.int("DB_CONNECT_TIMEOUT_SECONDS", default=3))
    options.setdefault("keepalives", 1)
    options.setdefault("keepalives_idle", 5)
    options.setdefault("keepalives_interval", 2)
    options.setdefault("keepalives_count", 2)
    options.setdefault("tcp_user_timeout", 9000)  # milliseconds
elif DEBUG:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env.str(
                "SQLITE_PATH", default=str(BASE_DIR / ".local" / "allmile.sqlite3")
            ),
            # IMMEDIATE: a writer takes the lock when its transaction begins, so
            # concurrent in-process tasks wait instead of failing "database is locked".
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
else:
    raise ImproperlyConfigured("DATABASE_URL is required when DEBUG is off.")
# What a 503 answers while the database is unavailable (config.middleware).
DATABASE_UNAVAILABLE_RETRY_AFTER_SECONDS = env.int(
    "DATABASE_UNAVAILABLE_RETRY_AFTER_SECONDS", default=5
)

# ---------------------------------------------------------------------------
# Redis: channel layer, Celery broker, cache; in-process fallbacks without it
# ---------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
EMBEDDED = not REDIS_URL

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # A consumer's read blocks up to 5 s (channels-redis' BZPOPMIN);
                # redis-py 8 also gives up a socket read after 5 s by default, so
                # an idle socket's read would race it and end the consumer.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15}],
                "capacity": 1000,
                "expiry": 30,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # Rate limits and queue slots run inside requests, each with a
            # fallback: a Redis that is gone or frozen must fail them in about
            # a second, not hold the request (redis-py waits forever by default).
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 2},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# ---------------------------------------------------------------------------
# Celery (settings namespaced CELERY_ and read by config/celery.py)
# ---------------------------------------------------------------------------
# The longest task (an optimization job) runs at most ROUTING_MAX_TIME_LIMIT_SECONDS;
# the visibility timeout must exceed it, or Redis re-delivers a running task.
ROUTING_MAX_TIME_LIMIT_SECONDS = env.int("ROUTING_MAX_TIME_LIMIT_SECONDS", default=600)
# Parts of a decomposed optimization solved at once (raise with more workers).
ROUTING_DECOMPOSE_PARALLEL_PARTS = env.int("ROUTING_DECOMPOSE_PARALLEL_PARTS", default=1)
CELERY_VISIBILITY_TIMEOUT_SECONDS = env.int(
    "CELERY_VISIBILITY_TIMEOUT_SECONDS", default=3600
)
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = EMBEDDED
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A Redis outage must need nobody: the worker reconnects for as long as it takes
# (the default gives up after 100 attempts, about 45 minutes, and exits).
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# Publishing happens after a request's commit (relay kick, ETA refresh, customer
# message), and every caller copes with a failure (beat and the sweeps catch
# up). One immediate retry renews a connection that went stale across a Redis
# restart; kombu's default of three spaced retries held each request about
# 0.6 s per publish while Redis was down.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT_SECONDS,
    # A frozen Redis (no reset, no reply) must fail a publish, not hang it;
    # above the 1 s BRPOP the worker polls with.
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "socket_keepalive": True,
}
# A dead worker's unacknowledged messages are looked for every 10 s (kombu scans
# only every 10th pass by default: up to 100 s more after the visibility timeout).
CELERY_BROKER_TRANSPORT_OPTIONS["unacked_restore_throttle"] = 1
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT_SECONDS
}
CELERY_VISIBILITY_TIMEOUT = CELERY_VISIBILITY_TIMEOUT_SECONDS
# Three queues, so bulk work never delays live work: the outbox relay, ETAs and
# sweeps ("celery") do not wait behind a burst of customer messages
# ("notifications") or a ten-minute optimization ("optimization"). A worker
# started without -Q consumes all three; docker-compose gives optimization a
# worker of its own.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = {"celery": {}, "notifications": {}, "optimization": {}}
CELERY_TASK_ROUTES = {
    "notifications.tasks.notification_event_process_task": {"queue": "notifications"},
    "notifications.tasks.notification_send_task": {"queue": "notifications"},
    "routing.tasks.optimization_job_run_task": {"queue": "optimization"},
    "routing.tasks.optimization_part_solve_task": {"queue": "optimization"},
}
# A task delivered this many times without finishing (its worker died each
# time) goes to the dead-letter table instead of running again (shipments.taskguard).
TASK_MAX_DELIVERIES = env.int("TASK_MAX_DELIVERIES", default=5)
# On a warm shutdown (a deploy), running tasks get this long to finish before
# they are handed back to the queue.
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env.float("CELERY_SOFT_SHUTDOWN_SECONDS", default=10.0)
CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE = True

# ---------------------------------------------------------------------------
# Auth, sessions, security
# ---------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/dashboard/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# A 20 MB body is refused before it is parsed; CSV imports and POD photos stay well below.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int(
    "DATA_UPLOAD_MAX_MEMORY_SIZE", default=5 * 1024 * 1024
)
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE
DATA_UPLOAD_MAX_NUMBER_FIELDS = 2000
# Whole-body cap, checked before parsing (POD photos and CSV files included).
MAX_REQUEST_BODY_BYTES = env.int("MAX_REQUEST_BODY_BYTES", default=10 * 1024 * 1024)
# JSON bodies are smaller: a full 500-event driver batch is about 150 KB.
MAX_JSON_BODY_BYTES = env.int("MAX_JSON_BODY_BYTES", default=1024 * 1024)

# ---------------------------------------------------------------------------
# Static and media files
# ---------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / ".local" / "staticfiles"
WHITENOISE_AUTOREFRESH = DEBUG
WHITENOISE_USE_FINDERS = DEBUG  # the demo serves static files without collectstatic
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(BASE_DIR / ".local" / "media")))
MEDIA_URL = "/media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# ---------------------------------------------------------------------------
# REST framework and OpenAPI
# ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "shipments.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Deny by default: every view is dispatcher-only unless it says otherwise.
    "DEFAULT_PERMISSION_CLASSES": ["shipments.roles.IsDispatcher"],
    # JSON bodies (a form cannot carry nulls or nested objects); uploads
    # (proof of delivery, CSV import) say so on their own views.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    # Strict list parameters: a page, page size or filter value that does not
    # fit answers 400 instead of being ignored (shipments.filters).
    "DEFAULT_PAGINATION_CLASS": "shipments.filters.StrictPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["shipments.filters.StrictFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "shipments.schema.AllmileAutoSchema",
    "EXCEPTION_HANDLER": "shipments.api_errors.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Allmile API",
    "DESCRIPTION": "Delivery management across the first, middle and last mile and returns.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Times as HH:MM[:SS] patterns and NUL-free strings (shipments.schema).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "shipments.schema.postprocess_strings",
    ],
    # One name per shared vocabulary, so every status field reads the same in clients.
    "ENUM_NAME_OVERRIDES": {
        "ShipmentStatusEnum": "shipments.states.ShipmentStatus",
        "LegStatusEnum": "shipments.states.LegStatus",
        "MileEnum": "shipments.states.Mile",
        "TransportModeEnum": "shipments.states.TransportMode",
        "ServiceLevelEnum": "shipments.models.ServiceLevel",
        "SkillEnum": "shipments.models.SHIPMENT_SKILLS",
    },
}

# ---------------------------------------------------------------------------
# Allmile
# ---------------------------------------------------------------------------
ALLMILE_PUBLIC_BASE_URL = env.str(
    "ALLMILE_PUBLIC_BASE_URL", default="http://127.0.0.1:8000"
)
IDEMPOTENCY_KEY_TTL = timedelta(hours=env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=48))
TRACKING_LINK_EXPIRY_DAYS = env.int("TRACKING_LINK_EXPIRY_DAYS", default=14)
OSRM_BASE_URL = env.str("OSRM_BASE_URL", default="")
# Tracking page limits per client, and when a driver or a route counts as silent.
TRACKING_RATE_LIMIT_PER_MINUTE = env.int("TRACKING_RATE_LIMIT_PER_MINUTE", default=60)
TRACKING_MISS_LIMIT_PER_MINUTE = env.int("TRACKING_MISS_LIMIT_PER_MINUTE", default=30)
TRACKING_DRIVER_SILENT_MINUTES = env.int("TRACKING_DRIVER_SILENT_MINUTES", default=10)
TRACKING_ROUTE_QUIET_MINUTES = env.int("TRACKING_ROUTE_QUIET_MINUTES", default=2)
# Ping batches one phone may send a minute (an app sends one every 10-30 s;
# a queue flushed after a dead zone is a few dozen at most).
PING_BATCHES_PER_DEVICE_PER_MINUTE = env.int("PING_BATCHES_PER_DEVICE_PER_MINUTE", default=120)
MAP_TILE_URL = env.str("MAP_TILE_URL", default="")

# ---------------------------------------------------------------------------
# Customer communication (notifications app)
# ---------------------------------------------------------------------------
# E-mail: SMTP when EMAIL_HOST is set; the console otherwise (the demo prints mails).
EMAIL_HOST = env.str("EMAIL_HOST", default="")
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.filebased.EmailBackend"
)
# Without SMTP (the demo), each message is written as a file here to read.
EMAIL_FILE_PATH = env.str("EMAIL_FILE_PATH", default=str(BASE_DIR / ".local" / "sent-mail"))
EMAIL_PORT = env.int("EMAIL_PORT", default=587)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=bool(EMAIL_HOST))
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=15)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Allmile <no-reply@allmile.local>")
NOTIFICATIONS_FROM_EMAIL = env.str("NOTIFICATIONS_FROM_EMAIL", default="")
NOTIFICATIONS_SENDER_NAME = env.str("NOTIFICATIONS_SENDER_NAME", default="Allmile")
NOTIFICATIONS_RETRY_BACKOFF_SECONDS = env.int("NOTIFICATIONS_RETRY_BACKOFF_SECONDS", default=30)
# SMS through an HTTP provider shaped like the common SMS APIs (basic auth).
SMS_API_BASE_URL = env.str("SMS_API_BASE_URL", default="")
SMS_ACCOUNT_ID = env.str("SMS_ACCOUNT_ID", default="")
SMS_AUTH_TOKEN = env.str("SMS_AUTH_TOKEN", default="")
SMS_FROM = env.str("SMS_FROM", default="")
SMS_TIMEOUT_SECONDS = env.int("SMS_TIMEOUT_SECONDS", default=10)
CUSTOMER_ACTIONS_PER_LINK_PER_MINUTE = env.int("CUSTOMER_ACTIONS_PER_LINK_PER_MINUTE", default=10)
CUSTOMER_ACTIONS_PER_IP_PER_MINUTE = env.int("CUSTOMER_ACTIONS_PER_IP_PER_MINUTE", default=30)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "httpx": {"level": "WARNING"},
        # In-process tasks (the embedded default) would log every run.
        "celery": {"level": "WARNING" if EMBEDDED else "INFO"},
        "kombu": {"level": "ERROR" if EMBEDDED else "WARNING"},
    },
}
