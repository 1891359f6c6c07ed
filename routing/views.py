"""Optimization jobs API: thin views that validate, call one service and serialize.

Dispatcher only (the project's default permission). Routes, the jobs' result,
are read at /api/v1/routes/ (dispatch).
"""

from __future__ import annotations

import django_filters
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from shipments.filters import AllmileFilterSet, IdFilter
from shipments.idempotency import idempotent
from shipments.states import Mile

from .models import OptimizationJob
from .serializers import (
    OptimizationJobCancelInputSerializer,
    OptimizationJobInputSerializer,
    OptimizationJobSerializer,
)
from .services import (
    optimization_job_cancel,
    optimization_job_create,
    optimization_job_list,
)


class OptimizationJobFilter(AllmileFilterSet):
    status = django_filters.MultipleChoiceFilter(choices=OptimizationJob.Status.choices)
    mile = django_filters.ChoiceFilter(choices=Mile.choices)
    hub = IdFilter(field_name="hub_id")
    service_date = django_filters.DateFilter()

    class Meta:
        model = OptimizationJob
        fields = ["status", "mile", "hub", "service_date"]


class OptimizationJobListCreateApi(generics.ListAPIView):
    """GET lists jobs, newest first; POST starts one and answers 202 at once."""

    serializer_class = OptimizationJobSerializer
    filterset_class = OptimizationJobFilter

    def get_queryset(self):
        return optimization_job_list()

    @extend_schema(
        request=OptimizationJobInputSerializer,
        responses={202: OptimizationJobSerializer},
    )
    @idempotent
    def post(self, request: Request) -> Response:
        payload = OptimizationJobInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        job = optimization_job_create(**payload.validated_data, created_by=request.user)
        job = optimization_job_list().get(pk=job.pk)
        return Response(
            OptimizationJobSerializer(job).data, status=status.HTTP_202_ACCEPTED
        )


class OptimizationJobDetailApi(generics.RetrieveAPIView):
    """Status, progress, and the result's summary once there is one."""

    serializer_class = OptimizationJobSerializer
    lookup_url_kwarg = "job_id"

    def get_queryset(self):
        return optimization_job_list()


class OptimizationJobCancelApi(APIView):
    """Cancel: 200 when the job is cancelled, 202 while its search is stopping."""

    @extend_schema(
        request=OptimizationJobCancelInputSerializer,
        responses={200: OptimizationJobSerializer, 202: OptimizationJobSerializer},
    )
    @idempotent
    def post(self, request: Request, job_id: int) -> Response:
        payload = OptimizationJobCancelInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        get_object_or_404(OptimizationJob, pk=job_id)
        job = optimization_job_cancel(job_id=job_id, **payload.validated_data)
        job = optimization_job_list().get(pk=job.pk)
        answer = status.HTTP_200_OK if job.is_finished else status.HTTP_202_ACCEPTED
        return Response(OptimizationJobSerializer(job).data, status=answer)
