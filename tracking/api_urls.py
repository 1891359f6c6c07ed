"""Tracking API routes, included under /api/v1/ by config.urls."""

from django.urls import path, re_path

from . import apis

urlpatterns = [
    re_path(r"^track/(?P<token>[^/]{1,200})/$", apis.TrackingPublicApi.as_view(), name="track-public"),
    path("live/", apis.StreamAfterSeqApi.as_view(), name="live-after-seq"),
    path("dashboard/snapshot/", apis.DashboardSnapshotApi.as_view(), name="dashboard-snapshot"),
    path(
        "dashboard/optimizations/<int:job_id>/routes/",
        apis.OptimizationRoutesMapApi.as_view(),
        name="dashboard-optimization-routes",
    ),
    path("kpis/", apis.KpisApi.as_view(), name="kpis"),
    path("exceptions/", apis.ExceptionListApi.as_view(), name="exception-list"),
    path(
        "exceptions/<int:exception_id>/acknowledge/",
        apis.ExceptionAcknowledgeApi.as_view(),
        name="exception-acknowledge",
    ),
    path(
        "exceptions/<int:exception_id>/resolve/",
        apis.ExceptionResolveApi.as_view(),
        name="exception-resolve",
    ),
    path("webhooks/endpoints/", apis.WebhookEndpointListCreateApi.as_view(), name="webhook-endpoints"),
    path(
        "webhooks/endpoints/<int:endpoint_id>/deliveries/",
        apis.WebhookDeliveryListApi.as_view(),
        name="webhook-deliveries",
    ),
]
