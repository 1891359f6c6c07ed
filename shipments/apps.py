from django.apps import AppConfig


class ShipmentsConfig(AppConfig):
    name = "shipments"
    default_auto_field = "django.db.models.BigAutoField"
