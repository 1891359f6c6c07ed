"""WebSocket routes; each app contributes its own list."""

from __future__ import annotations

import importlib

websocket_urlpatterns: list = []
for module_name in ("tracking.routing",):
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        continue
    websocket_urlpatterns += module.websocket_urlpatterns
