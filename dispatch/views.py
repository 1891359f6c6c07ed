from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.response import Response

from shipments.idempotency import idempotent

from .models import Driver, Vehicle
from .serializers import (
    DriverInputSerializer,
    DriverSerializer,
    DriverUpdateSerializer,
    VehicleSerializer,
)
from .services import driver_create


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
