"""Customer actions on the tracking link: token-scoped, rate-limited JSON.

Each view resolves the token (unknown, revoked and expired tokens answer the
same 404 as the tracking API and count as misses), validates, calls one
service, and shapes the answer. Refusals come back as 422 with field errors
(a well-formed day or window the hub does not serve) or 409 (the shipment no
longer allows it), each with a message meant for the customer; a body that
does not fit the schema is a 400.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, Throttled
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from shipments.idempotency import idempotent
from shipments.models import Shipment
from shipments.serializers import JsonSerializer, StrictTimeField
from tracking.apis import NOT_FOUND_BODY, PUBLIC_HEADERS
from tracking.public import tracking_shipment_resolve
from tracking.throttle import tracking_miss_record, tracking_request_allowed

from .customer_actions import (
    customer_options,
    customer_rating_create,
    delivery_instruction_set,
    shipment_delivery_reschedule,
    shipment_hub_pickup_request,
    shipment_redelivery_request,
)
from .rate_limits import customer_action_limited
from .services import customer_opt_out

TOO_MANY = "Too many requests from this link or address; try again in a minute."


class CustomerActionApi(APIView):
    """Base: no account, the token alone; public headers on every answer."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        # Before the handler, so a 429 is never stored as an idempotent answer.
        if not tracking_request_allowed(request):
            raise Throttled(wait=60, detail=TOO_MANY)
        if request.method == "POST" and customer_action_limited(
            token=kwargs.get("token", ""), request=request
        ):
            raise Throttled(wait=60, detail=TOO_MANY)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        for header, value in PUBLIC_HEADERS.items():
            response[header] = value
        return response

    def shipment_for(self, request: Request, token: str) -> Shipment:
        shipment = tracking_shipment_resolve(token)
        if shipment is None:
            tracking_miss_record(request)
            raise NotFound(NOT_FOUND_BODY["detail"])
        return shipment


def _window(window) -> dict | None:
    return window.as_dict() if window else None


class DeliveryOptionsApi(CustomerActionApi):
    """What the customer may do now: delivery days and windows the hub serves,
    and which actions are open."""

    @extend_schema(responses={200: dict}, auth=[])
    def get(self, request: Request, token: str) -> Response:
        shipment = self.shipment_for(request, token)
        options = customer_options(shipment=shipment)
        instruction = options.instruction
        rating = options.rating
        return Response(
            {
                "reference": shipment.reference,
                "current_window": _window(options.current_window),
                "can_reschedule": not options.reschedule_refusal,
                "reschedule_refusal": options.reschedule_refusal,
                "days": [day.as_dict() for day in options.days],
                "can_request_redelivery": options.can_request_redelivery,
                "can_pick_up_at_hub": options.can_pick_up_at_hub,
                "pickup_hub": options.pickup_hub.name if options.pickup_hub else None,
                "pickup_requested": options.pickup_requested,
                "can_leave_instructions": options.can_leave_instructions,
                # The door code is never sent back: whoever holds the link sees this.
                "instructions": {
                    "safe_place": instruction.safe_place,
                    "note": instruction.note,
                    "has_door_code": bool(instruction.door_code),
                }
                if instruction
                else None,
                "can_rate": options.can_rate,
                "rating": {"stars": rating.stars} if rating else None,
            }
        )


class DeliveryInstructionsApi(CustomerActionApi):
    """Leave a safe place, a door code or a note for the driver. A field left
    out keeps its value; an empty one clears it."""

    class InputSerializer(JsonSerializer):
        safe_place = serializers.CharField(
            max_length=120, allow_blank=True, required=False
        )
        door_code = serializers.CharField(
            max_length=20, allow_blank=True, required=False
        )
        note = serializers.CharField(max_length=500, allow_blank=True, required=False)

    @extend_schema(
        request=InputSerializer,
        responses={200: dict},
        auth=[],
    )
    @idempotent
    def post(self, request: Request, token: str) -> Response:
        shipment = self.shipment_for(request, token)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        instruction = delivery_instruction_set(
            shipment_id=shipment.pk, **payload.validated_data
        )
        return Response(
            {
                "detail": "Thank you: the driver will see your instructions.",
                "instructions": {
                    "safe_place": instruction.safe_place,
                    "note": instruction.note,
                    "has_door_code": bool(instruction.door_code),
                },
            }
        )


class _WindowInput(JsonSerializer):
    date = serializers.DateField()
    window_start = StrictTimeField()


class DeliveryRescheduleApi(CustomerActionApi):
    """Choose another delivery day and window among those the hub serves."""

    class InputSerializer(_WindowInput):
        pass

    @extend_schema(
        request=InputSerializer,
        responses={200: dict},
        auth=[],
    )
    @idempotent
    def post(self, request: Request, token: str) -> Response:
        shipment = self.shipment_for(request, token)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        done = shipment_delivery_reschedule(
            shipment_id=shipment.pk,
            day=payload.validated_data["date"],
            window_start=payload.validated_data["window_start"],
        )
        return Response(
            {"detail": done.message, "delivery_window": done.window.as_dict()}
        )


class RedeliveryApi(CustomerActionApi):
    """After a failed attempt: another delivery on a chosen day, or a pickup at the hub."""

    class InputSerializer(JsonSerializer):
        option = serializers.ChoiceField(choices=["redelivery", "hub_pickup"])
        date = serializers.DateField(required=False)
        window_start = StrictTimeField(required=False)

        def validate(self, attrs):
            if attrs["option"] == "redelivery":
                missing = {
                    name: ["Required for a redelivery."]
                    for name in ("date", "window_start")
                    if name not in attrs
                }
                if missing:
                    raise serializers.ValidationError(missing)
            return attrs

    @extend_schema(
        request=InputSerializer,
        responses={200: dict},
        auth=[],
    )
    @idempotent
    def post(self, request: Request, token: str) -> Response:
        shipment = self.shipment_for(request, token)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        if data["option"] == "hub_pickup":
            pickup = shipment_hub_pickup_request(shipment_id=shipment.pk)
            return Response(
                {
                    "detail": pickup.message,
                    "option": "hub_pickup",
                    "hub": {
                        "name": pickup.hub.name,
                        "address": pickup.hub.location.address,
                        "opening_hours": pickup.hub.opening_hours,
                    },
                }
            )
        done = shipment_redelivery_request(
            shipment_id=shipment.pk, day=data["date"], window_start=data["window_start"]
        )
        return Response(
            {
                "detail": done.message,
                "option": "redelivery",
                "delivery_window": done.window.as_dict(),
            }
        )


class DeliveryRatingApi(CustomerActionApi):
    """Rate the delivery (1-5 stars and a comment), once, after it."""

    class InputSerializer(JsonSerializer):
        stars = serializers.IntegerField(min_value=1, max_value=5)
        comment = serializers.CharField(max_length=1000, allow_blank=True, default="")

    @extend_schema(
        request=InputSerializer,
        responses={201: dict},
        auth=[],
    )
    @idempotent
    def post(self, request: Request, token: str) -> Response:
        shipment = self.shipment_for(request, token)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        rating = customer_rating_create(
            shipment_id=shipment.pk, **payload.validated_data
        )
        return Response(
            {
                "detail": "Thank you for your feedback.",
                "rating": {"stars": rating.stars},
            },
            status=201,
        )


class MessagesOptOutApi(CustomerActionApi):
    """Stop e-mails and/or text messages to the customer's address."""

    class InputSerializer(JsonSerializer):
        channels = serializers.MultipleChoiceField(
            choices=["email", "sms"], allow_empty=False
        )

    @extend_schema(
        request=InputSerializer,
        responses={200: dict},
        auth=[],
    )
    @idempotent
    def post(self, request: Request, token: str) -> Response:
        shipment = self.shipment_for(request, token)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        opt_outs = customer_opt_out(
            shipment_id=shipment.pk, channels=sorted(payload.validated_data["channels"])
        )
        stopped = sorted({o.channel for o in opt_outs})
        names = {"email": "e-mails", "sms": "text messages"}
        detail = (
            "We will send you no more " + " or ".join(names[c] for c in stopped) + "."
            if stopped
            else "We have no address of yours on these channels; nothing to stop."
        )
        return Response({"detail": detail, "channels": stopped})
