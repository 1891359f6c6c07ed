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

# R8: the scenario's layer capacity (100), so a client that stops reading goes
# over it within its 20 s and group_send drops its messages, as it would in
# production under a larger fan-out.
if os.environ.get("RELIABILITY_LAYER_CAPACITY"):
    CHANNEL_LAYERS["default"]["CONFIG"]["capacity"] = int(  # noqa: F405
        os.environ["RELIABILITY_LAYER_CAPACITY"]
    )
