from django.apps import AppConfig


class ReliabilityConfig(AppConfig):
    """Installed only by ``config.settings.reliability`` (the [FAULT]/[LOAD] tiers):
    a probe task, the inbox that counts applications of relayed messages, and
    fault hooks switched on per process by environment variables."""

    name = "reliability"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import hooks

        hooks.install()
