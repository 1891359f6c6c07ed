"""Settings of the processes ``make reliability`` starts (reliability/stack.py).

The test settings (production behaviour, fast password hasher) plus the
``reliability`` app: a probe task, an inbox table and fault hooks that are
switched on per process by environment variables. Never used in production.
"""

from .test import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "reliability"]  # noqa: F405
