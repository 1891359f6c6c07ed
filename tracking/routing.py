"""WebSocket routes (included by config/websocket_urls.py)."""

from __future__ import annotations

from django.urls import re_path

from .consumers import DashboardConsumer, TrackConsumer

websocket_urlpatterns = [
    re_path(r"^ws/dashboard/$", DashboardConsumer.as_asgi()),
    re_path(r"^ws/track/(?P<token>[A-Za-z0-9_-]{1,100})/$", TrackConsumer.as_asgi()),
]
