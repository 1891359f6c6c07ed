from django.apps import AppConfig


class ShipmentsConfig(AppConfig):
    name = "shipments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Every Celery task of the project gets the delivery cap (dead letters).
        from . import taskguard

        taskguard.install()
