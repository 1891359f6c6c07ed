"""OpenAPI schema generation tweaks shared by every app."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema


class AllmileAutoSchema(AutoSchema):
    """Names nested serializers after their enclosing class.

    The house style nests ``InputSerializer``/``OutputSerializer`` in each API
    view; without this, every one of them would be called "Input" in the schema.
    """

    def get_serializer_name(self, serializer, direction):
        name = super().get_serializer_name(serializer, direction)
        qualname = type(serializer).__qualname__
        if "." in qualname and "<locals>" not in qualname:
            outer = qualname.rsplit(".", 1)[0].replace(".", "")
            return f"{outer}{name}"
        return name
