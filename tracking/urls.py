"""Pages, included at the root by config.urls."""

from django.urls import path, re_path

from . import views

urlpatterns = [
    path("dashboard/", views.dashboard, name="dashboard"),
    path("dashboard/shipments/", views.shipment_list, name="dashboard-shipments"),
    path(
        "dashboard/shipments/<int:shipment_id>/",
        views.shipment_detail,
        name="dashboard-shipment",
    ),
    re_path(r"^t/(?P<token>[^/]{1,200})/?$", views.tracking_page, name="tracking-page"),
]
