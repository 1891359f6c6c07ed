"""Pages: the dispatcher dashboard (server-rendered, a little JavaScript) and
the customer tracking page."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from dispatch.models import Driver, Vehicle
from shipments.models import Hub, ServiceLevel
from shipments.roles import user_is_dispatcher
from shipments.states import Mile, ShipmentStatus

from .apis import NOT_FOUND_BODY, PUBLIC_HEADERS, tracking_public_body
from .public import tracking_shipment_resolve
from .relay import stream_last_seq
from .selectors import shipment_table, shipment_timeline
from .throttle import tracking_miss_record, tracking_request_allowed

SHIPMENT_TABLE_PAGE_SIZE = 50
TABLE_FILTERS = ("mile", "status", "hub", "service_level", "at_risk", "driver", "q")


def dispatcher_page(view):
    """Sign-in for anonymous visitors; 403 for signed-in non-dispatchers."""

    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not user_is_dispatcher(request.user):
            return render(request, "dashboard/forbidden.html", status=403)
        return view(request, *args, **kwargs)

    wrapper.__name__ = view.__name__
    wrapper.__doc__ = view.__doc__
    return wrapper


def _page_context() -> dict:
    # The stream number is read before the page's data: live messages after it
    # are applied on top, so nothing between the two reads is missed.
    return {"map_tile_url": settings.MAP_TILE_URL, "last_seq": stream_last_seq()}


@dispatcher_page
def dashboard(request: HttpRequest) -> HttpResponse:
    """Map, exceptions, KPIs and the optimization panel; live over /ws/dashboard/."""
    hubs = Hub.objects.filter(is_active=True).order_by("code")
    vehicles = Vehicle.objects.filter(is_active=True).select_related("home_hub").order_by("code")
    return render(
        request,
        "dashboard/index.html",
        {
            **_page_context(),
            "hubs": hubs,
            "vehicles": vehicles,
            "miles": [(m.value, m.label) for m in Mile if m != Mile.MIDDLE],
            "today": timezone.localdate().isoformat(),
        },
    )


@dispatcher_page
def shipment_list(request: HttpRequest) -> HttpResponse:
    filters = {name: request.GET.get(name, "").strip()[:100] for name in TABLE_FILTERS}
    if filters["driver"] and not filters["driver"].isdigit():
        filters["driver"] = ""
    page = Paginator(shipment_table(filters=filters), SHIPMENT_TABLE_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    query = "&".join(f"{k}={v}" for k, v in filters.items() if v)
    return render(
        request,
        "dashboard/shipments.html",
        {
            **_page_context(),
            "page": page,
            "filters": filters,
            "query": query,
            "miles": Mile.choices,
            "statuses": ShipmentStatus.choices,
            "service_levels": ServiceLevel.choices,
            "hubs": Hub.objects.order_by("code"),
            "drivers": Driver.objects.select_related("user").order_by("user__username"),
        },
    )


@dispatcher_page
def shipment_detail(request: HttpRequest, shipment_id: int) -> HttpResponse:
    timeline = shipment_timeline(shipment_id)
    if timeline is None:
        raise Http404("No such shipment.")
    return render(request, "dashboard/shipment.html", {**_page_context(), **timeline})


def tracking_page(request: HttpRequest, token: str) -> HttpResponse:
    """The customer's page: the allow-listed view, then live over the socket."""
    if not tracking_request_allowed(request):
        response = render(request, "tracking/unavailable.html", {"message": "Too many requests."}, status=429)
    else:
        shipment = tracking_shipment_resolve(token)
        if shipment is None:
            tracking_miss_record(request)
            response = render(
                request, "tracking/unavailable.html", {"message": NOT_FOUND_BODY["detail"]}, status=404
            )
        else:
            response = render(
                request,
                "tracking/track.html",
                {**_page_context(), "token": token, "view": tracking_public_body(shipment, token)},
            )
    for header, value in PUBLIC_HEADERS.items():
        response[header] = value
    return response
