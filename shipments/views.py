"""Shipments API: thin views that validate, call one service and serialize."""

from __future__ import annotations

import django_filters
from django.db.models import Q
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from .idempotency import KEY_SCHEMA, idempotent
from .importing import csv_rows_parse, shipments_import
from .models import Hub, Leg, Party, Shipment
from .selectors import shipment_list_for_dispatch
from .serializers import (
    HubSerializer,
    LegSerializer,
    LegTransitionInputSerializer,
    PartySerializer,
    ShipmentCancelInputSerializer,
    ShipmentCreatedSerializer,
    ShipmentEventSerializer,
    ShipmentInputSerializer,
    ShipmentReplanInputSerializer,
    ShipmentSerializer,
    TrackingLinkSerializer,
)
from .services import (
    leg_transition,
    shipment_cancel,
    shipment_create_from_input,
    shipment_replan,
    tracking_link_reissue,
)
from .states import LegStatus, Mile, ShipmentStatus
from .tracking_tokens import tracking_url

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    KEY_SCHEMA,
    OpenApiParameter.HEADER,
    description="A retried request with the same key returns the first answer and creates nothing twice.",
)


class HubViewSet(viewsets.ModelViewSet):
    queryset = Hub.objects.select_related("location")
    serializer_class = HubSerializer
    lookup_value_regex = r"\d+"
    filterset_fields = ["kind", "is_active"]


class PartyViewSet(viewsets.ModelViewSet):
    queryset = Party.objects.all()
    serializer_class = PartySerializer
    lookup_value_regex = r"\d+"
    filterset_fields = ["kind"]


class ShipmentFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=ShipmentStatus.choices)
    mile = django_filters.ChoiceFilter(field_name="current_mile", choices=Mile.choices)
    service_level = django_filters.CharFilter()
    at_risk = django_filters.BooleanFilter(field_name="is_at_risk")
    is_return = django_filters.BooleanFilter()
    hub = django_filters.CharFilter(method="filter_hub", label="Hub code (either end)")
    date = django_filters.DateFilter(
        method="filter_date", label="Promised on this date"
    )
    created_after = django_filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="gte"
    )
    created_before = django_filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="lt"
    )
    q = django_filters.CharFilter(
        method="filter_search", label="Reference or parcel barcode"
    )

    class Meta:
        model = Shipment
        fields = [
            "status",
            "mile",
            "service_level",
            "at_risk",
            "is_return",
            "hub",
            "date",
            "q",
        ]

    def filter_hub(self, queryset, name, value):
        return queryset.filter(
            Q(origin_hub__code=value) | Q(destination_hub__code=value)
        )

    def filter_date(self, queryset, name, value):
        return queryset.filter(promised_by__date=value)

    def filter_search(self, queryset, name, value):
        matching = Q(reference__icontains=value) | Q(parcels__barcode=value)
        return queryset.filter(matching).distinct()


class ShipmentViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Shipments across all miles. ``POST`` creates one and plans its legs."""

    serializer_class = ShipmentSerializer
    filterset_class = ShipmentFilter
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return shipment_list_for_dispatch()

    @extend_schema(
        request=ShipmentInputSerializer,
        responses={201: ShipmentCreatedSerializer},
        parameters=[IDEMPOTENCY_HEADER],
    )
    @idempotent
    def create(self, request):
        payload = ShipmentInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        created = shipment_create_from_input(
            data=payload.validated_data, actor=request.user, source="api"
        )
        shipment = shipment_list_for_dispatch().get(pk=created.shipment.pk)
        body = ShipmentCreatedSerializer(
            shipment, context={"tracking_token": created.tracking_token}
        ).data
        return Response(body, status=status.HTTP_201_CREATED)


class ShipmentEventsApi(APIView):
    """The shipment's timeline: its events, oldest first."""

    @extend_schema(
        responses=ShipmentEventSerializer(many=True),
        parameters=[
            OpenApiParameter("after_id", int, description="Only events after this id")
        ],
    )
    def get(self, request, shipment_id: int):
        shipment = get_object_or_404(Shipment, pk=shipment_id)
        events = shipment.events.select_related("actor").order_by("id")
        after = request.query_params.get("after_id")
        if after is not None:
            if not after.isdigit():
                raise serializers.ValidationError(
                    {"after_id": ["Expected an integer."]}
                )
            events = events.filter(id__gt=int(after))
        return Response(ShipmentEventSerializer(events[:1000], many=True).data)


class ShipmentCancelApi(APIView):
    @extend_schema(
        request=ShipmentCancelInputSerializer,
        responses=ShipmentSerializer,
        parameters=[IDEMPOTENCY_HEADER],
    )
    @idempotent
    def post(self, request, shipment_id: int):
        payload = ShipmentCancelInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        get_object_or_404(Shipment, pk=shipment_id)
        shipment_cancel(
            shipment_id=shipment_id, actor=request.user, **payload.validated_data
        )
        shipment = shipment_list_for_dispatch().get(pk=shipment_id)
        return Response(ShipmentSerializer(shipment).data)


class ShipmentReplanApi(APIView):
    @extend_schema(
        request=ShipmentReplanInputSerializer,
        responses=ShipmentSerializer,
        parameters=[IDEMPOTENCY_HEADER],
    )
    @idempotent
    def post(self, request, shipment_id: int):
        payload = ShipmentReplanInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        get_object_or_404(Shipment, pk=shipment_id)
        shipment_replan(
            shipment_id=shipment_id, actor=request.user, **payload.validated_data
        )
        shipment = shipment_list_for_dispatch().get(pk=shipment_id)
        return Response(ShipmentSerializer(shipment).data)


class ShipmentTrackingLinkApi(APIView):
    """Issue a new tracking link; the old one stops working."""

    @extend_schema(
        request=None, responses=TrackingLinkSerializer, parameters=[IDEMPOTENCY_HEADER]
    )
    @idempotent
    def post(self, request, shipment_id: int):
        get_object_or_404(Shipment, pk=shipment_id)
        token = tracking_link_reissue(shipment_id=shipment_id, actor=request.user)
        return Response({"tracking_url": tracking_url(token)})


IMPORT_RESULT = inline_serializer(
    "ShipmentImportResult",
    {
        "created": serializers.IntegerField(),
        "shipments": ShipmentCreatedSerializer(many=True),
    },
)


def _import_response(result):
    if result.errors:
        return Response(
            {
                "code": "import_invalid",
                "detail": "Nothing was imported.",
                "errors": result.errors,
            },
            status=status.HTTP_400_BAD_REQUEST,
        )
    shipments = {
        s.pk: s
        for s in shipment_list_for_dispatch().filter(
            pk__in=[c.shipment.pk for c in result.created]
        )
    }
    body = [
        ShipmentCreatedSerializer(
            shipments[c.shipment.pk], context={"tracking_token": c.tracking_token}
        ).data
        for c in result.created
    ]
    return Response(
        {"created": len(body), "shipments": body}, status=status.HTTP_201_CREATED
    )


class ShipmentImportApi(APIView):
    """CSV upload (multipart field ``file``): every row valid, or nothing imported."""

    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        request={
            "multipart/form-data": inline_serializer(
                "ShipmentImportUpload", {"file": serializers.FileField()}
            )
        },
        responses={201: IMPORT_RESULT},
        parameters=[IDEMPOTENCY_HEADER],
    )
    @idempotent
    def post(self, request):
        upload = request.FILES.get("file")
        if upload is None:
            raise serializers.ValidationError(
                {"file": ["Upload a CSV file in the field 'file'."]}
            )
        rows = csv_rows_parse(upload.read())
        result = shipments_import(rows=rows, actor=request.user, source="api")
        return _import_response(result)


class ShipmentBulkCreateApi(APIView):
    """JSON list of shipments: every item valid, or nothing created."""

    parser_classes = [JSONParser]

    @extend_schema(
        request=ShipmentInputSerializer(many=True),
        responses={201: IMPORT_RESULT},
        parameters=[IDEMPOTENCY_HEADER],
    )
    @idempotent
    def post(self, request):
        if not isinstance(request.data, list) or not request.data:
            raise serializers.ValidationError(
                {"non_field_errors": ["Expected a non-empty list."]}
            )
        result = shipments_import(rows=request.data, actor=request.user, source="api")
        return _import_response(result)


class LegFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=LegStatus.choices)
    mile = django_filters.ChoiceFilter(choices=Mile.choices)
    hub = django_filters.CharFilter(method="filter_hub")

    class Meta:
        model = Leg
        fields = ["status", "mile", "shipment", "hub"]

    def filter_hub(self, queryset, name, value):
        return queryset.filter(Q(from_hub__code=value) | Q(to_hub__code=value))


class LegViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    queryset = Leg.objects.select_related(
        "from_hub", "to_hub", "from_location", "to_location"
    )
    serializer_class = LegSerializer
    filterset_class = LegFilter
    lookup_value_regex = r"\d+"


class LegTransitionApi(APIView):
    """Move a leg through its state machine; 409 names the current and allowed states."""

    @extend_schema(
        request=LegTransitionInputSerializer,
        responses=LegSerializer,
        parameters=[IDEMPOTENCY_HEADER],
    )
    @idempotent
    def post(self, request, leg_id: int):
        payload = LegTransitionInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        get_object_or_404(Leg, pk=leg_id)
        leg = leg_transition(
            leg_id=leg_id,
            to=payload.validated_data["to"],
            reason=payload.validated_data["reason"],
            actor=request.user,
            source="dashboard" if request.auth is None else "api",
        )
        return Response(LegSerializer(leg).data)
