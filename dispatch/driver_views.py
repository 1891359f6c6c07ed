"""The driver API (``/api/v1/driver/…``): what the mobile app reads and writes.

Token auth; a driver sees only their own work. Every lookup starts from a
selector scoped to the driver, so another driver's ids answer 404, exactly
like ids that do not exist. Every write needs an ``Idempotency-Key`` and, for
events, also de-duplicates per item (``event_id`` and ``(device_id, seq)``).
"""

from __future__ import annotations

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadhandler import (
    MemoryFileUploadHandler,
    TemporaryFileUploadHandler,
)
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import serializers
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from shipments.idempotency import idempotent
from shipments.roles import IsDispatcherOrDriver, IsDriver
from shipments.schema import KEY_SCHEMA_REQUIRED

from .driver_events import DriverEventInput, driver_events_apply
from .pings import PingInput, driver_pings_record
from .pod import (
    POD_MAX_FILE_BYTES,
    PodInput,
    PodSizeLimitHandler,
    PodTooLarge,
    pod_create,
)
from .selectors import (
    driver_of,
    driver_route_current,
    driver_shipment_list,
    pod_list_visible_to,
    route_detail_queryset,
    route_etag,
    route_list_visible_to,
    stop_list_visible_to,
    stops_with_work,
)
from .serializers import (
    DriverEventBatchResultSerializer,
    DriverEventBatchSerializer,
    DriverSerializer,
    DriverShipmentSerializer,
    DutyInputSerializer,
    PingBatchResultSerializer,
    PingBatchSerializer,
    PodInputSerializer,
    ProofOfDeliverySerializer,
    RouteSerializer,
    RouteStopSerializer,
    RouteSummarySerializer,
    ping_item_validate,
)
from .services import driver_duty_set

IDEMPOTENCY_KEY_REQUIRED = OpenApiParameter(
    "Idempotency-Key",
    KEY_SCHEMA_REQUIRED,
    OpenApiParameter.HEADER,
    required=True,
    description="Required on every driver write. A retry with the same key returns the "
    "first answer byte for byte and changes nothing.",
)

ROUTE_EXAMPLE = {
    "id": 41,
    "date": "2026-11-26",
    "status": "published",
    "mile": "last",
    "hub": "mco-hub",
    "vehicle": {"id": 7, "code": "van-mco-1", "type": "van"},
    "driver": {"id": 3, "username": "driver1", "name": "Alex Durand"},
    "planned_start": "2026-11-26T08:00:00+01:00",
    "planned_end": "2026-11-26T12:10:00+01:00",
    "distance_meters": 18250,
    "duration_seconds": 15000,
    "version": 4,
    "published_at": "2026-11-26T06:30:00+01:00",
    "trip": None,
    "stops": [
        {
            "id": 901,
            "sequence": 1,
            "kind": "delivery",
            "latitude": 43.7396,
            "longitude": 7.4276,
            "address": "Place du Casino, 98000 Monaco",
            "hub": None,
            "window_start": "2026-11-26T09:00:00+01:00",
            "window_end": "2026-11-26T11:00:00+01:00",
            "planned_arrival": "2026-11-26T09:12:00+01:00",
            "eta": "2026-11-26T09:18:00+01:00",
            "actual_arrival": None,
            "actual_departure": None,
            "service_seconds": 180,
            "status": "pending",
            "parcels": [
                {
                    "barcode": "AM3F9A0C12B7D4",
                    "shipment_id": 5501,
                    "reference": "ORD-1042",
                    "leg_id": 16503,
                    "action": "deliver",
                    "weight_kg": "2.500",
                }
            ],
            "tasks": [
                {
                    "action": "deliver",
                    "leg_id": 16503,
                    "leg_status": "assigned",
                    "shipment_id": 5501,
                    "reference": "ORD-1042",
                    "barcodes": ["AM3F9A0C12B7D4"],
                }
            ],
            "requires": ["photo", "signature", "recipient_name"],
            "notes": "Ring twice; concierge on the ground floor.",
            "contact": {"name": "Camille Martin", "phone": "+33600000000"},
        }
    ],
}


def _require_driver(request):
    driver = driver_of(request.user)
    if driver is None:  # IsDriver already refused; this keeps the type checker honest
        raise Http404
    return driver


def _etag_matches(header: str, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    candidates = [part.strip() for part in header.split(",")]
    return any(c.removeprefix("W/") == etag for c in candidates)


class DriverRouteApi(APIView):
    """Today's published route of the signed-in driver, with everything the phone
    needs offline. Poll it with ``If-None-Match``: an unchanged route answers 304."""

    permission_classes = [IsDriver]

    class InputSerializer(serializers.Serializer):
        date = serializers.DateField(
            required=False, help_text="Another day (default today)"
        )

    @extend_schema(
        operation_id="driver_route_today",
        parameters=[
            InputSerializer,
            OpenApiParameter(
                "If-None-Match", OpenApiTypes.STR, OpenApiParameter.HEADER
            ),
        ],
        responses={
            200: RouteSerializer,
            304: OpenApiResponse(description="Not modified since the ETag you sent."),
            404: OpenApiResponse(description="No published route for that day."),
        },
        examples=[
            OpenApiExample("A last-mile route", value=ROUTE_EXAMPLE, response_only=True)
        ],
    )
    def get(self, request):
        driver = _require_driver(request)
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        day = params.validated_data.get("date")
        route = driver_route_current(driver_id=driver.pk, service_date=day)
        if route is None:
            return Response(
                {
                    "code": "no_route",
                    "detail": "You have no published route for that day.",
                },
                status=404,
            )
        etag = route_etag(route)
        if _etag_matches(request.headers.get("If-None-Match", ""), etag):
            response = HttpResponse(status=304)
            response["ETag"] = etag
            return response
        route = route_detail_queryset().get(pk=route.pk)
        response = Response(RouteSerializer(route).data)
        response["ETag"] = etag
        response["Cache-Control"] = "private, no-cache"
        return response


class DriverRouteListApi(APIView):
    """The driver's routes (published or done), most recent first."""

    permission_classes = [IsDriver]

    @extend_schema(responses=RouteSummarySerializer(many=True))
    def get(self, request):
        routes = route_list_visible_to(request.user).order_by("-service_date", "-id")[
            :30
        ]
        for route in routes:
            route.stop_count = route.stops.count()
        return Response(RouteSummarySerializer(routes, many=True).data)


class DriverRouteDetailApi(APIView):
    """One route by id: its driver, or a dispatcher; anyone else gets 404."""

    permission_classes = [IsDispatcherOrDriver]

    @extend_schema(responses=RouteSerializer)
    def get(self, request, route_id: int):
        visible = route_list_visible_to(request.user).values_list("pk", flat=True)
        route = get_object_or_404(
            route_detail_queryset().filter(pk__in=visible), pk=route_id
        )
        return Response(RouteSerializer(route).data)


class DriverStopDetailApi(APIView):
    permission_classes = [IsDispatcherOrDriver]

    @extend_schema(responses=RouteStopSerializer)
    def get(self, request, stop_id: int):
        visible = stop_list_visible_to(request.user).values_list("pk", flat=True)
        stop = get_object_or_404(stops_with_work().filter(pk__in=visible), pk=stop_id)
        return Response(RouteStopSerializer(stop).data)


class DriverShipmentDetailApi(APIView):
    """A shipment on one of the driver's routes; any other id is 404."""

    permission_classes = [IsDriver]

    @extend_schema(responses=DriverShipmentSerializer)
    def get(self, request, shipment_id: int):
        driver = _require_driver(request)
        shipment = get_object_or_404(
            driver_shipment_list(driver=driver), pk=shipment_id
        )
        return Response(DriverShipmentSerializer(shipment).data)


EVENTS_REQUEST_EXAMPLE = {
    "device_id": "8d0c6f7e-ios-14",
    "events": [
        {
            "event_id": "0b6f1e9c-5a7d-4c1e-9a53-2f1f6f9b2a01",
            "seq": 101,
            "type": "arrived",
            "occurred_at": "2026-11-26T09:14:03+01:00",
            "stop_id": 901,
            "latitude": 43.7395,
            "longitude": 7.4274,
        },
        {
            "event_id": "4c7d2b1a-2f0e-4e55-8a7b-51d1f3a0c9e2",
            "seq": 102,
            "type": "delivery_failed",
            "occurred_at": "2026-11-26T09:16:40+01:00",
            "stop_id": 901,
            "reason": "not_home",
        },
    ],
}
EVENTS_RESPONSE_EXAMPLE = {
    "results": [
        {
            "event_id": "0b6f1e9c-5a7d-4c1e-9a53-2f1f6f9b2a01",
            "status": "applied",
            "current_state": {
                "route": {"id": 41, "status": "in_progress"},
                "stop": {"id": 901, "status": "arrived"},
                "legs": [{"id": 16503, "status": "arrived"}],
            },
        },
        {
            "event_id": "4c7d2b1a-2f0e-4e55-8a7b-51d1f3a0c9e2",
            "status": "duplicate",
            "original": {
                "event_id": "4c7d2b1a-2f0e-4e55-8a7b-51d1f3a0c9e2",
                "status": "applied",
            },
        },
        {
            "event_id": "9e8d7c6b-0000-4000-8000-000000000003",
            "status": "rejected",
            "reason": "unknown_barcode",
            "detail": "No parcel has the barcode 'XX123'.",
            "current_state": {"route": {"id": 41, "status": "in_progress"}},
        },
    ]
}


class DriverEventsApi(APIView):
    """A batch of up to 500 events from the driver's phone.

    Each item is answered: ``applied``; ``duplicate`` (its ``event_id`` or its
    ``(device_id, seq)`` was seen before: the original result is repeated and
    nothing changes); or ``rejected`` with a ``reason`` and the ``current_state``.
    Items are applied in ``seq`` order whatever order they arrive in. A
    ``delivered`` event needs the stop's required proof of delivery uploaded
    first (``reason: pod_missing`` lists what is missing).
    """

    permission_classes = [IsDriver]
    parser_classes = [JSONParser]

    @extend_schema(
        request=DriverEventBatchSerializer,
        responses={200: DriverEventBatchResultSerializer},
        parameters=[IDEMPOTENCY_KEY_REQUIRED],
        examples=[
            OpenApiExample(
                "Two events", value=EVENTS_REQUEST_EXAMPLE, request_only=True
            ),
            OpenApiExample(
                "Per-item answers", value=EVENTS_RESPONSE_EXAMPLE, response_only=True
            ),
        ],
    )
    @idempotent(required=True)
    def post(self, request):
        driver = _require_driver(request)
        payload = DriverEventBatchSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        events = [
            DriverEventInput(
                event_id=item["event_id"],
                seq=item["seq"],
                type=item["type"],
                occurred_at=item["occurred_at"],
                stop_id=item.get("stop_id"),
                route_id=item.get("route_id"),
                barcode=item.get("barcode", ""),
                reason=item.get("reason", ""),
                latitude=item.get("latitude"),
                longitude=item.get("longitude"),
            )
            for item in payload.validated_data["events"]
        ]
        results = driver_events_apply(
            driver_id=driver.pk,
            device_id=payload.validated_data["device_id"],
            events=events,
            actor=request.user,
        )
        return Response({"results": [r.as_dict() for r in results]})


PINGS_REQUEST_EXAMPLE = {
    "device_id": "8d0c6f7e-ios-14",
    "pings": [
        {
            "latitude": 43.7312,
            "longitude": 7.4190,
            "accuracy": 8.0,
            "speed": 9.2,
            "heading": 74.0,
            "recorded_at": "2026-11-26T09:10:00+01:00",
        },
        {
            "latitude": 43.7331,
            "longitude": 7.4225,
            "accuracy": 6.5,
            "recorded_at": "2026-11-26T09:10:10+01:00",
        },
    ],
}


class DriverPingsApi(APIView):
    """A batch of up to 500 GPS fixes. Each fix is stored once (a re-sent batch
    stores nothing twice); implausible ones are rejected one by one."""

    permission_classes = [IsDriver]
    parser_classes = [JSONParser]

    @extend_schema(
        request=PingBatchSerializer,
        responses={200: PingBatchResultSerializer},
        parameters=[IDEMPOTENCY_KEY_REQUIRED],
        examples=[
            OpenApiExample("Two fixes", value=PINGS_REQUEST_EXAMPLE, request_only=True),
            OpenApiExample(
                "One rejected",
                value={
                    "accepted": 1,
                    "duplicates": 0,
                    "rejected": [{"index": 1, "reason": "implausible_jump"}],
                },
                response_only=True,
            ),
        ],
    )
    @idempotent(required=True)
    def post(self, request):
        driver = _require_driver(request)
        payload = PingBatchSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        pings: list[PingInput] = []
        positions: list[int] = []
        malformed: list[dict] = []
        for index, raw in enumerate(payload.validated_data["pings"]):
            data, errors = ping_item_validate(raw)
            if errors:
                malformed.append(
                    {"index": index, "reason": "invalid", "errors": errors}
                )
                continue
            pings.append(
                PingInput(
                    latitude=data["latitude"],
                    longitude=data["longitude"],
                    accuracy_meters=data["accuracy"],
                    speed_mps=data.get("speed"),
                    heading_degrees=data.get("heading"),
                    recorded_at=data["recorded_at"],
                )
            )
            positions.append(index)
        result = driver_pings_record(
            driver_id=driver.pk,
            device_id=payload.validated_data["device_id"],
            pings=pings,
        )
        rejected = malformed + [
            {"index": positions[r["index"]], "reason": r["reason"]}
            for r in result.rejected
        ]
        return Response(
            {
                "accepted": result.accepted,
                "duplicates": result.duplicates,
                "rejected": sorted(rejected, key=lambda r: r["index"]),
            }
        )


class DriverStopPodApi(APIView):
    """Proof of delivery for a stop (multipart): ``photo`` and/or ``signature``
    images (JPEG, PNG or WebP by content, at most 4 MB each), ``recipient_name``,
    ``note``, ``latitude``, ``longitude``, ``captured_at``. The stop's required
    items must be covered once this proof is added, or nothing is stored."""

    parser_classes = [MultiPartParser, FormParser]

    def get_permissions(self):
        return (
            [IsDriver()] if self.request.method == "POST" else [IsDispatcherOrDriver()]
        )

    def initialize_request(self, request, *args, **kwargs):
        # Before anything reads the body: count each file's bytes as it streams in.
        request.upload_handlers = [
            PodSizeLimitHandler(request),
            MemoryFileUploadHandler(request),
            TemporaryFileUploadHandler(request),
        ]
        return super().initialize_request(request, *args, **kwargs)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        length = int(request.META.get("CONTENT_LENGTH") or 0)
        if request.method == "POST" and length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            raise PodTooLarge(
                f"The upload is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE // (1024 * 1024)} MB "
                f"in total (each image at most {POD_MAX_FILE_BYTES // (1024 * 1024)} MB).",
                field="non_field_errors",
            )

    @extend_schema(responses=ProofOfDeliverySerializer(many=True))
    def get(self, request, stop_id: int):
        stop = get_object_or_404(stop_list_visible_to(request.user), pk=stop_id)
        pods = pod_list_visible_to(request.user).filter(stop=stop).order_by("id")
        return Response(ProofOfDeliverySerializer(pods, many=True).data)

    @extend_schema(
        request={"multipart/form-data": PodInputSerializer},
        responses={201: ProofOfDeliverySerializer},
        parameters=[IDEMPOTENCY_KEY_REQUIRED],
    )
    @idempotent(required=True)
    def post(self, request, stop_id: int):
        driver = _require_driver(request)
        stop = get_object_or_404(stop_list_visible_to(request.user), pk=stop_id)
        payload = PodInputSerializer(data=request.data)
        oversized = getattr(request._request, "pod_oversized_field", None)
        if oversized:
            raise PodTooLarge(
                f"The file is larger than {POD_MAX_FILE_BYTES // (1024 * 1024)} MB.",
                field=oversized,
            )
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        pod = pod_create(
            stop_id=stop.pk,
            driver_id=driver.pk,
            data=PodInput(
                photo=data["photo"].read() if data.get("photo") else None,
                signature=data["signature"].read() if data.get("signature") else None,
                recipient_name=data.get("recipient_name", ""),
                note=data.get("note", ""),
                latitude=data.get("latitude"),
                longitude=data.get("longitude"),
                captured_at=data.get("captured_at"),
            ),
            actor=request.user,
        )
        return Response(ProofOfDeliverySerializer(pod).data, status=201)


class PodFileApi(APIView):
    """A stored proof image, only for the route's driver or a dispatcher."""

    permission_classes = [IsDispatcherOrDriver]

    @extend_schema(responses={(200, "image/jpeg"): OpenApiTypes.BINARY})
    def get(self, request, pod_id: int, part: str):
        pod = get_object_or_404(pod_list_visible_to(request.user), pk=pod_id)
        name = pod.photo.name if part == "photo" else pod.signature.name
        if not name:
            raise Http404
        response = FileResponse(
            default_storage.open(name, "rb"), content_type="image/jpeg"
        )
        response["Content-Disposition"] = f'inline; filename="pod-{pod.pk}-{part}.jpg"'
        response["X-Content-Type-Options"] = "nosniff"
        response["Cache-Control"] = "private, no-store"
        return response


class DriverMeApi(APIView):
    permission_classes = [IsDriver]

    @extend_schema(responses=DriverSerializer)
    def get(self, request):
        return Response(DriverSerializer(_require_driver(request)).data)


class DriverDutyApi(APIView):
    """The driver's own duty status: on duty, on break or off duty."""

    permission_classes = [IsDriver]

    @extend_schema(
        request=DutyInputSerializer,
        responses=DriverSerializer,
        parameters=[IDEMPOTENCY_KEY_REQUIRED],
    )
    @idempotent(required=True)
    def post(self, request):
        driver = _require_driver(request)
        payload = DutyInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        driver = driver_duty_set(
            driver_id=driver.pk,
            status=payload.validated_data["status"],
            occurred_at=payload.validated_data.get("occurred_at") or timezone.now(),
            actor=request.user,
        )
        return Response(DriverSerializer(driver).data)
