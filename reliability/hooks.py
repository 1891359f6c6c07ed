"""Fault hooks for the [FAULT] tier, switched on per process by environment variables.

Installed by ``ReliabilityConfig.ready`` (``config.settings.reliability`` only).
"""


def install() -> None:
    """Connect the hooks whose environment variables are set."""
