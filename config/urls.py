from __future__ import annotations

import importlib

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from config.health import healthz
from dispatch.views import DriverViewSet, VehicleViewSet
from shipments import views as shipment_views
from shipments.auth import DashboardLoginView, TokenLoginApi

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("hubs", shipment_views.HubViewSet, basename="hub")
router.register("parties", shipment_views.PartyViewSet, basename="party")
router.register("shipments", shipment_views.ShipmentViewSet, basename="shipment")
router.register("legs", shipment_views.LegViewSet, basename="leg")
router.register("vehicles", VehicleViewSet, basename="vehicle")
router.register("drivers", DriverViewSet, basename="driver")

api_v1 = [
    path("auth/token/", TokenLoginApi.as_view(), name="api-token"),
    path(
        "shipments/import/",
        shipment_views.ShipmentImportApi.as_view(),
        name="shipment-import",
    ),
    path(
        "shipments/bulk/",
        shipment_views.ShipmentBulkCreateApi.as_view(),
        name="shipment-bulk",
    ),
    path(
        "shipments/<int:shipment_id>/events/",
        shipment_views.ShipmentEventsApi.as_view(),
        name="shipment-events",
    ),
    path(
        "shipments/<int:shipment_id>/cancel/",
        shipment_views.ShipmentCancelApi.as_view(),
        name="shipment-cancel",
    ),
    path(
        "shipments/<int:shipment_id>/replan/",
        shipment_views.ShipmentReplanApi.as_view(),
        name="shipment-replan",
    ),
    path(
        "shipments/<int:shipment_id>/tracking-link/",
        shipment_views.ShipmentTrackingLinkApi.as_view(),
        name="shipment-tracking-link",
    ),
    path(
        "legs/<int:leg_id>/transition/",
        shipment_views.LegTransitionApi.as_view(),
        name="leg-transition",
    ),
    path("", include(router.urls)),
]

# Apps that add API routes of their own (routing, dispatch, tracking) expose
# ``api_urlpatterns`` in their ``api_urls`` module; pages go in ``urls``.
page_urls = []
for app in ("routing", "dispatch", "tracking", "notifications"):
    for module_name, target in (
        (f"{app}.api_urls", api_v1),
        (f"{app}.urls", page_urls),
    ):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        target[:0] = module.urlpatterns

urlpatterns = [
    path("", RedirectView.as_view(url="/dashboard/", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path(
        "accounts/login/",
        DashboardLoginView.as_view(),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"
    ),
    path("api/v1/", include(api_v1)),
    *page_urls,
]

# Under /api/ a path that matches nothing (a malformed id) answers JSON, like
# an unknown object; pages keep Django's HTML 404.
handler404 = "shipments.api_errors.not_found"
