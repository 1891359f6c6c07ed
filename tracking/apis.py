"""Tracking APIs: the public JSON twin, the stream catch-up, exceptions, KPIs,
the dashboard snapshot and webhook endpoints. Views validate, call, shape."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from shipments.idempotency import idempotent
from shipments.models import Party
from shipments.serializers import (
    JsonModelSerializer,
    JsonSerializer,
    exact_regex_field,
)

from .exceptions import exception_acknowledge, exception_resolve, exception_summary
from .kpis import kpis_for_day
from .models import DeliveryException, WebhookDelivery, WebhookEndpoint
from .public import public_shipment_view, tracking_shipment_resolve
from .selectors import dashboard_snapshot, exception_list, route_map_list
from .stream import AFTER_SEQ_MAX_LIMIT, shipment_last_seq, stream_page
from .throttle import tracking_miss_record, tracking_request_allowed

# An http(s) URL in visible ASCII (a host, an optional port, then anything).
WEBHOOK_URL_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?([/?#][!-~]*)?\Z"
WEBHOOK_URL_MAX = WebhookEndpoint._meta.get_field("url").max_length

PUBLIC_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
}
NOT_FOUND_BODY = {"detail": "This tracking link is not valid or has expired."}


def public_response(body: dict, *, status_code: int = 200) -> Response:
    response = Response(body, status=status_code)
    for header, value in PUBLIC_HEADERS.items():
        response[header] = value
    return response


def tracking_public_body(shipment, token: str) -> dict:
    seq = shipment_last_seq(shipment.pk)  # read first: updates after it are sent live
    body = public_shipment_view(shipment)
    body["live"] = {
        "websocket": f"/ws/track/{token}/",
        "seq": seq,
        "poll_seconds": 15,
    }
    return body


class TrackingPublicApi(APIView):
    """The tracking page as JSON, for integrators: the same allow-list.

    Unknown, revoked and expired tokens all answer the same 404.
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: dict}, auth=[])
    def get(self, request: Request, token: str) -> Response:
        if not tracking_request_allowed(request):
            return public_response({"detail": "Too many requests."}, status_code=429)
        shipment = tracking_shipment_resolve(token)
        if shipment is None:
            tracking_miss_record(request)
            return public_response(NOT_FOUND_BODY, status_code=404)
        return public_response(tracking_public_body(shipment, token))


class StreamAfterSeqApi(APIView):
    """What the dashboard missed: every stream message after ``after_seq``, in order."""

    class InputSerializer(serializers.Serializer):
        after_seq = serializers.IntegerField(min_value=0, max_value=2**62)
        limit = serializers.IntegerField(min_value=1, max_value=AFTER_SEQ_MAX_LIMIT, default=200)

    @extend_schema(parameters=[InputSerializer], responses=dict)
    def get(self, request: Request) -> Response:
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        return Response(stream_page(**params.validated_data))


class DayInputSerializer(serializers.Serializer):
    date = serializers.DateField(required=False)


class DashboardSnapshotApi(APIView):
    """Hubs, today's routes with stops, driver positions, open exceptions, KPIs,
    and the stream number the snapshot was read at."""

    @extend_schema(parameters=[DayInputSerializer], responses=dict)
    def get(self, request: Request) -> Response:
        params = DayInputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        day = params.validated_data.get("date") or timezone.localdate()
        return Response(dashboard_snapshot(service_date=day))


class OptimizationRoutesMapApi(APIView):
    """The routes an optimization job proposed, with stops, for the map."""

    @extend_schema(responses=dict)
    def get(self, request: Request, job_id: int) -> Response:
        return Response({"job_id": job_id, "routes": route_map_list(job_id=job_id)})


class KpisApi(APIView):
    @extend_schema(parameters=[DayInputSerializer], responses=dict)
    def get(self, request: Request) -> Response:
        params = DayInputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        return Response(kpis_for_day(day=params.validated_data.get("date") or timezone.localdate()))


class ExceptionListApi(APIView):
    class InputSerializer(serializers.Serializer):
        status = serializers.ChoiceField(
            choices=["open", "acknowledged", "resolved", "unresolved"], required=False
        )

    @extend_schema(parameters=[InputSerializer], responses=dict)
    def get(self, request: Request) -> Response:
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        exceptions = exception_list(status=params.validated_data.get("status"))
        return Response({"results": [exception_summary(e) for e in exceptions]})


class ExceptionActionInputSerializer(JsonSerializer):
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class ExceptionAcknowledgeApi(APIView):
    @extend_schema(request=ExceptionActionInputSerializer, responses=dict)
    @idempotent
    def post(self, request: Request, exception_id: int) -> Response:
        payload = ExceptionActionInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        get_object_or_404(DeliveryException, pk=exception_id)
        exception = exception_acknowledge(
            exception_id=exception_id, actor=request.user, **payload.validated_data
        )
        return Response(exception_summary(exception))


class ExceptionResolveApi(APIView):
    @extend_schema(request=ExceptionActionInputSerializer, responses=dict)
    @idempotent
    def post(self, request: Request, exception_id: int) -> Response:
        payload = ExceptionActionInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        get_object_or_404(DeliveryException, pk=exception_id)
        exception = exception_resolve(
            exception_id=exception_id, actor=request.user, **payload.validated_data
        )
        return Response(exception_summary(exception))


class WebhookEndpointSerializer(JsonModelSerializer):
    shipper = serializers.PrimaryKeyRelatedField(queryset=Party.objects.all())
    # The schema's pattern is the whole rule: an http(s) URL with a host.
    url = exact_regex_field(WEBHOOK_URL_PATTERN, max_length=WEBHOOK_URL_MAX)
    event_types = serializers.ListField(
        child=serializers.CharField(max_length=60), required=False, max_length=50
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "shipper", "url", "secret", "event_types", "is_active", "created_at"]
        read_only_fields = ["id", "secret", "created_at"]


class WebhookEndpointListCreateApi(APIView):
    """Shippers' webhook endpoints; the secret is shown so they can verify signatures."""

    @extend_schema(
        responses=inline_serializer(
            "WebhookEndpointList",
            {"results": WebhookEndpointSerializer(many=True)},
        )
    )
    def get(self, request: Request) -> Response:
        endpoints = WebhookEndpoint.objects.order_by("id")[:200]
        return Response({"results": WebhookEndpointSerializer(endpoints, many=True).data})

    @extend_schema(request=WebhookEndpointSerializer, responses={201: WebhookEndpointSerializer})
    @idempotent
    def post(self, request: Request) -> Response:
        payload = WebhookEndpointSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        endpoint = WebhookEndpoint.objects.create(**payload.validated_data)
        return Response(WebhookEndpointSerializer(endpoint).data, status=status.HTTP_201_CREATED)


class WebhookDeliveryListApi(APIView):
    """The delivery log of one endpoint, newest first."""

    @extend_schema(responses=dict)
    def get(self, request: Request, endpoint_id: int) -> Response:
        endpoint = get_object_or_404(WebhookEndpoint, pk=endpoint_id)
        deliveries = WebhookDelivery.objects.filter(endpoint=endpoint).order_by("-id")[:200]
        return Response(
            {
                "results": [
                    {
                        "id": d.pk,
                        "event_id": d.event_id,
                        "event_type": d.event_type,
                        "status": d.status,
                        "attempts": d.attempts,
                        "last_status_code": d.last_status_code,
                        "last_error": d.last_error,
                        "last_duration_ms": d.last_duration_ms,
                        "next_attempt_at": d.next_attempt_at,
                        "delivered_at": d.delivered_at,
                        "created_at": d.created_at,
                    }
                    for d in deliveries
                ]
            }
        )
