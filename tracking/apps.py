from django.apps import AppConfig


class TrackingConfig(AppConfig):
    name = "tracking"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from shipments.models import OutboxMessage

        from .kick import outbox_written, route_activity_received

        # Wiring, not control flow: an outbox write only asks for a relay pass
        # after its transaction commits; beat relays anyway every two seconds.
        post_save.connect(outbox_written, sender=OutboxMessage, dispatch_uid="tracking.outbox")
        try:
            from dispatch import signals as dispatch_signals
        except ImportError:  # dispatch without its signals module yet
            return
        route_activity = getattr(dispatch_signals, "route_activity", None)
        if route_activity is not None:
            route_activity.connect(route_activity_received, dispatch_uid="tracking.eta")
