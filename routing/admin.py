from django.contrib import admin

from .models import OptimizationAttempt, OptimizationJob, Route, RouteStop


class OptimizationAttemptInline(admin.TabularInline):
    """Who ran the job, when, and how each attempt ended (lost: its worker died)."""

    model = OptimizationAttempt
    extra = 0
    can_delete = False
    fields = ["number", "worker", "started_at", "last_seen_at", "ended_at", "outcome"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(OptimizationJob)
class OptimizationJobAdmin(admin.ModelAdmin):
    """Read-only: jobs change only through routing.services (claim, run, cancel)."""

    list_display = [
        "id",
        "service_date",
        "hub",
        "mile",
        "status",
        "progress",
        "best_cost",
        "attempts",
        "engine",
        "created_by",
        "created_at",
    ]
    list_filter = ["status", "mile", "hub"]
    date_hierarchy = "service_date"
    list_select_related = ["hub", "created_by"]
    raw_id_fields = ["vehicles", "legs"]
    readonly_fields = [
        "status",
        "progress",
        "best_cost",
        "statistics",
        "error",
        "attempts",
        "engine",
        "run_token",
        "heartbeat_at",
        "queued_at",
        "started_at",
        "finished_at",
        "cancel_requested",
        "created_by",
    ]

    inlines = [OptimizationAttemptInline]

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class RouteStopInline(admin.TabularInline):
    model = RouteStop
    extra = 0
    fields = [
        "sequence",
        "kind",
        "status",
        "window_start",
        "window_end",
        "planned_arrival",
        "eta",
    ]
    readonly_fields = fields


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "service_date",
        "hub",
        "mile",
        "vehicle",
        "driver",
        "status",
        "distance_meters",
        "job",
    ]
    list_filter = ["status", "mile", "hub", "service_date"]
    list_select_related = ["hub", "vehicle", "driver__user"]
    search_fields = ["vehicle__code", "driver__user__username"]
    raw_id_fields = ["job"]
    inlines = [RouteStopInline]
