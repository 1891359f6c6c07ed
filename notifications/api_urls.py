"""Customer actions on a tracking link, included under /api/v1/ by config.urls.

The link's own page and JSON (``track/<token>/``) belong to tracking; these
paths hang below it.
"""

from django.urls import re_path

from . import apis

TOKEN = r"^track/(?P<token>[^/]{1,200})/"

urlpatterns = [
    re_path(
        TOKEN + r"delivery-options/$",
        apis.DeliveryOptionsApi.as_view(),
        name="track-delivery-options",
    ),
    re_path(
        TOKEN + r"instructions/$",
        apis.DeliveryInstructionsApi.as_view(),
        name="track-instructions",
    ),
    re_path(
        TOKEN + r"reschedule/$",
        apis.DeliveryRescheduleApi.as_view(),
        name="track-reschedule",
    ),
    re_path(
        TOKEN + r"redelivery/$", apis.RedeliveryApi.as_view(), name="track-redelivery"
    ),
    re_path(
        TOKEN + r"opt-out/$", apis.MessagesOptOutApi.as_view(), name="track-opt-out"
    ),
    re_path(TOKEN + r"rating/$", apis.DeliveryRatingApi.as_view(), name="track-rating"),
]
