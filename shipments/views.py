"""Shipments API: thin views that validate, call one service and serialize."""

from __future__ import annotations

import math

import django_filters
from django.db.models import Q
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from .api_errors import validation_status
from .filters import AllmileFilterSet, DateTimeFilter, IdFilter, StrictBooleanFilter
from .idempotency import idempotent
from .importing import MAX_ROWS, csv_rows_parse, shipments_import
from .models import Hub, Leg, Party, ServiceLevel, Shipment
from .schema import KEY_SCHEMA_OPTIONAL
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
    KEY_SCHEMA_OPTIONAL,
    OpenApiParameter.HEADER,
    description="A retried request with the same key returns the first answer and creates nothing twice.",
)


class HubViewSet(viewsets.ModelViewSet):
    queryset = Hub.objects.select_related("location")
    serializer_class = HubSerializer
    lookup_value_regex = r"\d+"
    filterset_fields = ["kind", "is_active"]

    @idempotent
    def create(self, request, *args, **kwargs):
        return super().create(request, *args, **kwargs)


class PartyViewSet(viewsets.ModelViewSet):
    queryset = Party.objects.all()
    serializer_class = PartySerializer
    lookup_value_regex = r"\d+"
    filterset_fields = ["kind"]

    @idempotent
    def create(self, request, *args, **kwargs):
        return super().create(request, *args, **kwargs)


class ShipmentFilter(AllmileFilterSet):
    status = django_filters.MultipleChoiceFilter(choices=ShipmentStatus.choices)
    mile = django_filters.ChoiceFilter(field_name="current_mile", choices=Mile.choices)
    service_level = django_filters.ChoiceFilter(choices=ServiceLevel.choices)
    at_risk = StrictBooleanFilter(field_name="is_at_risk")
    is_return = StrictBooleanFilter()
    hub = django_filters.CharFilter(method="filter_hub", label="Hub code (either end)")
    date = django_filters.DateFilter(
        method="filter_date", label="Promised on this date"
    )
    created_after = DateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = DateTimeFilter(field_name="created_at", lookup_expr="lt")
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
    """The shipment's timeline: its events, oldest first (at most 1,000)."""

    class InputSerializer(serializers.Serializer):
        after_id = serializers.IntegerField(
            min_value=0,
            max_value=2**63 - 1,
            required=False,
            help_text="Only events after this id",
        )

    @extend_schema(
        responses=ShipmentEventSerializer(many=True), parameters=[InputSerializer]
    )
    def get(self, request, shipment_id: int):
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        shipment = get_object_or_404(Shipment, pk=shipment_id)
        events = shipment.events.select_related("actor").order_by("id")
        if "after_id" in params.validated_data:
            events = events.filter(id__gt=params.validated_data["after_id"])
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


def _import_response(result, *, error_status=status.HTTP_422_UNPROCESSABLE_ENTITY):
    if result.errors:
        return Response(
            {
                "code": "import_invalid",
                "detail": "Nothing was imported.",
                "errors": result.errors,
            },
            status=error_status,
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
        rows = [_csv_row_typed(row) for row in csv_rows_parse(upload.read())]
        result = shipments_import(rows=rows, actor=request.user, source="api")
        return _import_response(result)


def _csv_row_typed(row: dict) -> dict:
    """CSV cells are text; the rows are checked as JSON shipments, where ids and
    coordinates are numbers. A cell that is no number stays text (and is refused)."""
    row = {**row, "shipper": _cell_number(row.get("shipper"), int)}
    for end in ("origin", "destination"):
        place = dict(row[end])
        for name in ("latitude", "longitude"):
            place[name] = _cell_number(place.get(name), float)
        row[end] = place
    return row


def _cell_number(text, kind):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        return text
    return value if math.isfinite(value) else text


class ShipmentBulkCreateApi(APIView):
    """JSON list of shipments: every item valid, or nothing created."""

    parser_classes = [JSONParser]

    @extend_schema(
        request=ShipmentInputSerializer(many=True, min_length=1, max_length=MAX_ROWS),
        responses={201: IMPORT_RESULT},
        parameters=[IDEMPOTENCY_HEADER],
    )
    @idempotent
    def post(self, request):
        rows = request.data
        if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_ROWS:
            raise serializers.ValidationError(
                {"non_field_errors": [f"Expected a list of 1 to {MAX_ROWS} shipments."]}
            )
        result = shipments_import(rows=rows, actor=request.user, source="api")
        if result.errors:
            return _import_response(result, error_status=_rows_error_status(rows))
        return _import_response(result)


def _rows_error_status(rows: list) -> int:
    """400 when a row does not fit ShipmentInput's schema; otherwise the rows
    are well formed and a rule refused them (422). Read only on a refusal."""
    for row in rows:
        row_input = ShipmentInputSerializer(data=row)
        if not row_input.is_valid() and validation_status(row_input.errors) == 400:
            return status.HTTP_400_BAD_REQUEST
    return status.HTTP_422_UNPROCESSABLE_ENTITY


class LegFilter(AllmileFilterSet):
    status = django_filters.MultipleChoiceFilter(choices=LegStatus.choices)
    mile = django_filters.ChoiceFilter(choices=Mile.choices)
    # By id: an unknown shipment is an empty list, not an error.
    shipment = IdFilter(field_name="shipment_id")
    hub = django_filters.CharFilter(method="filter_hub", label="Hub code (either end)")

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
