"""Shapes of the shipments API. Validation only; the work is in services."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.http import QueryDict
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail
from rest_framework.validators import UniqueValidator

from .api_errors import rule_error, unique_error
from .filters import rfc3339_parse
from .models import (
    SHIPMENT_SKILLS,
    Hub,
    Leg,
    Location,
    Parcel,
    Party,
    Shipment,
    ShipmentEvent,
)
from .schema import TIME_PATTERN
from .services import hub_save
from .tracking_tokens import tracking_url

MAX_PARCEL_WEIGHT_KG = Decimal("1000")
MAX_PARCEL_VOLUME_M3 = Decimal("20")
MAX_PARCELS_PER_SHIPMENT = 200

TIME_RE = re.compile(TIME_PATTERN)


def _integers_upto(n: int, *, from_one: bool = False) -> list[str]:
    """Regex alternatives for the integers 0..n (1..n), written without
    leading zeros."""
    digits = str(n)
    width = len(digits)
    if width == 1:
        return [f"[{1 if from_one else 0}-{n}]"] if n >= (1 if from_one else 0) else []
    alternatives = [r"[1-9]" if from_one else r"[0-9]"]
    if width > 2:
        alternatives.append(rf"[1-9][0-9]{{1,{width - 2}}}")
    for i, char in enumerate(digits):
        lowest = 1 if i == 0 else 0
        if int(char) > lowest:
            rest = width - i - 1
            tail = rf"[0-9]{{{rest}}}" if rest else ""
            alternatives.append(f"{digits[:i]}[{lowest}-{int(char) - 1}]{tail}")
    alternatives.append(digits)
    return alternatives


def decimal_pattern(*, maximum: int, places: int, positive: bool) -> str:
    """The exact set of decimal strings from 0 (or above 0) to ``maximum``
    with at most ``places`` decimals: plain digits, no sign, no exponent, no
    leading zero."""
    fraction = rf"(?:\.[0-9]{{1,{places}}})?"
    below = _integers_upto(maximum - 1, from_one=positive)
    alternatives = [f"(?:{'|'.join(below)}){fraction}"] if below else []
    if positive:  # 0.x with at least one non-zero decimal
        small = [
            "0" * zeros + rf"[1-9][0-9]{{0,{places - zeros - 1}}}"
            for zeros in range(places)
        ]
        alternatives.append(rf"0\.(?:{'|'.join(small)})")
    alternatives.append(rf"{maximum}(?:\.0{{1,{places}}})?")
    return f"^(?:{'|'.join(alternatives)})$"


class StrictDecimalField(serializers.DecimalField):
    """A quantity: a decimal string (``"2.500"``) matching ``decimal_pattern``,
    or a JSON number in range (rounded to the field's places). The schema
    states exactly this, so "valid by the schema" and "accepted" agree."""

    def __init__(self, *, maximum: int, places: int, positive: bool, **kwargs):
        self.pattern = decimal_pattern(
            maximum=maximum, places=places, positive=positive
        )
        self.regex = re.compile(self.pattern)
        self.step = Decimal(1).scaleb(-places)
        self.schema_minimum = self.step if positive else Decimal(0)
        super().__init__(
            max_digits=len(str(maximum)) + places,
            decimal_places=places,
            min_value=self.schema_minimum,
            max_value=Decimal(maximum),
            **kwargs,
        )

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, str | int | float):
            self.fail("invalid")
        if isinstance(data, str):
            if not self.regex.match(data):
                self.fail("invalid")
            return super().to_internal_value(data)
        value = Decimal(repr(data)) if isinstance(data, float) else Decimal(data)
        if not value.is_finite():
            self.fail("invalid")
        if not self.schema_minimum <= value <= self.max_value:
            self.fail("invalid")
        return super().to_internal_value(
            str(value.quantize(self.step, rounding=ROUND_HALF_UP))
        )

    def openapi_schema(self, auto_schema) -> dict:
        return {
            "anyOf": [
                {"type": "string", "format": "decimal", "pattern": self.pattern},
                {
                    "type": "number",
                    "minimum": float(self.schema_minimum),
                    "maximum": float(self.max_value),
                },
            ]
        }


def json_type_problem(field, value) -> str | None:
    """What is wrong with a JSON value's type for ``field``; None when fine."""
    if value is None or isinstance(
        field, serializers.BaseSerializer | StrictDecimalField | serializers.JSONField
    ):
        return None  # null: the field's allow_null decides; the rest check themselves
    if isinstance(field, serializers.BooleanField):
        return None if isinstance(value, bool) else "Expected true or false."
    if isinstance(field, serializers.IntegerField | serializers.PrimaryKeyRelatedField):
        whole = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
        return None if whole else "Expected a whole number."
    if isinstance(field, serializers.FloatField):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return None if number else "Expected a number."
    if isinstance(field, serializers.ListField):
        if not isinstance(value, list):
            return "Expected a list."
        problems = (json_type_problem(field.child, item) for item in value)
        return next((p for p in problems if p), None)
    if isinstance(field, serializers.DictField):
        return None if isinstance(value, dict) else "Expected an object."
    if isinstance(field, serializers.MultipleChoiceField):
        texts = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return None if texts else "Expected a list of texts."
    if isinstance(field, serializers.SlugRelatedField) and value == "":
        return "This field may not be blank."  # DRF would read "" as null
    textual = (
        serializers.CharField,
        serializers.ChoiceField,
        serializers.SlugRelatedField,
        serializers.DateField,
        serializers.DateTimeField,
        serializers.TimeField,
        serializers.UUIDField,
    )
    if isinstance(field, textual):
        return None if isinstance(value, str) else "Expected a text."
    return None


class JsonTypesMixin:
    """JSON bodies are typed as the schema says: text where text is expected,
    numbers where numbers are, true or false for booleans. (DRF would read 5 as
    "5" and "yes" as true.) Forms and query strings carry only text and are
    read the usual way."""

    def to_internal_value(self, data):
        if isinstance(data, dict) and not isinstance(data, QueryDict):
            errors = {}
            for field in self._writable_fields:
                if field.field_name in data:
                    problem = json_type_problem(field, data[field.field_name])
                    if problem:
                        errors[field.field_name] = [
                            ErrorDetail(problem, code="invalid")
                        ]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class JsonSerializer(JsonTypesMixin, serializers.Serializer):
    """Base of request body serializers."""


class JsonModelSerializer(JsonTypesMixin, serializers.ModelSerializer):
    """Base of model serializers that also read request bodies."""


EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2100, 1, 1, tzinfo=UTC)


class StrictDateTimeField(serializers.DateTimeField):
    """An RFC 3339 date and time, with its offset (as the schema's
    ``date-time`` says), from 2000 to 2100 (a time outside is no time this
    system handles: refused by rule)."""

    def to_internal_value(self, value):
        parsed = rfc3339_parse(value)
        if parsed is None:
            self.fail("invalid", format="YYYY-MM-DDThh:mm:ss[.f]±hh:mm or Z")
        value = parsed.isoformat()  # the normalised spelling
        try:
            plausible = EARLIEST_TIME <= parsed < LATEST_TIME
        except OverflowError:
            plausible = False
        if not plausible:
            raise serializers.ValidationError(
                [rule_error("Only times from 2000 to 2099 are accepted.")]
            )
        return super().to_internal_value(value)


def exact_regex_field(pattern: str, **kwargs) -> serializers.RegexField:
    """A text that must match ``pattern`` as sent: not trimmed, and ended with
    ``\\Z`` (``$`` would let a final newline through), so the server accepts
    exactly what the schema's pattern does. Patterns use ASCII classes
    (``[0-9]``, not ``\\d``) so every regex engine reads them alike."""
    return serializers.RegexField(pattern, trim_whitespace=False, **kwargs)


class StrictTimeField(serializers.TimeField):
    """A local time, ``HH:MM`` or ``HH:MM:SS`` (no offset)."""

    def to_internal_value(self, value):
        if not isinstance(value, str) or not TIME_RE.match(value):
            self.fail("invalid", format="HH:MM[:SS]")
        return super().to_internal_value(value)


class LocationSerializer(JsonModelSerializer):
    latitude = serializers.FloatField(min_value=-90, max_value=90)
    longitude = serializers.FloatField(min_value=-180, max_value=180)

    class Meta:
        model = Location
        fields = [
            "address",
            "latitude",
            "longitude",
            "contact_name",
            "contact_phone",
            "contact_email",
        ]


HH_MM_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]\Z"
WEEK_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class OpeningHoursField(serializers.JSONField):
    """``{"mon": ["08:00", "18:00"], …}``: a day left out is closed."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("invalid")
        for day, hours in data.items():
            if day not in WEEK_DAYS:
                raise serializers.ValidationError(
                    f"Unknown day '{day}'; days are {', '.join(WEEK_DAYS)}."
                )
            if not (
                isinstance(hours, list)
                and len(hours) == 2
                and all(
                    isinstance(h, str) and re.match(HH_MM_PATTERN, h) for h in hours
                )
            ):
                raise serializers.ValidationError(
                    f'\'{day}\' must be ["HH:MM", "HH:MM"].'
                )
        return data

    def openapi_schema(self, auto_schema) -> dict:
        hours = {
            "type": "array",
            "items": {"type": "string", "pattern": HH_MM_PATTERN.replace("\\Z", "$")},
            "minItems": 2,
            "maxItems": 2,
        }
        return {
            "type": "object",
            "properties": dict.fromkeys(WEEK_DAYS, hours),
            "additionalProperties": False,
            "description": "Opening and closing time per day; a day left out is closed.",
        }


class HubSerializer(JsonModelSerializer):
    location = LocationSerializer()
    code = exact_regex_field(
        r"^[-a-zA-Z0-9_]{1,20}\Z",
        validators=[UniqueValidator(queryset=Hub.objects.all())],
    )
    cutoff_times = serializers.ListField(
        child=exact_regex_field(HH_MM_PATTERN), required=False, max_length=48
    )
    opening_hours = OpeningHoursField(required=False)

    class Meta:
        model = Hub
        fields = [
            "id",
            "code",
            "name",
            "kind",
            "location",
            "opening_hours",
            "cutoff_times",
            "service_radius_km",
            "handling_minutes",
            "is_active",
        ]

    def create(self, validated_data):
        return hub_save(hub=None, **validated_data)

    def update(self, instance, validated_data):
        return hub_save(hub=instance, **validated_data)


class PartySerializer(JsonModelSerializer):
    language = serializers.ChoiceField(choices=settings.LANGUAGES, default="en")

    class Meta:
        model = Party
        fields = ["id", "name", "kind", "email", "phone", "language"]


class ConsigneeInputSerializer(JsonSerializer):
    name = serializers.CharField(max_length=160)
    email = serializers.EmailField(required=False, allow_blank=True)
    phone = serializers.CharField(max_length=40, required=False, allow_blank=True)
    language = serializers.ChoiceField(choices=settings.LANGUAGES, default="en")


class ParcelSerializer(JsonModelSerializer):
    weight_kg = StrictDecimalField(
        maximum=int(MAX_PARCEL_WEIGHT_KG), places=3, positive=True
    )
    volume_m3 = StrictDecimalField(
        maximum=int(MAX_PARCEL_VOLUME_M3),
        places=4,
        positive=False,
        required=False,
        default=Decimal(0),
    )
    barcode = exact_regex_field(r"^[A-Za-z0-9\-_.]{4,64}\Z", required=False)

    class Meta:
        model = Parcel
        fields = ["barcode", "weight_kg", "volume_m3", "description"]
        extra_kwargs = {"barcode": {"validators": []}}


class LegSerializer(serializers.ModelSerializer):
    from_hub = serializers.SlugRelatedField(
        slug_field="code", read_only=True, allow_null=True
    )
    to_hub = serializers.SlugRelatedField(
        slug_field="code", read_only=True, allow_null=True
    )
    from_address = serializers.CharField(source="from_location.address", read_only=True)
    to_address = serializers.CharField(source="to_location.address", read_only=True)

    class Meta:
        model = Leg
        fields = [
            "id",
            "shipment",
            "sequence",
            "mile",
            "mode",
            "status",
            "from_hub",
            "to_hub",
            "from_address",
            "to_address",
            "depends_on",
            "planned_departure",
            "planned_arrival",
            "actual_departure",
            "actual_arrival",
            "eta",
            "attempt_count",
        ]
        read_only_fields = fields


class ShipmentSerializer(serializers.ModelSerializer):
    """Output shape of a shipment for dispatchers."""

    shipper = PartySerializer(read_only=True)
    consignee = PartySerializer(read_only=True)
    origin = LocationSerializer(read_only=True)
    destination = LocationSerializer(read_only=True)
    origin_hub = serializers.SlugRelatedField(
        slug_field="code", read_only=True, allow_null=True
    )
    destination_hub = serializers.SlugRelatedField(
        slug_field="code", read_only=True, allow_null=True
    )
    parcels = ParcelSerializer(many=True, read_only=True)
    legs = LegSerializer(many=True, read_only=True)

    class Meta:
        model = Shipment
        fields = [
            "id",
            "reference",
            "shipper",
            "consignee",
            "origin",
            "destination",
            "origin_hub",
            "destination_hub",
            "service_level",
            "pickup_window_start",
            "pickup_window_end",
            "delivery_window_start",
            "delivery_window_end",
            "promised_by",
            "notes",
            "required_skills",
            "is_return",
            "original_shipment",
            "parcel_count",
            "total_weight_kg",
            "total_volume_m3",
            "status",
            "current_mile",
            "is_at_risk",
            "eta",
            "completed_at",
            "parcels",
            "legs",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class ShipmentCreatedSerializer(ShipmentSerializer):
    tracking_url = serializers.SerializerMethodField()

    class Meta(ShipmentSerializer.Meta):
        fields = [*ShipmentSerializer.Meta.fields, "tracking_url"]
        read_only_fields = fields

    def get_tracking_url(self, obj) -> str:
        return tracking_url(self.context["tracking_token"])


class ShipmentInputSerializer(JsonSerializer):
    reference = exact_regex_field(r"^[A-Za-z0-9\-_./#]{1,64}\Z")
    shipper = serializers.PrimaryKeyRelatedField(queryset=Party.objects.all())
    consignee = ConsigneeInputSerializer()
    origin = LocationSerializer()
    destination = LocationSerializer()
    origin_hub = serializers.SlugRelatedField(
        slug_field="code", queryset=Hub.objects.filter(is_active=True), required=False
    )
    destination_hub = serializers.SlugRelatedField(
        slug_field="code", queryset=Hub.objects.filter(is_active=True), required=False
    )
    service_level = serializers.ChoiceField(
        choices=["same_day", "next_day", "standard"], default="standard"
    )
    pickup_window_start = StrictDateTimeField(required=False, allow_null=True)
    pickup_window_end = StrictDateTimeField(required=False, allow_null=True)
    delivery_window_start = StrictDateTimeField(required=False, allow_null=True)
    delivery_window_end = StrictDateTimeField(required=False, allow_null=True)
    promised_by = StrictDateTimeField(required=False, allow_null=True)
    notes = serializers.CharField(
        max_length=2000, required=False, allow_blank=True, default=""
    )
    is_return = serializers.BooleanField(default=False)
    required_skills = serializers.ListField(
        child=serializers.ChoiceField(choices=SHIPMENT_SKILLS),
        required=False,
        max_length=6,
    )
    parcels = ParcelSerializer(
        many=True, min_length=1, max_length=MAX_PARCELS_PER_SHIPMENT
    )

    def validate(self, attrs):
        errors = {}
        for kind in ("pickup", "delivery"):
            start, end = (
                attrs.get(f"{kind}_window_start"),
                attrs.get(f"{kind}_window_end"),
            )
            if start and end and end <= start:
                errors[f"{kind}_window_end"] = [
                    rule_error("The window must end after it starts.")
                ]
        pickup_start = attrs.get("pickup_window_start")
        delivery_end = attrs.get("delivery_window_end")
        if pickup_start and delivery_end and delivery_end <= pickup_start:
            errors["delivery_window_end"] = [
                rule_error("Delivery must end after the pickup window starts.")
            ]
        promised = attrs.get("promised_by")
        if promised and pickup_start and promised <= pickup_start:
            errors["promised_by"] = [
                rule_error("The promise must be after the pickup window starts.")
            ]
        shipper = attrs.get("shipper")
        if (
            shipper
            and Shipment.objects.filter(
                shipper=shipper, reference=attrs["reference"]
            ).exists()
        ):
            errors["reference"] = [
                unique_error("This shipper already has a shipment with this reference.")
            ]
        barcodes = [p["barcode"] for p in attrs.get("parcels", []) if p.get("barcode")]
        if len(barcodes) != len(set(barcodes)):
            errors["parcels"] = [
                rule_error("Parcel barcodes must be unique within the shipment.")
            ]
        elif barcodes and Parcel.objects.filter(barcode__in=barcodes).exists():
            errors["parcels"] = [unique_error("A parcel barcode is already in use.")]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class ShipmentEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(
        source="actor.username", read_only=True, default=None, allow_null=True
    )

    class Meta:
        model = ShipmentEvent
        fields = [
            "id",
            "type",
            "leg",
            "actor",
            "source",
            "occurred_at",
            "recorded_at",
            "latitude",
            "longitude",
            "payload",
        ]
        read_only_fields = fields


class LegTransitionInputSerializer(JsonSerializer):
    to = serializers.ChoiceField(
        choices=[c[0] for c in Leg._meta.get_field("status").choices]
    )
    reason = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default=""
    )


class ShipmentCancelInputSerializer(JsonSerializer):
    reason = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default=""
    )


class ShipmentReplanInputSerializer(JsonSerializer):
    destination = LocationSerializer(required=False)
    destination_hub = serializers.SlugRelatedField(
        slug_field="code", queryset=Hub.objects.filter(is_active=True), required=False
    )


class TrackingLinkSerializer(serializers.Serializer):
    tracking_url = serializers.URLField()
