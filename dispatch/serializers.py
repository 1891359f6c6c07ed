from __future__ import annotations

from django.apps import apps
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField
from rest_framework.validators import UniqueValidator

from shipments.api_errors import rule_error
from shipments.models import SHIPMENT_SKILLS, Hub
from shipments.serializers import (
    JsonModelSerializer,
    JsonSerializer,
    StrictDateTimeField,
    StrictDecimalField,
    StrictTimeField,
    exact_regex_field,
)

from .models import Driver, Vehicle

POD_ITEMS = ["photo", "signature", "recipient_name"]
KNOWN_SKILLS = (
    SHIPMENT_SKILLS  # one vocabulary for what vehicles offer and shipments need
)


class VehicleSerializer(JsonModelSerializer):
    code = exact_regex_field(
        r"^[-a-zA-Z0-9_]{1,30}\Z",
        validators=[UniqueValidator(queryset=Vehicle.objects.all())],
    )
    home_hub = serializers.SlugRelatedField(
        slug_field="code", queryset=Hub.objects.all()
    )
    skills = serializers.ListField(
        child=serializers.ChoiceField(choices=KNOWN_SKILLS),
        required=False,
        max_length=10,
    )
    capacity_kg = StrictDecimalField(maximum=40000, places=2, positive=True)
    capacity_m3 = StrictDecimalField(maximum=120, places=3, positive=True)
    capacity_parcels = serializers.IntegerField(min_value=1, max_value=20000)
    fixed_cost = StrictDecimalField(
        maximum=1_000_000, places=2, positive=False, required=False
    )
    cost_per_km = StrictDecimalField(
        maximum=1000, places=3, positive=False, required=False
    )
    cost_per_hour = StrictDecimalField(
        maximum=10_000, places=2, positive=False, required=False
    )

    class Meta:
        model = Vehicle
        fields = [
            "id",
            "code",
            "type",
            "home_hub",
            "capacity_kg",
            "capacity_m3",
            "capacity_parcels",
            "skills",
            "fixed_cost",
            "cost_per_km",
            "cost_per_hour",
            "is_active",
        ]


class DriverSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    first_name = serializers.CharField(source="user.first_name", read_only=True)
    last_name = serializers.CharField(source="user.last_name", read_only=True)
    home_hub = serializers.SlugRelatedField(
        slug_field="code", read_only=True, allow_null=True
    )
    default_vehicle = serializers.SlugRelatedField(
        slug_field="code", read_only=True, allow_null=True
    )

    class Meta:
        model = Driver
        fields = [
            "id",
            "username",
            "first_name",
            "last_name",
            "phone",
            "home_hub",
            "default_vehicle",
            "shift_start",
            "shift_end",
            "duty_status",
            "is_active",
        ]
        read_only_fields = fields


class DriverInputSerializer(JsonSerializer):
    username = exact_regex_field(r"^[A-Za-z0-9_.@+-]{3,150}\Z")
    password = serializers.CharField(
        min_length=8,
        max_length=128,
        required=False,
        write_only=True,
        trim_whitespace=False,
    )
    first_name = serializers.CharField(max_length=150, required=False, default="")
    last_name = serializers.CharField(max_length=150, required=False, default="")
    email = serializers.EmailField(required=False, default="")
    phone = serializers.CharField(max_length=40, required=False, default="")
    home_hub = serializers.SlugRelatedField(
        slug_field="code", queryset=Hub.objects.all()
    )
    default_vehicle = serializers.SlugRelatedField(
        slug_field="code",
        queryset=Vehicle.objects.all(),
        required=False,
        allow_null=True,
    )
    shift_start = StrictTimeField()
    shift_end = StrictTimeField()

    def validate(self, attrs):
        if attrs["shift_end"] <= attrs["shift_start"]:
            raise serializers.ValidationError(
                {"shift_end": [rule_error("The shift must end after it starts.")]}
            )
        return attrs


class DriverUpdateSerializer(JsonModelSerializer):
    default_vehicle = serializers.SlugRelatedField(
        slug_field="code",
        queryset=Vehicle.objects.all(),
        required=False,
        allow_null=True,
    )
    shift_start = StrictTimeField(required=False)
    shift_end = StrictTimeField(required=False)

    class Meta:
        model = Driver
        fields = ["phone", "default_vehicle", "shift_start", "shift_end", "is_active"]

    def validate(self, attrs):
        start = attrs.get("shift_start", getattr(self.instance, "shift_start", None))
        end = attrs.get("shift_end", getattr(self.instance, "shift_end", None))
        if start and end and end <= start:
            raise serializers.ValidationError(
                {"shift_end": [rule_error("The shift must end after it starts.")]}
            )
        return attrs


# ---------------------------------------------------------------------------
# Routes as the driver app and the dashboard see them (the wire contract)
# ---------------------------------------------------------------------------

STOP_TASK_ACTIONS = ("pick_up", "deliver", "load", "unload")


def leg_action_at_stop(stop, leg) -> str:
    """What the driver does with this leg's parcels at this stop."""
    if stop.kind == "pickup":
        return "pick_up"
    if stop.kind == "delivery":
        return "deliver"
    return "load" if leg.from_hub_id == stop.hub_id else "unload"


class ParcelTaskSerializer(serializers.Serializer):
    barcode = serializers.CharField()
    shipment_id = serializers.IntegerField()
    reference = serializers.CharField()
    leg_id = serializers.IntegerField()
    action = serializers.ChoiceField(choices=STOP_TASK_ACTIONS)
    weight_kg = serializers.DecimalField(max_digits=8, decimal_places=3)


class StopTaskSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=STOP_TASK_ACTIONS)
    leg_id = serializers.IntegerField()
    leg_status = serializers.CharField()
    shipment_id = serializers.IntegerField()
    reference = serializers.CharField()
    barcodes = serializers.ListField(child=serializers.CharField())


class StopContactSerializer(serializers.Serializer):
    name = serializers.CharField()
    phone = serializers.CharField()


class RouteStopSerializer(serializers.Serializer):
    """One stop; expects ``stops_with_work()`` prefetching (no query per stop)."""

    id = serializers.IntegerField()
    sequence = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=["pickup", "delivery", "hub"])
    latitude = serializers.FloatField(source="location.latitude")
    longitude = serializers.FloatField(source="location.longitude")
    address = serializers.CharField(source="location.address")
    hub = serializers.SerializerMethodField()
    window_start = serializers.DateTimeField(allow_null=True)
    window_end = serializers.DateTimeField(allow_null=True)
    planned_arrival = serializers.DateTimeField(allow_null=True)
    eta = serializers.DateTimeField(allow_null=True)
    actual_arrival = serializers.DateTimeField(allow_null=True)
    actual_departure = serializers.DateTimeField(allow_null=True)
    service_seconds = serializers.IntegerField()
    status = serializers.ChoiceField(
        choices=["pending", "arrived", "completed", "failed", "skipped"]
    )
    parcels = serializers.SerializerMethodField()
    tasks = serializers.SerializerMethodField()
    requires = serializers.ListField(child=serializers.ChoiceField(choices=POD_ITEMS))
    notes = serializers.SerializerMethodField()
    contact = serializers.SerializerMethodField()

    def get_hub(self, stop) -> str | None:
        return stop.hub.code if stop.hub_id else None

    def _legs(self, stop):
        return [leg for leg in stop.legs.all() if leg.status != "cancelled"]

    @extend_schema_field(ParcelTaskSerializer(many=True))
    def get_parcels(self, stop):
        return [
            {
                "barcode": parcel.barcode,
                "shipment_id": leg.shipment_id,
                "reference": leg.shipment.reference,
                "leg_id": leg.pk,
                "action": leg_action_at_stop(stop, leg),
                "weight_kg": str(parcel.weight_kg),
            }
            for leg in self._legs(stop)
            for parcel in leg.shipment.parcels.all()
        ]

    @extend_schema_field(StopTaskSerializer(many=True))
    def get_tasks(self, stop):
        return [
            {
                "action": leg_action_at_stop(stop, leg),
                "leg_id": leg.pk,
                "leg_status": leg.status,
                "shipment_id": leg.shipment_id,
                "reference": leg.shipment.reference,
                "barcodes": [parcel.barcode for parcel in leg.shipment.parcels.all()],
            }
            for leg in self._legs(stop)
        ]

    def get_notes(self, stop) -> str:
        legs = self._legs(stop)
        instructions = self.context.get("instructions")
        if instructions is None:  # a stop on its own (no route around it)
            instructions = customer_instructions({leg.shipment_id for leg in legs})
        notes = [stop.notes] if stop.notes else []
        notes += [leg.shipment.notes for leg in legs if leg.shipment.notes]
        notes += [
            instructions[leg.shipment_id]
            for leg in legs
            if leg.shipment_id in instructions
        ]
        return "\n".join(dict.fromkeys(notes))  # de-duplicated, in order

    @extend_schema_field(StopContactSerializer(allow_null=True))
    def get_contact(self, stop):
        # Personal data only while the stop is still to be served.
        if stop.status not in ("pending", "arrived"):
            return None
        if not (stop.location.contact_name or stop.location.contact_phone):
            return None
        return {
            "name": stop.location.contact_name,
            "phone": stop.location.contact_phone,
        }


class RouteVehicleSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    code = serializers.CharField()
    type = serializers.CharField()


class RouteDriverSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField(source="user.username")
    name = serializers.CharField(source="__str__")


def customer_instructions(shipment_ids: set[int]) -> dict[int, str]:
    """What customers asked the driver (safe place, door code, collect at hub),
    one line per shipment. Those live in ``notifications``, an app above this
    one: read through its selector only when it is installed, and only here, at
    the edge where the route is shaped for the phone."""
    if not shipment_ids or not apps.is_installed("notifications"):
        return {}
    from notifications.selectors import delivery_instructions_for_shipments

    return delivery_instructions_for_shipments(shipment_ids)


class RouteSerializer(serializers.Serializer):
    """A route with its ordered stops: the driver app's contract (names are fixed)."""

    def to_representation(self, route):
        # Once per route (two queries), not once per stop; the stops read it
        # from the shared context.
        shipment_ids = {
            leg.shipment_id for stop in route.stops.all() for leg in stop.legs.all()
        }
        self.context["instructions"] = customer_instructions(shipment_ids)
        return super().to_representation(route)

    id = serializers.IntegerField()
    date = serializers.DateField(source="service_date")
    status = serializers.ChoiceField(
        choices=["draft", "published", "in_progress", "completed", "cancelled"]
    )
    mile = serializers.CharField()
    hub = serializers.CharField(source="hub.code")
    vehicle = RouteVehicleSerializer(allow_null=True)
    driver = RouteDriverSerializer(allow_null=True)
    planned_start = serializers.DateTimeField(allow_null=True)
    planned_end = serializers.DateTimeField(allow_null=True)
    distance_meters = serializers.IntegerField()
    duration_seconds = serializers.IntegerField()
    version = serializers.IntegerField()
    published_at = serializers.DateTimeField(allow_null=True)
    trip = serializers.SerializerMethodField()
    stops = RouteStopSerializer(many=True)

    @extend_schema_field(serializers.DictField(allow_null=True))
    def get_trip(self, route):
        trip = getattr(
            route, "trip", None
        )  # reverse one-to-one: absent for most routes
        if trip is None:
            return None
        return {
            "id": trip.pk,
            "origin_hub": trip.origin_hub.code,
            "destination_hub": trip.destination_hub.code,
            "departs_at": serializers.DateTimeField().to_representation(
                trip.departs_at
            ),
            "arrives_at": serializers.DateTimeField().to_representation(
                trip.arrives_at
            ),
        }


class RouteSummarySerializer(serializers.Serializer):
    """A route in a list: no stops, counts only."""

    id = serializers.IntegerField()
    date = serializers.DateField(source="service_date")
    status = serializers.CharField()
    mile = serializers.CharField()
    hub = serializers.CharField(source="hub.code")
    vehicle = RouteVehicleSerializer(allow_null=True)
    driver = RouteDriverSerializer(allow_null=True)
    planned_start = serializers.DateTimeField(allow_null=True)
    planned_end = serializers.DateTimeField(allow_null=True)
    stop_count = serializers.IntegerField()
    distance_meters = serializers.IntegerField()
    version = serializers.IntegerField()
    published_at = serializers.DateTimeField(allow_null=True)


# ---------------------------------------------------------------------------
# Driver API input and answers (the mobile app's contract)
# ---------------------------------------------------------------------------

DEVICE_ID_FIELD = {"max_length": 100, "min_length": 1}


class DriverEventItemSerializer(JsonSerializer):
    """One event. ``type``, ``reason`` and ``barcode`` are judged per item (a bad one
    is stored as rejected); identity fields must be well formed to be stored."""

    event_id = serializers.UUIDField()
    seq = serializers.IntegerField(min_value=0, max_value=2**53)
    type = serializers.CharField(
        max_length=40,
        help_text="route_started, arrived, scanned, "
        "picked_up, delivered, delivery_failed, departed, hub_scan_in, "
        "hub_scan_out or route_finished",
    )
    occurred_at = StrictDateTimeField()
    stop_id = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=2**62
    )
    route_id = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=2**62
    )
    barcode = serializers.CharField(
        required=False, allow_blank=True, max_length=64, default=""
    )
    reason = serializers.CharField(
        required=False, allow_blank=True, max_length=40, default=""
    )
    latitude = serializers.FloatField(
        required=False, allow_null=True, min_value=-90, max_value=90
    )
    longitude = serializers.FloatField(
        required=False, allow_null=True, min_value=-180, max_value=180
    )


class DriverEventBatchSerializer(JsonSerializer):
    device_id = serializers.CharField(**DEVICE_ID_FIELD)
    events = DriverEventItemSerializer(many=True, min_length=1, max_length=500)

    # An item repeated inside one batch is answered as a duplicate, never a 400:
    # a 400 would block the phone's offline queue for good.


class DriverEventOriginalSerializer(serializers.Serializer):
    event_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=["applied", "rejected"])
    reason = serializers.CharField(required=False)


class DriverEventResultSerializer(serializers.Serializer):
    event_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=["applied", "duplicate", "rejected"])
    reason = serializers.CharField(required=False)
    detail = serializers.CharField(required=False)
    current_state = serializers.DictField(required=False)
    original = DriverEventOriginalSerializer(required=False)


class DriverEventBatchResultSerializer(serializers.Serializer):
    results = DriverEventResultSerializer(many=True)


class PingItemSerializer(serializers.Serializer):
    # Ranges are judged per item by the service (an implausible fix is rejected
    # with a reason, not the whole batch); only the types are checked here.
    latitude = serializers.FloatField()
    longitude = serializers.FloatField()
    accuracy = serializers.FloatField(help_text="metres")
    speed = serializers.FloatField(required=False, allow_null=True, help_text="m/s")
    heading = serializers.FloatField(
        required=False, allow_null=True, help_text="degrees"
    )
    recorded_at = serializers.DateTimeField()


def ping_item_validate(raw) -> tuple[dict | None, dict | None]:
    """One ping item through PingItemSerializer's own fields: the same rules,
    without building a serializer per item on the busiest endpoint (measured:
    most of the view's time went to serializer construction)."""
    if not isinstance(raw, dict):
        return None, {"non_field_errors": ["Expected an object."]}
    data, errors = {}, {}
    for name, field_ in _PING_FIELDS.items():
        try:
            data[name] = field_.run_validation(field_.get_value(raw))
        except SkipField:
            continue
        except serializers.ValidationError as exc:
            errors[name] = exc.detail
    return (None, errors) if errors else (data, None)


_PING_FIELDS = PingItemSerializer().fields


class PingItemField(serializers.DictField):
    """One fix, shaped as PingItem. Each fix is judged alone, so the schema
    admits any object too: a fix with a field missing or of the wrong type, or
    an implausible one (out of range, in the future, too fast), is rejected by
    its index with a reason, and the rest of the batch is stored."""

    def openapi_schema(self, auto_schema) -> dict:
        shape = auto_schema.resolve_serializer(PingItemSerializer(), "request")
        return {
            "anyOf": [shape.ref, {"type": "object"}],
            "description": "A fix shaped as PingItem; any other object is "
            "rejected alone, by its index, and the rest of the batch is stored.",
        }


class PingBatchSerializer(JsonSerializer):
    device_id = serializers.CharField(**DEVICE_ID_FIELD)
    pings = serializers.ListField(child=PingItemField(), min_length=1, max_length=500)


class PingRejectionSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    reason = serializers.CharField()


class PingBatchResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = PingRejectionSerializer(many=True)


class PodInputSerializer(serializers.Serializer):
    """A multipart form: a field left out has no value (a form cannot send null)."""

    photo = serializers.FileField(required=False, allow_empty_file=True)
    signature = serializers.FileField(required=False, allow_empty_file=True)
    recipient_name = serializers.CharField(
        required=False, allow_blank=True, max_length=120, default=""
    )
    note = serializers.CharField(
        required=False, allow_blank=True, max_length=500, default=""
    )
    latitude = serializers.FloatField(required=False, min_value=-90, max_value=90)
    longitude = serializers.FloatField(required=False, min_value=-180, max_value=180)
    captured_at = StrictDateTimeField(required=False)


class ProofOfDeliverySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    stop_id = serializers.IntegerField()
    has_photo = serializers.SerializerMethodField()
    has_signature = serializers.SerializerMethodField()
    photo_url = serializers.SerializerMethodField()
    signature_url = serializers.SerializerMethodField()
    recipient_name = serializers.CharField()
    note = serializers.CharField()
    latitude = serializers.FloatField(allow_null=True)
    longitude = serializers.FloatField(allow_null=True)
    captured_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()

    def get_has_photo(self, pod) -> bool:
        return bool(pod.photo)

    def get_has_signature(self, pod) -> bool:
        return bool(pod.signature)

    def get_photo_url(self, pod) -> str | None:
        return f"/api/v1/pods/{pod.pk}/photo/" if pod.photo else None

    def get_signature_url(self, pod) -> str | None:
        return f"/api/v1/pods/{pod.pk}/signature/" if pod.signature else None


class DutyInputSerializer(JsonSerializer):
    status = serializers.ChoiceField(choices=["on_duty", "break", "off_duty"])
    occurred_at = StrictDateTimeField(required=False, allow_null=True)


class DriverShipmentSerializer(serializers.Serializer):
    """A shipment as its driver sees it: what is needed to carry it, nothing more."""

    id = serializers.IntegerField()
    reference = serializers.CharField()
    status = serializers.CharField()
    current_mile = serializers.CharField()
    parcel_count = serializers.IntegerField()
    total_weight_kg = serializers.DecimalField(max_digits=10, decimal_places=3)
    notes = serializers.CharField()
    barcodes = serializers.SerializerMethodField()

    def get_barcodes(self, shipment) -> list[str]:
        return [parcel.barcode for parcel in shipment.parcels.all()]


# ---------------------------------------------------------------------------
# Dispatcher operations
# ---------------------------------------------------------------------------


class RouteAssignInputSerializer(JsonSerializer):
    driver_id = serializers.IntegerField(min_value=1, max_value=2**62)
    vehicle_id = serializers.IntegerField(min_value=1, max_value=2**62)


class RoutesPublishInputSerializer(JsonSerializer):
    date = serializers.DateField()
    hub = serializers.SlugRelatedField(
        slug_field="code", queryset=Hub.objects.all(), required=False, allow_null=True
    )


class RoutesPublishResultSerializer(serializers.Serializer):
    published = serializers.ListField(child=serializers.IntegerField())
    failed = serializers.ListField(child=serializers.DictField())
    unassigned = serializers.ListField(child=serializers.IntegerField())


class StopReassignInputSerializer(JsonSerializer):
    route_id = serializers.IntegerField(min_value=1, max_value=2**62)
    position = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=10_000
    )


class RouteEventSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    type = serializers.CharField()
    source = serializers.CharField()
    actor = serializers.CharField(
        source="actor.username", allow_null=True, default=None
    )
    occurred_at = serializers.DateTimeField(allow_null=True)
    recorded_at = serializers.DateTimeField()
    payload = serializers.DictField()


class LocationPingSerializer(serializers.Serializer):
    latitude = serializers.FloatField()
    longitude = serializers.FloatField()
    accuracy_meters = serializers.FloatField()
    speed_mps = serializers.FloatField(allow_null=True)
    heading_degrees = serializers.FloatField(allow_null=True)
    recorded_at = serializers.DateTimeField()


class DispatchConflictSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    route_id = serializers.IntegerField(allow_null=True)
    stop_id = serializers.IntegerField(allow_null=True)
    kind = serializers.CharField()
    detail = serializers.CharField()
    payload = serializers.DictField()
    created_at = serializers.DateTimeField()
    resolved_at = serializers.DateTimeField(allow_null=True)


class TripSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    route_id = serializers.IntegerField()
    origin_hub = serializers.CharField(source="origin_hub.code")
    destination_hub = serializers.CharField(source="destination_hub.code")
    departs_at = serializers.DateTimeField()
    arrives_at = serializers.DateTimeField()
    status = serializers.CharField(source="route.status")
    driver = RouteDriverSerializer(source="route.driver", allow_null=True)
    vehicle = RouteVehicleSerializer(source="route.vehicle", allow_null=True)
    leg_count = serializers.IntegerField()


class TripsPlanInputSerializer(JsonSerializer):
    date = serializers.DateField()


class TripsPlanResultSerializer(serializers.Serializer):
    trips = serializers.ListField(
        child=serializers.IntegerField(), help_text="route ids"
    )
    consolidated = serializers.DictField(
        child=serializers.ListField(child=serializers.IntegerField())
    )
    waiting = serializers.ListField(child=serializers.DictField())


class InsertionInputSerializer(JsonSerializer):
    shipment_id = serializers.IntegerField(min_value=1, max_value=2**62)
    time_budget_seconds = serializers.FloatField(min_value=0.5, max_value=30, default=5)


class InsertionResultSerializer(serializers.Serializer):
    shipment_id = serializers.IntegerField()
    method = serializers.ChoiceField(choices=["optimizer", "cheapest_insertion"])
    route_id = serializers.IntegerField()
    stop_id = serializers.IntegerField()
    search_seconds = serializers.FloatField()
    cost_before = serializers.FloatField()
    cost_after = serializers.FloatField()
    relaxed_windows = serializers.ListField(child=serializers.IntegerField())
    optimizer_note = serializers.CharField(allow_blank=True)
