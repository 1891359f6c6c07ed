from django.contrib import admin

from .models import Driver, Vehicle


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
