from django.apps import AppConfig


class DemoConfig(AppConfig):
    """Demo data and the demo runner; sits above every other app."""

    name = "demo"
