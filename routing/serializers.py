"""Shapes of the optimization jobs API. Validation of shape only; the rules are
in routing.services."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from shipments.states import Mile

from .models import OptimizationJob

# Ids are positive 64-bit integers; anything else is a 400, never a database error.
MAX_ID = 2**63 - 1
MAX_IDS_PER_LIST = 10_000


def _id_list(**kwargs) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID),
        max_length=MAX_IDS_PER_LIST,
        **kwargs,
    )


class OptimizationJobInputSerializer(serializers.Serializer):
    service_date = serializers.DateField()
    hub = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    mile = serializers.ChoiceField(choices=Mile.choices)
    vehicles = _id_list(allow_empty=False)
    legs = _id_list(required=False)
    shipments = _id_list(required=False)
    time_limit_seconds = serializers.IntegerField(required=False, default=10)
    objective_weights = serializers.DictField(
        child=serializers.FloatField(), required=False, allow_empty=True
    )
    keep_best_on_cancel = serializers.BooleanField(required=False, default=True)


class OptimizationJobCancelInputSerializer(serializers.Serializer):
    keep_best = serializers.BooleanField(required=False, default=True)


class UnassignedLegSerializer(serializers.Serializer):
    leg_id = serializers.IntegerField()
    shipment_id = serializers.IntegerField()
    reason = serializers.CharField()


class OptimizationResultSerializer(serializers.Serializer):
    """The plan's summary; the routes themselves are read at /api/v1/routes/."""

    route_ids = serializers.ListField(child=serializers.IntegerField())
    route_count = serializers.IntegerField()
    stop_count = serializers.IntegerField()
    distance_meters = serializers.IntegerField()
    duration_seconds = serializers.IntegerField()
    cost = serializers.FloatField()
    unassigned_count = serializers.IntegerField()
    unassigned = UnassignedLegSerializer(many=True)


class OptimizationJobSerializer(serializers.ModelSerializer):
    hub_code = serializers.CharField(source="hub.code", read_only=True)
    vehicles = serializers.SerializerMethodField()
    selected_leg_count = serializers.IntegerField(read_only=True, default=None)
    created_by = serializers.CharField(
        source="created_by.username", read_only=True, default=None
    )
    result = serializers.SerializerMethodField()

    class Meta:
        model = OptimizationJob
        fields = [
            "id",
            "status",
            "service_date",
            "hub",
            "hub_code",
            "mile",
            "vehicles",
            "selected_leg_count",
            "time_limit_seconds",
            "objective_weights",
            "progress",
            "best_cost",
            "engine",
            "attempts",
            "cancel_requested",
            "keep_best_on_cancel",
            "error",
            "result",
            "statistics",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_vehicles(self, job: OptimizationJob) -> list[int]:
        # Prefetched by the selector: no query per job.
        return [vehicle.pk for vehicle in job.vehicles.all()]

    @extend_schema_field(OptimizationResultSerializer(allow_null=True))
    def get_result(self, job: OptimizationJob) -> dict | None:
        statistics = job.statistics or {}
        if "route_ids" not in statistics:
            return None
        return OptimizationResultSerializer(
            {
                "route_ids": statistics["route_ids"],
                "route_count": len(statistics["route_ids"]),
                "stop_count": statistics.get("stops", 0),
                "distance_meters": statistics.get("distance_meters", 0),
                "duration_seconds": statistics.get("duration_seconds", 0),
                "cost": statistics.get("cost", 0.0),
                "unassigned_count": statistics.get("unassigned_count", 0),
                "unassigned": statistics.get("unassigned", []),
            }
        ).data
