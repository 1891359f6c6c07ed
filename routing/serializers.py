"""Shapes of the optimization jobs API. Validation of shape only; the rules are
in routing.services."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from shipments.serializers import JsonSerializer
from shipments.states import Mile

from .models import OptimizationJob
from .problem_builder import DEFAULT_OBJECTIVE_WEIGHTS
from .services.jobs import MAX_VEHICLES_PER_JOB, OBJECTIVE_WEIGHT_MAX

# Ids are positive 64-bit integers; anything else is a 400, never a database error.
MAX_ID = 2**63 - 1
MAX_IDS_PER_LIST = 10_000


def _id_list(**kwargs) -> serializers.ListField:
    kwargs.setdefault("max_length", MAX_IDS_PER_LIST)
    return serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID), **kwargs
    )


class ObjectiveWeightsSerializer(JsonSerializer):
    """How much each cost counts (0 to 1,000 each; 1 when left out). A name
    that is not one of them is refused, not ignored."""

    def get_fields(self):
        return {
            name: serializers.FloatField(
                min_value=0, max_value=OBJECTIVE_WEIGHT_MAX, required=False
            )
            for name in DEFAULT_OBJECTIVE_WEIGHTS
        }

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(map(str, data)) - set(DEFAULT_OBJECTIVE_WEIGHTS))
            if unknown:
                raise serializers.ValidationError(
                    f"Unknown objective weights: {', '.join(unknown)}; known: "
                    f"{', '.join(DEFAULT_OBJECTIVE_WEIGHTS)}."
                )
        return super().to_internal_value(data)

    def openapi_schema(self, auto_schema) -> dict:
        weight = {"type": "number", "minimum": 0, "maximum": OBJECTIVE_WEIGHT_MAX}
        return {
            "type": "object",
            "properties": dict.fromkeys(DEFAULT_OBJECTIVE_WEIGHTS, weight),
            "additionalProperties": False,
        }


class OptimizationJobInputSerializer(JsonSerializer):
    service_date = serializers.DateField()
    hub = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    mile = serializers.ChoiceField(choices=Mile.choices)
    vehicles = _id_list(min_length=1, max_length=MAX_VEHICLES_PER_JOB)
    legs = _id_list(required=False)
    shipments = _id_list(required=False)
    time_limit_seconds = serializers.IntegerField(
        required=False,
        default=10,
        min_value=1,
        max_value=settings.ROUTING_MAX_TIME_LIMIT_SECONDS,
    )
    objective_weights = ObjectiveWeightsSerializer(required=False)
    keep_best_on_cancel = serializers.BooleanField(required=False, default=True)


class OptimizationJobCancelInputSerializer(JsonSerializer):
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
