from django.contrib import admin

from .models import (
    DeadLetter,
    Hub,
    IdempotencyRecord,
    Leg,
    Location,
    OutboxMessage,
    Parcel,
    Party,
    Shipment,
    ShipmentEvent,
)
from .taskguard import dead_letter_requeue


@admin.register(Location)
class LocationAdmin(admin.ModelAdmin):
    list_display = ["id", "address", "latitude", "longitude"]
    search_fields = ["address", "contact_name"]


@admin.register(Hub)
class HubAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "kind", "service_radius_km", "is_active"]
    list_filter = ["kind", "is_active"]
    search_fields = ["code", "name"]


@admin.register(Party)
class PartyAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "email", "language"]
    list_filter = ["kind", "language"]
    search_fields = ["name", "email"]


class ParcelInline(admin.TabularInline):
    model = Parcel
    extra = 0


class LegInline(admin.TabularInline):
    model = Leg
    extra = 0
    fields = ["sequence", "mile", "mode", "status", "from_hub", "to_hub", "eta"]
    readonly_fields = fields
    can_delete = False


@admin.register(Shipment)
class ShipmentAdmin(admin.ModelAdmin):
    list_display = [
        "reference",
        "shipper",
        "service_level",
        "status",
        "current_mile",
        "is_at_risk",
        "promised_by",
        "created_at",
    ]
    list_filter = ["status", "current_mile", "service_level", "is_at_risk", "is_return"]
    search_fields = ["reference", "parcels__barcode", "consignee__name"]
    readonly_fields = ["status", "current_mile", "tracking_token_hash", "tracking_salt"]
    raw_id_fields = [
        "origin",
        "destination",
        "original_shipment",
        "shipper",
        "consignee",
    ]
    inlines = [ParcelInline, LegInline]
    date_hierarchy = "created_at"


@admin.register(Leg)
class LegAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "shipment",
        "sequence",
        "mile",
        "mode",
        "status",
        "from_hub",
        "to_hub",
        "eta",
    ]
    list_filter = ["mile", "mode", "status"]
    search_fields = ["shipment__reference"]
    raw_id_fields = ["shipment", "from_location", "to_location", "depends_on"]


@admin.register(ShipmentEvent)
class ShipmentEventAdmin(admin.ModelAdmin):
    list_display = ["id", "shipment", "type", "source", "actor", "recorded_at"]
    list_filter = ["type", "source"]
    search_fields = ["shipment__reference", "idempotency_key"]

    # The log is append-only: readable here, never editable.
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = ["id", "type", "stream_seq", "created_at", "published_at"]
    list_filter = ["type"]


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    list_display = ["principal", "key", "method", "path", "status_code", "created_at"]
    search_fields = ["key", "principal"]


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    """Tasks that went over the delivery cap (shipments.taskguard)."""

    list_display = [
        "task_name",
        "task_id",
        "deliveries",
        "first_seen_at",
        "last_seen_at",
        "requeued_at",
        "requeue_count",
    ]
    list_filter = ["task_name"]
    search_fields = ["task_id", "task_name"]
    readonly_fields = [f.name for f in DeadLetter._meta.fields]
    actions = ["requeue"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(
        description="Re-queue the selected tasks (with a fresh delivery count)"
    )
    def requeue(self, request, queryset) -> None:
        for letter in queryset:
            dead_letter_requeue(dead_letter_id=letter.pk)
        self.message_user(request, f"{queryset.count()} task(s) re-queued.")
