"""List query parameters, read strictly: a value that does not fit answers 400
with the parameter's error instead of being ignored.

* an empty value (``?mile=``) means the parameter was not given, as HTML forms
  send it; the schema says so (``allowEmptyValue``);
* booleans are ``true`` or ``false``, nothing else;
* ``page`` and ``page_size`` are whole numbers from 1 (``page_size`` above 100
  is served as 100); a page past the last answers 404.

Every list view gets these through the project's default filter backend and
pagination class (``REST_FRAMEWORK`` in config.settings).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import django_filters
from django import forms
from django.db import models
from django.utils.dateparse import parse_datetime
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework.exceptions import ValidationError

from .pagination import StandardPagination

RFC3339_RE = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})\Z"
)


def rfc3339_parse(value) -> datetime | None:
    """An RFC 3339 date and time with its offset; None when it is not one.
    (RFC 3339 allows a lower-case t and z, and a leap second, read as :59.)"""
    if not isinstance(value, str) or not RFC3339_RE.match(value):
        return None
    text = value.upper()
    if text[17:19] == "60":
        text = f"{text[:17]}59{text[19:]}"
    try:
        return parse_datetime(text)
    except ValueError:  # well formed, no such day or time
        return None


class StrictBooleanField(forms.Field):
    """``true`` or ``false``; an empty value is no value."""

    def to_python(self, value):
        if value in (None, ""):
            return None
        if value == "true":
            return True
        if value == "false":
            return False
        raise forms.ValidationError("Expected true or false.", code="invalid")

    def validate(self, value):
        # None is "not given"; required-ness is not a filter's concern.
        return None


class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class RFC3339Field(forms.Field):
    """An RFC 3339 date and time with its offset; empty is no value."""

    def to_python(self, value):
        if value in (None, ""):
            return None
        parsed = rfc3339_parse(value)
        if parsed is None:
            raise forms.ValidationError(
                "Expected an RFC 3339 date and time with its offset.", code="invalid"
            )
        try:
            return parsed.astimezone(UTC)  # PostgreSQL takes offsets up to 15:59
        except OverflowError:  # past year 9999 in UTC: after any time stored
            return datetime.max.replace(tzinfo=UTC)


@extend_schema_field(OpenApiTypes.DATETIME)
class DateTimeFilter(django_filters.Filter):
    """A date and time bound (``lookup_expr`` ``gte`` or ``lt``)."""

    field_class = RFC3339Field


@extend_schema_field(OpenApiTypes.INT)
class IdFilter(django_filters.NumberFilter):
    """An object's id: a whole number (an unknown id filters to nothing)."""

    field_class = forms.IntegerField


def _without_empty_values(data):
    """The query without parameters whose every value is empty."""
    cleaned = data.copy()
    for key in list(cleaned.keys()):
        values = [v for v in cleaned.getlist(key) if v != ""]
        if values:
            cleaned.setlist(key, values)
        else:
            del cleaned[key]
    return cleaned


class AllmileFilterSet(django_filters.FilterSet):
    """Base of every filter set: strict booleans, empty values ignored."""

    FILTER_DEFAULTS = {
        **django_filters.FilterSet.FILTER_DEFAULTS,
        models.BooleanField: {"filter_class": StrictBooleanFilter},
    }

    def __init__(self, data=None, *args, **kwargs):
        if data is not None:
            data = _without_empty_values(data)
        super().__init__(data, *args, **kwargs)


class StrictFilterBackend(DjangoFilterBackend):
    """``filterset_fields`` filter sets are built on ``AllmileFilterSet`` too."""

    filterset_base = AllmileFilterSet


class StrictPagination(StandardPagination):
    """Page numbers: ``page`` and ``page_size`` must be whole numbers from 1."""

    last_page_strings = ()

    def get_page_size(self, request):
        value = request.query_params.get(self.page_size_query_param, "")
        if value == "":
            return self.page_size
        return min(_positive_int(value, self.page_size_query_param), self.max_page_size)

    def get_page_number(self, request, paginator):
        value = request.query_params.get(self.page_query_param, "")
        if value == "":
            return 1
        return _positive_int(value, self.page_query_param)

    def get_schema_operation_parameters(self, view):
        return [
            {
                "name": self.page_query_param,
                "required": False,
                "in": "query",
                "description": "A page number (from 1); past the last page: 404.",
                "schema": {"type": "integer", "minimum": 1},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"Results per page (default {self.page_size}; "
                f"above {self.max_page_size} is served as {self.max_page_size}).",
                "schema": {"type": "integer", "minimum": 1},
            },
        ]


def _positive_int(value: str, name: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise ValidationError({name: ["Expected a whole number from 1."]})
    digits = value.lstrip("0")
    if not digits:
        raise ValidationError({name: ["Expected a whole number from 1."]})
    # Longer than any page count or page size: past the end either way.
    return int(digits) if len(digits) <= 18 else 10**18
