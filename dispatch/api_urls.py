"""Dispatch routes under /api/v1/ (auto-included by config.urls)."""

from __future__ import annotations

from django.urls import path, re_path

from . import driver_views, views

urlpatterns = [
    # Dispatchers: routes
    path("routes/", views.RouteListApi.as_view(), name="route-list"),
    path(
        "routes/insertions/",
        views.SameDayInsertionApi.as_view(),
        name="route-insertion",
    ),
    path(
        "routes/publish/",
        views.RoutesPublishDayApi.as_view(),
        name="routes-publish-day",
    ),
    path("routes/<int:route_id>/", views.RouteDetailApi.as_view(), name="route-detail"),
    path(
        "routes/<int:route_id>/assign/",
        views.RouteAssignApi.as_view(),
        name="route-assign",
    ),
    path(
        "routes/<int:route_id>/unassign/",
        views.RouteUnassignApi.as_view(),
        name="route-unassign",
    ),
    path(
        "routes/<int:route_id>/publish/",
        views.RoutePublishApi.as_view(),
        name="route-publish",
    ),
    path(
        "routes/<int:route_id>/events/",
        views.RouteEventsApi.as_view(),
        name="route-events",
    ),
    path(
        "routes/<int:route_id>/trace/",
        views.RouteTraceApi.as_view(),
        name="route-trace",
    ),
    path(
        "routes/stops/<int:stop_id>/reassign/",
        views.StopReassignApi.as_view(),
        name="route-stop-reassign",
    ),
    path(
        "dispatch/conflicts/",
        views.DispatchConflictListApi.as_view(),
        name="dispatch-conflicts",
    ),
    path(
        "dispatch/conflicts/<int:conflict_id>/resolve/",
        views.DispatchConflictResolveApi.as_view(),
        name="dispatch-conflict-resolve",
    ),
    # Dispatchers: line-haul trips
    path("trips/", views.TripListApi.as_view(), name="trip-list"),
    path("trips/plan/", views.TripsPlanApi.as_view(), name="trips-plan"),
    path("trips/<int:trip_id>/", views.TripDetailApi.as_view(), name="trip-detail"),
    # Drivers (and dispatchers where the view says so)
    path("driver/me/", driver_views.DriverMeApi.as_view(), name="driver-me"),
    path("driver/duty/", driver_views.DriverDutyApi.as_view(), name="driver-duty"),
    path("driver/route/", driver_views.DriverRouteApi.as_view(), name="driver-route"),
    path(
        "driver/routes/",
        driver_views.DriverRouteListApi.as_view(),
        name="driver-routes",
    ),
    path(
        "driver/routes/<int:route_id>/",
        driver_views.DriverRouteDetailApi.as_view(),
        name="driver-route-detail",
    ),
    path(
        "driver/stops/<int:stop_id>/",
        driver_views.DriverStopDetailApi.as_view(),
        name="driver-stop-detail",
    ),
    path(
        "driver/stops/<int:stop_id>/pod/",
        driver_views.DriverStopPodApi.as_view(),
        name="driver-stop-pod",
    ),
    path(
        "driver/shipments/<int:shipment_id>/",
        driver_views.DriverShipmentDetailApi.as_view(),
        name="driver-shipment-detail",
    ),
    path(
        "driver/events/", driver_views.DriverEventsApi.as_view(), name="driver-events"
    ),
    path("driver/pings/", driver_views.DriverPingsApi.as_view(), name="driver-pings"),
    re_path(
        r"^pods/(?P<pod_id>[0-9]+)/(?P<part>photo|signature)/$",
        driver_views.PodFileApi.as_view(),
        name="pod-file",
    ),
]
