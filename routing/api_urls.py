"""Routing API routes, included under /api/v1/ by config.urls."""

from django.urls import path

from . import views

urlpatterns = [
    path(
        "optimizations/",
        views.OptimizationJobListCreateApi.as_view(),
        name="optimization-list",
    ),
    path(
        "optimizations/<int:job_id>/",
        views.OptimizationJobDetailApi.as_view(),
        name="optimization-detail",
    ),
    path(
        "optimizations/<int:job_id>/cancel/",
        views.OptimizationJobCancelApi.as_view(),
        name="optimization-cancel",
    ),
]
