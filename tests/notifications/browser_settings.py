"""Settings for the ASGI server the browser test starts: the test settings,
relaying the outbox inside the web process (no worker needed for live
messages) and serving static files from the source tree."""

from config.settings.test import *  # noqa: F403

TRACKING_RELAY_INLINE = True
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
