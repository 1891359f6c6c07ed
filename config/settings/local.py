"""Settings for ``manage.py`` in a checkout: development defaults (DEBUG on, so
SQLite and a generated secret) unless the environment says otherwise.

Served processes (ASGI, WSGI, Celery) load ``config.settings.base`` and refuse to
start without a real ``SECRET_KEY`` when DEBUG is off; ``manage.py`` run in a
production container gets ``DJANGO_SETTINGS_MODULE=config.settings.base`` from
its image.
"""

import os

os.environ.setdefault("DEBUG", "true")

from .base import *  # noqa: E402,F403
