from django.contrib import admin

from .models import OptimizationJob, Route, RouteStop


@admin.register(OptimizationJob)
class OptimizationJobAdmin(admin.ModelAdmin):
    list_display = ["id", "service_date", "hub", "mile", "status", "progress", "best_cost", "created_at"]
    list_filter = ["status", "mile", "hub"]
    date_hierarchy = "service_date"


class RouteStopInline(admin.TabularInline):
    model = RouteStop
    extra = 0
    fields = ["sequence", "kind", "status", "window_start", "window_end", "planned_arrival", "eta"]
    readonly_fields = fields


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    list_display = ["id", "service_date", "hub", "mile", "vehicle", "driver", "status", "distance_meters"]
    list_filter = ["status", "mile", "hub", "service_date"]
    search_fields = ["vehicle__code", "driver__user__username"]
    inlines = [RouteStopInline]
