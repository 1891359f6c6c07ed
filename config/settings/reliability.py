"""Settings of the processes ``make reliability`` starts (reliability/stack.py).

The test settings (production behaviour, fast password hasher) plus the
``reliability`` app: a probe task, an inbox table and fault hooks that are
switched on per process by environment variables. Never used in production.
"""

import os

from .test import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "reliability"]  # noqa: F405

# R3: ``X-Reliability-Fault`` asks reliability.hooks for a fault inside the
# request's transaction (inert unless the process runs with RELIABILITY_FAULT_HOOKS=1).
MIDDLEWARE = ["reliability.middleware.FaultRequestMiddleware", *MIDDLEWARE]  # noqa: F405

# R3 (c): a relay process that SIGKILLs itself after publishing, on cue.
if os.environ.get("RELIABILITY_KILL_AFTER_PUBLISH"):
    CHANNEL_LAYERS["default"]["BACKEND"] = "reliability.layers.KillAfterPublishLayer"  # noqa: F405
