"""Dispatch API for dispatchers: fleet resources, and one small view per route
operation (each validates, calls one service and answers the new state)."""

from __future__ import annotations

import django_filters
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import ErrorDetail
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from routing.models import Route, RouteStop
from shipments.filters import AllmileFilterSet, IdFilter, StrictBooleanFilter
from shipments.idempotency import idempotent
from shipments.models import Shipment
from shipments.states import Mile
from shipments.views import IDEMPOTENCY_HEADER

from .insertion import shipment_insert_same_day
from .linehaul import trips_plan_day
from .models import (
    DispatchConflict,
    Driver,
    LineHaulTrip,
    LocationPing,
    RouteEvent,
    Vehicle,
)
from .selectors import route_detail_queryset, route_list_for_dispatch, stops_with_work
from .serializers import (
    DispatchConflictSerializer,
    DriverInputSerializer,
    DriverSerializer,
    DriverUpdateSerializer,
    InsertionInputSerializer,
    InsertionResultSerializer,
    LocationPingSerializer,
    RouteAssignInputSerializer,
    RouteEventSerializer,
    RouteSerializer,
    RoutesPublishInputSerializer,
    RoutesPublishResultSerializer,
    RouteStopSerializer,
    RouteSummarySerializer,
    StopReassignInputSerializer,
    TripSerializer,
    TripsPlanInputSerializer,
    TripsPlanResultSerializer,
    VehicleSerializer,
)
from .services import (
    dispatch_conflict_resolve,
    driver_create,
    route_assign,
    route_publish,
    route_unassign,
    routes_publish_day,
    stop_reassign,
)


class VehicleViewSet(viewsets.ModelViewSet):
    queryset = Vehicle.objects.select_related("home_hub")
    serializer_class = VehicleSerializer
    lookup_value_regex = r"\d+"
    filterset_fields = ["type", "is_active", "home_hub__code"]

    @idempotent
    def create(self, request, *args, **kwargs):
        return super().create(request, *args, **kwargs)


class DriverViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    queryset = Driver.objects.select_related("user", "home_hub", "default_vehicle")
    serializer_class = DriverSerializer
    lookup_value_regex = r"\d+"
    filterset_fields = ["duty_status", "is_active", "home_hub__code"]

    def get_serializer_class(self):
        if self.action in ("update", "partial_update"):
            return DriverUpdateSerializer
        return DriverSerializer

    @extend_schema(request=DriverInputSerializer, responses={201: DriverSerializer})
    @idempotent
    def create(self, request):
        payload = DriverInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        driver = driver_create(**payload.validated_data)
        return Response(DriverSerializer(driver).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        super().update(request, *args, **kwargs)
        return Response(DriverSerializer(self.get_object()).data)


# ---------------------------------------------------------------------------
# Routes for dispatchers: list, detail, assign, unassign, publish, move a stop
# ---------------------------------------------------------------------------


class RouteFilter(AllmileFilterSet):
    date = django_filters.DateFilter(field_name="service_date")
    hub = django_filters.CharFilter(field_name="hub__code")
    mile = django_filters.ChoiceFilter(choices=Mile.choices)
    status = django_filters.MultipleChoiceFilter(choices=Route.Status.choices)
    driver = IdFilter(field_name="driver_id")
    vehicle = IdFilter(field_name="vehicle_id")
    is_trip = StrictBooleanFilter(field_name="trip", lookup_expr="isnull", exclude=True)

    class Meta:
        model = Route
        fields = ["date", "hub", "mile", "status", "driver", "vehicle", "is_trip"]


class RouteListApi(ListAPIView):
    """Routes of any day, hub, mile or status; ``stop_count`` instead of stops."""

    serializer_class = RouteSummarySerializer
    filterset_class = RouteFilter

    def get_queryset(self):
        return route_list_for_dispatch().annotate(stop_count=Count("stops"))


class RouteDetailApi(APIView):
    @extend_schema(responses=RouteSerializer)
    def get(self, request, route_id: int):
        route = get_object_or_404(route_detail_queryset(), pk=route_id)
        return Response(RouteSerializer(route).data)


def _route_answer(route_id: int) -> Response:
    return Response(RouteSerializer(route_detail_queryset().get(pk=route_id)).data)


class RouteAssignApi(APIView):
    """Give the route to a driver and a vehicle. 409 says why they cannot take it
    (capacity, skills, shift, already booked), per field."""

    @extend_schema(
        request=RouteAssignInputSerializer,
        responses=RouteSerializer,
        parameters=[IDEMPOTENCY_HEADER],
    )
    @idempotent
    def post(self, request, route_id: int):
        payload = RouteAssignInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        get_object_or_404(Route, pk=route_id)
        errors = {}
        if not Driver.objects.filter(pk=payload.validated_data["driver_id"]).exists():
            errors["driver_id"] = [
                ErrorDetail("No such driver.", code="does_not_exist")
            ]
        if not Vehicle.objects.filter(pk=payload.validated_data["vehicle_id"]).exists():
            errors["vehicle_id"] = [
                ErrorDetail("No such vehicle.", code="does_not_exist")
            ]
        if errors:
            raise serializers.ValidationError(errors)
        route_assign(route_id=route_id, actor=request.user, **payload.validated_data)
        return _route_answer(route_id)


class RouteUnassignApi(APIView):
    @extend_schema(
        request=None, responses=RouteSerializer, parameters=[IDEMPOTENCY_HEADER]
    )
    @idempotent
    def post(self, request, route_id: int):
        get_object_or_404(Route, pk=route_id)
        route_unassign(route_id=route_id, actor=request.user)
        return _route_answer(route_id)


class RoutePublishApi(APIView):
    @extend_schema(
        operation_id="route_publish",
        request=None,
        responses=RouteSerializer,
        parameters=[IDEMPOTENCY_HEADER],
    )
    @idempotent
    def post(self, request, route_id: int):
        get_object_or_404(Route, pk=route_id)
        route_publish(route_id=route_id, actor=request.user)
        return _route_answer(route_id)


class RoutesPublishDayApi(APIView):
    """Publish every assigned draft of a day (optionally one hub's)."""

    @extend_schema(
        operation_id="routes_publish_day",
        request=RoutesPublishInputSerializer,
        responses=RoutesPublishResultSerializer,
        parameters=[IDEMPOTENCY_HEADER],
    )
    @idempotent
    def post(self, request):
        payload = RoutesPublishInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        hub = payload.validated_data.get("hub")
        result = routes_publish_day(
            service_date=payload.validated_data["date"],
            hub_id=hub.pk if hub else None,
            actor=request.user,
        )
        return Response(
            {
                "published": result.published,
                "failed": result.failed,
                "unassigned": result.unassigned,
            }
        )


class StopReassignApi(APIView):
    """Move a pending stop to another route of the same day."""

    @extend_schema(
        request=StopReassignInputSerializer,
        responses={201: RouteStopSerializer},
        parameters=[IDEMPOTENCY_HEADER],
    )
    @idempotent
    def post(self, request, stop_id: int):
        payload = StopReassignInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        get_object_or_404(RouteStop, pk=stop_id)
        moved = stop_reassign(
            stop_id=stop_id, actor=request.user, **payload.validated_data
        )
        return Response(
            RouteStopSerializer(stops_with_work().get(pk=moved.pk)).data, status=201
        )


class RouteEventsApi(APIView):
    """The route log, oldest first."""

    @extend_schema(responses=RouteEventSerializer(many=True))
    def get(self, request, route_id: int):
        route = get_object_or_404(Route, pk=route_id)
        events = (
            RouteEvent.objects.filter(route=route)
            .select_related("actor")
            .order_by("id")
        )
        return Response(RouteEventSerializer(events[:1000], many=True).data)


class RouteTraceApi(APIView):
    """The route's GPS trace, by fix time (at most 5,000 fixes, the latest)."""

    @extend_schema(responses=LocationPingSerializer(many=True))
    def get(self, request, route_id: int):
        route = get_object_or_404(Route, pk=route_id)
        pings = LocationPing.objects.filter(route=route).order_by("-recorded_at")[:5000]
        return Response(LocationPingSerializer(reversed(list(pings)), many=True).data)


class DispatchConflictFilter(AllmileFilterSet):
    open = StrictBooleanFilter(
        field_name="resolved_at",
        lookup_expr="isnull",
        label="true: only the unresolved; false: only the resolved",
    )

    class Meta:
        model = DispatchConflict
        fields = ["open"]


class DispatchConflictListApi(ListAPIView):
    """Field facts that overrode a plan, newest first (``?open=true`` for unresolved)."""

    serializer_class = DispatchConflictSerializer
    filterset_class = DispatchConflictFilter

    def get_queryset(self):
        return DispatchConflict.objects.order_by("-id")


# ---------------------------------------------------------------------------
# Line-haul trips (a trip is a route: assign and publish it under /routes/)
# ---------------------------------------------------------------------------


class TripFilter(AllmileFilterSet):
    date = django_filters.DateFilter(field_name="route__service_date")
    origin = django_filters.CharFilter(field_name="origin_hub__code")
    destination = django_filters.CharFilter(field_name="destination_hub__code")
    status = django_filters.MultipleChoiceFilter(
        field_name="route__status", choices=Route.Status.choices
    )

    class Meta:
        model = LineHaulTrip
        fields = ["date", "origin", "destination", "status"]


def _trips():
    return LineHaulTrip.objects.select_related(
        "route__driver__user", "route__vehicle", "origin_hub", "destination_hub"
    ).annotate(
        leg_count=Count("route__stops__legs", filter=Q(route__stops__sequence=1))
    )


class TripListApi(ListAPIView):
    """The timetable's trips with how many legs each carries."""

    serializer_class = TripSerializer
    filterset_class = TripFilter

    def get_queryset(self):
        return _trips().order_by("departs_at", "id")


class TripDetailApi(APIView):
    @extend_schema(responses=TripSerializer)
    def get(self, request, trip_id: int):
        return Response(TripSerializer(get_object_or_404(_trips(), pk=trip_id)).data)


class TripsPlanApi(APIView):
    """Consolidate the waiting middle-mile legs onto the day's trips (by the
    origin hub's cut-offs and the trip's capacity)."""

    @extend_schema(
        request=TripsPlanInputSerializer,
        responses=TripsPlanResultSerializer,
        parameters=[IDEMPOTENCY_HEADER],
    )
    @idempotent
    def post(self, request):
        payload = TripsPlanInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        result = trips_plan_day(
            service_date=payload.validated_data["date"], actor=request.user
        )
        return Response(
            {
                "trips": result.trips,
                "consolidated": {str(k): v for k, v in result.consolidated.items()},
                "waiting": result.waiting,
            }
        )


class SameDayInsertionApi(APIView):
    """Insert an urgent shipment's pickup into its hub's routes under way today:
    done stops and the drivers' positions stay, the optimizer re-plans the rest
    within the time budget, the cheapest feasible insertion is the fallback."""

    @extend_schema(
        request=InsertionInputSerializer,
        responses={201: InsertionResultSerializer},
        parameters=[IDEMPOTENCY_HEADER],
    )
    @idempotent
    def post(self, request):
        payload = InsertionInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        if not Shipment.objects.filter(
            pk=payload.validated_data["shipment_id"]
        ).exists():
            raise serializers.ValidationError(
                {
                    "shipment_id": [
                        ErrorDetail("No such shipment.", code="does_not_exist")
                    ]
                }
            )
        result = shipment_insert_same_day(actor=request.user, **payload.validated_data)
        return Response(InsertionResultSerializer(result).data, status=201)


class DispatchConflictResolveApi(APIView):
    """Mark a conflict as seen and dealt with (idempotent)."""

    @extend_schema(
        request=None,
        responses=DispatchConflictSerializer,
        parameters=[IDEMPOTENCY_HEADER],
    )
    @idempotent
    def post(self, request, conflict_id: int):
        get_object_or_404(DispatchConflict, pk=conflict_id)
        conflict = dispatch_conflict_resolve(
            conflict_id=conflict_id, actor=request.user
        )
        return Response(DispatchConflictSerializer(conflict).data)
