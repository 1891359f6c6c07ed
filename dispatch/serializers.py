from __future__ import annotations

from decimal import Decimal

from rest_framework import serializers

from shipments.models import Hub

from .models import Driver, Vehicle

KNOWN_SKILLS = ["refrigerated", "frozen", "tail_lift", "hazmat", "bulky", "high_value"]


class VehicleSerializer(serializers.ModelSerializer):
    home_hub = serializers.SlugRelatedField(slug_field="code", queryset=Hub.objects.all())
    skills = serializers.ListField(
        child=serializers.ChoiceField(choices=KNOWN_SKILLS), required=False, max_length=10
    )
    capacity_kg = serializers.DecimalField(
        max_digits=9, decimal_places=2, min_value=Decimal("1"), max_value=Decimal("40000")
    )
    capacity_m3 = serializers.DecimalField(
        max_digits=8, decimal_places=3, min_value=Decimal("0.01"), max_value=Decimal("120")
    )
    capacity_parcels = serializers.IntegerField(min_value=1, max_value=20000)

    class Meta:
        model = Vehicle
        fields = [
            "id", "code", "type", "home_hub", "capacity_kg", "capacity_m3", "capacity_parcels",
            "skills", "fixed_cost", "cost_per_km", "cost_per_hour", "is_active",
        ]


class DriverSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    first_name = serializers.CharField(source="user.first_name", read_only=True)
    last_name = serializers.CharField(source="user.last_name", read_only=True)
    home_hub = serializers.SlugRelatedField(slug_field="code", read_only=True)
    default_vehicle = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Driver
        fields = [
            "id", "username", "first_name", "last_name", "phone", "home_hub", "default_vehicle",
            "shift_start", "shift_end", "duty_status", "is_active",
        ]
        read_only_fields = fields


class DriverInputSerializer(serializers.Serializer):
    username = serializers.RegexField(r"^[\w.@+-]{3,150}$")
    password = serializers.CharField(min_length=8, max_length=128, required=False, write_only=True)
    first_name = serializers.CharField(max_length=150, required=False, default="")
    last_name = serializers.CharField(max_length=150, required=False, default="")
    email = serializers.EmailField(required=False, default="")
    phone = serializers.CharField(max_length=40, required=False, default="")
    home_hub = serializers.SlugRelatedField(slug_field="code", queryset=Hub.objects.all())
    default_vehicle = serializers.SlugRelatedField(
        slug_field="code", queryset=Vehicle.objects.all(), required=False, allow_null=True
    )
    shift_start = serializers.TimeField()
    shift_end = serializers.TimeField()

    def validate(self, attrs):
        if attrs["shift_end"] <= attrs["shift_start"]:
            raise serializers.ValidationError({"shift_end": ["The shift must end after it starts."]})
        return attrs


class DriverUpdateSerializer(serializers.ModelSerializer):
    default_vehicle = serializers.SlugRelatedField(
        slug_field="code", queryset=Vehicle.objects.all(), required=False, allow_null=True
    )

    class Meta:
        model = Driver
        fields = ["phone", "default_vehicle", "shift_start", "shift_end", "is_active"]

    def validate(self, attrs):
        start = attrs.get("shift_start", getattr(self.instance, "shift_start", None))
        end = attrs.get("shift_end", getattr(self.instance, "shift_end", None))
        if start and end and end <= start:
            raise serializers.ValidationError({"shift_end": ["The shift must end after it starts."]})
        return attrs
