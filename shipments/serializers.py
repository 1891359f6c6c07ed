"""Shapes of the shipments API. Validation only; the work is in services."""

from __future__ import annotations

from decimal import Decimal

from rest_framework import serializers

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
from .services import hub_save
from .tracking_tokens import tracking_url

MAX_PARCEL_WEIGHT_KG = Decimal("1000")
MAX_PARCEL_VOLUME_M3 = Decimal("20")
MAX_PARCELS_PER_SHIPMENT = 200


class LocationSerializer(serializers.ModelSerializer):
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


class HubSerializer(serializers.ModelSerializer):
    location = LocationSerializer()
    cutoff_times = serializers.ListField(
        child=serializers.RegexField(r"^([01]\d|2[0-3]):[0-5]\d$"), required=False
    )

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

    def validate_opening_hours(self, value):
        days = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"}
        if not isinstance(value, dict):
            raise serializers.ValidationError(
                "Expected an object keyed by day (mon…sun)."
            )
        for day, hours in value.items():
            if day not in days:
                raise serializers.ValidationError(f"Unknown day '{day}'.")
            if not (
                isinstance(hours, list)
                and len(hours) == 2
                and all(isinstance(h, str) for h in hours)
            ):
                raise serializers.ValidationError(
                    f'\'{day}\' must be ["HH:MM", "HH:MM"].'
                )
        return value

    def create(self, validated_data):
        return hub_save(hub=None, **validated_data)

    def update(self, instance, validated_data):
        return hub_save(hub=instance, **validated_data)


class PartySerializer(serializers.ModelSerializer):
    class Meta:
        model = Party
        fields = ["id", "name", "kind", "email", "phone", "language"]


class ConsigneeInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=160)
    email = serializers.EmailField(required=False, allow_blank=True)
    phone = serializers.CharField(max_length=40, required=False, allow_blank=True)
    language = serializers.ChoiceField(choices=["en", "fr"], default="en")


class ParcelSerializer(serializers.ModelSerializer):
    weight_kg = serializers.DecimalField(
        max_digits=8,
        decimal_places=3,
        min_value=Decimal("0.001"),
        max_value=MAX_PARCEL_WEIGHT_KG,
    )
    volume_m3 = serializers.DecimalField(
        max_digits=8,
        decimal_places=4,
        min_value=Decimal(0),
        max_value=MAX_PARCEL_VOLUME_M3,
        required=False,
        default=Decimal(0),
    )
    barcode = serializers.RegexField(r"^[A-Za-z0-9\-_.]{4,64}$", required=False)

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


class ShipmentInputSerializer(serializers.Serializer):
    reference = serializers.RegexField(r"^[A-Za-z0-9\-_./#]{1,64}$")
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
    pickup_window_start = serializers.DateTimeField(required=False, allow_null=True)
    pickup_window_end = serializers.DateTimeField(required=False, allow_null=True)
    delivery_window_start = serializers.DateTimeField(required=False, allow_null=True)
    delivery_window_end = serializers.DateTimeField(required=False, allow_null=True)
    promised_by = serializers.DateTimeField(required=False, allow_null=True)
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
        many=True, allow_empty=False, max_length=MAX_PARCELS_PER_SHIPMENT
    )

    def validate(self, attrs):
        errors = {}
        for kind in ("pickup", "delivery"):
            start, end = (
                attrs.get(f"{kind}_window_start"),
                attrs.get(f"{kind}_window_end"),
            )
            if start and end and end <= start:
                errors[f"{kind}_window_end"] = ["The window must end after it starts."]
        pickup_start = attrs.get("pickup_window_start")
        delivery_end = attrs.get("delivery_window_end")
        if pickup_start and delivery_end and delivery_end <= pickup_start:
            errors["delivery_window_end"] = [
                "Delivery must end after the pickup window starts."
            ]
        promised = attrs.get("promised_by")
        if promised and pickup_start and promised <= pickup_start:
            errors["promised_by"] = [
                "The promise must be after the pickup window starts."
            ]
        shipper = attrs.get("shipper")
        if (
            shipper
            and Shipment.objects.filter(
                shipper=shipper, reference=attrs["reference"]
            ).exists()
        ):
            errors["reference"] = [
                "This shipper already has a shipment with this reference."
            ]
        barcodes = [p["barcode"] for p in attrs.get("parcels", []) if p.get("barcode")]
        if len(barcodes) != len(set(barcodes)):
            errors["parcels"] = ["Parcel barcodes must be unique within the shipment."]
        elif barcodes and Parcel.objects.filter(barcode__in=barcodes).exists():
            errors["parcels"] = ["A parcel barcode is already in use."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class ShipmentEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.username", read_only=True, default=None)

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


class LegTransitionInputSerializer(serializers.Serializer):
    to = serializers.ChoiceField(
        choices=[c[0] for c in Leg._meta.get_field("status").choices]
    )
    reason = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default=""
    )


class ShipmentCancelInputSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default=""
    )


class ShipmentReplanInputSerializer(serializers.Serializer):
    destination = LocationSerializer(required=False)
    destination_hub = serializers.SlugRelatedField(
        slug_field="code", queryset=Hub.objects.filter(is_active=True), required=False
    )


class TrackingLinkSerializer(serializers.Serializer):
    tracking_url = serializers.URLField()
