from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from shipments.events import shipment_event_committed

        from .receivers import event_committed

        # Wiring, not control flow: the signal is a hint sent after commit; the
        # sweep re-examines recent events in case the process died before it.
        shipment_event_committed.connect(
            event_committed, dispatch_uid="notifications.events"
        )
