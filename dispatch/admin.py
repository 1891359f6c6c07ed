from django.contrib import admin

from .models import DispatchConflict, Driver, LineHaulTrip, ProofOfDelivery, Vehicle


@admin.register(Vehicle)
class VehicleAdmin(admin.ModelAdmin):
    list_display = [
        "code",
        "type",
        "home_hub",
        "capacity_kg",
        "capacity_m3",
        "capacity_parcels",
        "is_active",
    ]
    list_filter = ["type", "home_hub", "is_active"]
    search_fields = ["code"]


@admin.register(Driver)
class DriverAdmin(admin.ModelAdmin):
    list_display = [
        "user",
        "phone",
        "home_hub",
        "default_vehicle",
        "shift_start",
        "shift_end",
        "duty_status",
    ]
    list_filter = ["duty_status", "home_hub", "is_active"]
    search_fields = ["user__username", "user__first_name", "user__last_name", "phone"]


@admin.register(DispatchConflict)
class DispatchConflictAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "route", "stop", "created_at", "resolved_at"]
    list_filter = ["kind"]
    readonly_fields = ["route", "stop", "kind", "detail", "payload", "created_at"]


@admin.register(LineHaulTrip)
class LineHaulTripAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "origin_hub",
        "destination_hub",
        "departs_at",
        "arrives_at",
        "route",
    ]
    list_filter = ["origin_hub", "destination_hub"]
    date_hierarchy = "departs_at"


@admin.register(ProofOfDelivery)
class ProofOfDeliveryAdmin(admin.ModelAdmin):
    """Read-only: evidence is never edited. Images are served by the API's
    authorised view, not linked from here."""

    list_display = [
        "id",
        "stop",
        "driver",
        "recipient_name",
        "captured_at",
        "created_at",
    ]
    readonly_fields = [
        "stop",
        "driver",
        "recipient_name",
        "note",
        "latitude",
        "longitude",
        "captured_at",
        "created_at",
    ]
    exclude = ["photo", "signature"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
