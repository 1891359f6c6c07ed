"""OpenAPI schema generation shared by every app.

The schema is the API's contract (clients and the R19 fuzzer read it), so what
every operation has in common is declared here once, from what the operation
is, rather than by hand on each view:

* the error answers it can actually give (see ``shipments.api_errors``), with
  one ``Error`` body: 400 with parameters or a body, 401/403 unless public,
  404 with a path parameter or pages, 409/422 on writes, 413/415 with a body,
  429 on public operations, 503 everywhere (the database restarting);
* the ``Idempotency-Key`` header on every POST that honours it (required where
  the view requires it);
* optional query parameters may be sent empty (``allowEmptyValue``): list
  filters and query serializers read an empty value as "not given";
* times are ``HH:MM[:SS]`` (a pattern: the ``time`` format means RFC 3339's
  time with an offset, which these local times never carry), and strings never
  hold a NUL character (PostgreSQL cannot store one; the API refuses it).
"""

from __future__ import annotations

import copy
import inspect
from importlib import import_module

from django.conf import settings
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework import serializers

from .api_errors import not_found
from .idempotency import HEADER as IDEMPOTENCY_HEADER
from .idempotency import MAX_KEY_LENGTH, idempotent

TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?$"
NO_NUL_PATTERN = r"^[^\x00]*$"
# White space as Python's str.strip() sees it (the API trims texts with it).
# Spelled out: "\s" differs between regex engines (\x1c-\x1f, \x85, \ufeff).
TRIMMED = (
    r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)
# A required text: something besides white space.
NOT_BLANK_PATTERN = rf"^[^\x00]*[^\x00{TRIMMED}][^\x00]*$"
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# The Idempotency-Key as the server reads it: trimmed (HTTP trims a header's
# edges anyway); an empty optional key is no key; a required one needs a
# character besides white space.
KEY_SCHEMA_OPTIONAL = {"type": "string", "maxLength": MAX_KEY_LENGTH}
KEY_SCHEMA_REQUIRED = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_KEY_LENGTH,
    "pattern": r"\S",
}
# Text fields whose own validator states their shape keep that pattern.
SHAPED_TEXT_FIELDS = (
    serializers.EmailField,
    serializers.RegexField,
    serializers.SlugField,
    serializers.URLField,
    serializers.IPAddressField,
)

ERROR_SCHEMA = {
    "type": "object",
    "description": "An error: `detail` (and usually a `code`) for one message; "
    "field errors keyed by the field's name (a list of messages, or nested "
    "errors for a nested object) otherwise. A field may be called `code`, so "
    "only `detail` has a fixed type.",
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": True,
}
ERROR_DESCRIPTIONS = {
    "400": "The request does not fit its schema: field errors say where.",
    "401": "No valid credentials (`Authorization: Token …`).",
    "403": "Signed in, without the role this operation needs.",
    "404": "No such object (or not yours: the same answer), no such page, or "
    "a path that matches nothing.",
    "409": "It conflicts with the current state: a move the state machine "
    "forbids, a value that must be unique, the same Idempotency-Key in flight.",
    "413": "The body is too large (JSON over 1 MB, other bodies over 10 MB).",
    "415": "The body's Content-Type is not one this operation reads.",
    "422": "Well formed, but a rule refuses it: a referenced object that does "
    "not exist, a rule across fields, a domain refusal, or an Idempotency-Key "
    "already used with another body.",
    "429": "Too many requests from this client; retry in a minute.",
    "503": "The database is briefly unavailable and nothing was stored; retry "
    "(writes with the same Idempotency-Key).",
}

# Every view decorated with ``idempotent`` runs this one wrapper's code.
_IDEMPOTENT_CODE = idempotent(lambda self, request: None).__code__


class AllmileAutoSchema(AutoSchema):
    """Names nested serializers after their enclosing class, and adds what every
    operation has in common (module docstring).

    The house style nests ``InputSerializer``/``OutputSerializer`` in each API
    view; without the naming rule, every one of them would be called "Input".
    """

    def get_serializer_name(self, serializer, direction):
        name = super().get_serializer_name(serializer, direction)
        qualname = type(serializer).__qualname__
        if "." in qualname and "<locals>" not in qualname:
            outer = qualname.rsplit(".", 1)[0].replace(".", "")
            return f"{outer}{name}"
        return name

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema_of = getattr(field, "openapi_schema", None)
        if callable(schema_of):  # a field that states its own schema
            return schema_of(self)
        if (
            direction == "request"
            and self.method == "PATCH"
            and isinstance(field, serializers.Serializer)
            and not field.partial
        ):
            # DRF reads a nested object partially on PATCH too: so does the schema.
            field = copy.copy(field)
            field.partial = True
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if not isinstance(schema, dict):
            return schema
        if (
            direction == "request"
            and isinstance(field, serializers.CharField)
            and not isinstance(field, SHAPED_TEXT_FIELDS)
            and not field.allow_blank
            and schema.get("type") == "string"
            and not ({"pattern", "format", "enum"} & schema.keys())
        ):
            schema["pattern"] = NOT_BLANK_PATTERN
        if isinstance(field, serializers.ListSerializer):
            _list_bounds(schema, field)
        return schema

    def _get_request_for_media_type(self, serializer, direction="request"):
        schema, required = super()._get_request_for_media_type(serializer, direction)
        if isinstance(serializer, serializers.ListSerializer) and isinstance(
            schema, dict
        ):
            _list_bounds(schema, serializer)
        return schema, required

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(
            path, path_regex, path_prefix, method, registry
        )
        if operation is None:
            return None
        self._add_idempotency_header(operation)
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "query" and not parameter.get("required"):
                parameter["allowEmptyValue"] = True
        self._add_error_responses(operation)
        return operation

    def _handler(self):
        action = getattr(self.view, "action", None)
        return getattr(self.view, action or self.method.lower(), None)

    def _add_idempotency_header(self, operation) -> None:
        handler = self._handler()
        if getattr(handler, "__code__", None) is not _IDEMPOTENT_CODE:
            return
        parameters = operation.setdefault("parameters", [])
        if any(
            p["in"] == "header" and p["name"] == IDEMPOTENCY_HEADER for p in parameters
        ):
            return
        required = inspect.getclosurevars(handler).nonlocals.get("required", False)
        parameters.append(
            {
                "in": "header",
                "name": IDEMPOTENCY_HEADER,
                "schema": dict(
                    KEY_SCHEMA_REQUIRED if required else KEY_SCHEMA_OPTIONAL
                ),
                "required": required,
                "description": "A retry with the same key returns the first answer "
                "and changes nothing; the same key with another body answers 422.",
            }
        )

    def _add_error_responses(self, operation) -> None:
        parameters = operation.get("parameters", [])
        has_body = "requestBody" in operation
        has_input = has_body or any(p["in"] in ("query", "header") for p in parameters)
        has_path = any(p["in"] == "path" for p in parameters)
        paginated = any(p["in"] == "query" and p["name"] == "page" for p in parameters)
        security = operation.get("security", [])
        public = not security or {} in security
        unsafe = self.method in UNSAFE_METHODS
        codes = [
            ("400", has_input),
            ("401", not public),
            ("403", not public),
            ("404", has_path or paginated),
            ("409", unsafe),
            ("413", has_body),
            ("415", has_body),
            ("422", unsafe),
            ("429", public),
            ("503", True),
        ]
        ref = self._error_component().ref
        responses = operation["responses"]
        for code, applies in codes:
            if applies and code not in responses:
                responses[code] = {
                    "description": ERROR_DESCRIPTIONS[code],
                    "content": {"application/json": {"schema": ref}},
                }
        if has_path and not _unmatched_paths_answer_json():
            # A malformed id matches no route, and Django's own 404 page answers.
            responses["404"]["content"]["text/html"] = {"schema": {"type": "string"}}

    def _error_component(self) -> ResolvedComponent:
        component = ResolvedComponent(
            name="Error",
            type=ResolvedComponent.SCHEMA,
            object="allmile-error",
            schema=ERROR_SCHEMA,
        )
        self.registry.register_on_missing(component)
        return component


def _unmatched_paths_answer_json() -> bool:
    """Whether the root URLconf answers unmatched paths with ``api_errors.not_found``
    (``handler404``); until it does, such a 404 is Django's HTML page."""
    urlconf = import_module(settings.ROOT_URLCONF)
    handler = getattr(urlconf, "handler404", None)
    return handler in (not_found, "shipments.api_errors.not_found")


def _list_bounds(schema: dict, serializer) -> None:
    """``many=True`` serializers' item counts (DRF checks them; the schema says so)."""
    if serializer.min_length is not None:
        schema["minItems"] = serializer.min_length
    elif not serializer.allow_empty:
        schema["minItems"] = 1
    if serializer.max_length is not None:
        schema["maxItems"] = serializer.max_length


def postprocess_strings(result, generator, **kwargs):
    """Times as ``HH:MM[:SS]`` patterns, and no NUL in any free string."""
    _strings_walk(result)
    return result


def _strings_walk(node) -> None:
    if isinstance(node, list):
        for item in node:
            _strings_walk(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "string":
        if node.get("format") == "time":
            del node["format"]
            node["pattern"] = TIME_PATTERN
        elif not ({"pattern", "format", "enum"} & node.keys()):
            node["pattern"] = NO_NUL_PATTERN
    for key, value in node.items():
        if key not in ("example", "examples", "default", "enum"):
            _strings_walk(value)
