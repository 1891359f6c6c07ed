"""Proof of delivery: images checked by content, re-encoded, stored under random names.

    upload ──▶ size cap (upload handler, per file) ──▶ Pillow decodes it
           (JPEG, PNG or WebP by content, whatever the file is called; pixel cap
           checked from the header before any pixel is decoded, bomb warnings are
           errors) ──▶ re-encoded as a JPEG without EXIF (GPS lives in the
           database, from the device) ──▶ ``pod/YYYY/MM/<random>.jpg`` through
           Django's storage API ──▶ served only by an authorised view.

A stop's ``requires`` (photo, signature, recipient_name) must be covered by its
proofs together before the upload is accepted and before the stop can complete.
"""

from __future__ import annotations

import io
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.db import transaction
from django.utils import timezone
from PIL import Image, ImageOps, UnidentifiedImageError

from routing.models import Route, RouteStop
from shipments.errors import DomainError
from shipments.events import event_record
from shipments.outbox import DASHBOARD_GROUP, driver_group, outbox_enqueue

from .models import ProofOfDelivery
from .pod_tasks import pod_thumbnail_queue

POD_MAX_FILE_BYTES = 4 * 1024 * 1024
POD_MAX_PIXELS = 40_000_000  # 40 MP: more than any phone camera, far less than a bomb
POD_STORED_MAX_SIDE = 2048
POD_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
POD_ITEMS = ("photo", "signature", "recipient_name")


class PodRejected(DomainError):
    code = "pod_invalid"


class PodTooLarge(DomainError):
    code = "pod_too_large"
    status_code = 413


class PodSizeLimitHandler(FileUploadHandler):
    """Counts each uploaded file's bytes and stops the upload past the cap, so an
    oversized file is never written to a temporary file in full."""

    def new_file(self, field_name, *args, **kwargs):
        super().new_file(field_name, *args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > POD_MAX_FILE_BYTES:
            self.request.pod_oversized_field = self.field_name
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size):
        return None


def pod_image_normalise(data: bytes, *, field: str) -> bytes:
    """The JPEG to store for an uploaded image, or PodRejected naming the field."""
    if not data:
        raise PodRejected("The file is empty.", field=field)
    if len(data) > POD_MAX_FILE_BYTES:
        raise PodTooLarge(
            f"The file is larger than {POD_MAX_FILE_BYTES // (1024 * 1024)} MB.",
            field=field,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in POD_FORMATS:
                raise PodRejected(
                    "Only JPEG, PNG or WebP images are accepted (checked by content).",
                    field=field,
                )
            width, height = image.size
            if width * height > POD_MAX_PIXELS:
                raise PodRejected(
                    f"The image has {width}x{height} pixels; at most "
                    f"{POD_MAX_PIXELS // 1_000_000} megapixels are accepted.",
                    field=field,
                )
            image.load()
    except PodRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PodRejected("The image has too many pixels.", field=field) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise PodRejected(
            "The file is not a readable JPEG, PNG or WebP image.", field=field
        ) from exc
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        flat = Image.new(
            "RGB", image.size, "white"
        )  # signatures come on transparent canvas
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    elif image.mode != "RGB":
        image = image.convert("RGB")
    image.thumbnail((POD_STORED_MAX_SIDE, POD_STORED_MAX_SIDE))
    # Pillow writes some metadata back on save (a JPEG comment, say, which can
    # carry markup): keep nothing but pixels.
    image.info.clear()
    out = io.BytesIO()
    image.save(
        out, "JPEG", quality=85, optimize=True
    )  # no exif= : nothing carried over
    return out.getvalue()


@dataclass(frozen=True)
class PodInput:
    photo: bytes | None = None
    signature: bytes | None = None
    recipient_name: str = ""
    note: str = ""
    latitude: float | None = None
    longitude: float | None = None
    captured_at: datetime | None = None


def _store(content: bytes) -> str:
    name = f"pod/{timezone.now():%Y/%m}/{uuid.uuid4().hex}.jpg"
    return default_storage.save(name, ContentFile(content))


@transaction.atomic
def pod_create(
    *, stop_id: int, driver_id: int, data: PodInput, actor=None
) -> ProofOfDelivery:
    # Route, then stop: the order a driver's event batch locks them in.
    route_id = RouteStop.objects.values_list("route_id", flat=True).get(pk=stop_id)
    Route.objects.select_for_update().get(pk=route_id)
    stop = RouteStop.objects.select_for_update().get(pk=stop_id)
    if stop.kind == RouteStop.Kind.HUB:
        raise DomainError("Hub stops take scans, not proofs of delivery.", field="stop")
    # A skipped (moved) or failed stop still takes a proof: a phone that was
    # offline may have delivered it, and the delivery rule decides (physical
    # facts beat dispatcher intent, with a conflict for the dispatcher).
    given = {
        "photo": bool(data.photo),
        "signature": bool(data.signature),
        "recipient_name": bool(data.recipient_name.strip()),
    }
    if not any(given.values()):
        raise DomainError(
            "Send a photo, a signature or the recipient's name.",
            field="non_field_errors",
        )
    have = {item for item, present in given.items() if present}
    for pod in ProofOfDelivery.objects.filter(stop=stop):
        have |= {
            item
            for item, value in (
                ("photo", pod.photo),
                ("signature", pod.signature),
                ("recipient_name", pod.recipient_name),
            )
            if value
        }
    missing = [item for item in stop.requires if item not in have]
    if missing:
        label = {
            "photo": "a photo",
            "signature": "a signature",
            "recipient_name": "the recipient's name",
        }
        raise DomainError(
            f"This stop requires {label[missing[0]]}.",
            field=missing[0],
            missing=missing,
        )
    photo = pod_image_normalise(data.photo, field="photo") if data.photo else None
    signature = (
        pod_image_normalise(data.signature, field="signature")
        if data.signature
        else None
    )
    # Files are written last, after every check: a refused proof leaves no file behind.
    pod = ProofOfDelivery.objects.create(
        stop=stop,
        driver_id=driver_id,
        photo=_store(photo) if photo else "",
        signature=_store(signature) if signature else "",
        recipient_name=data.recipient_name.strip()[:120],
        note=data.note[:500],
        latitude=data.latitude,
        longitude=data.longitude,
        captured_at=data.captured_at,
    )
    details = {
        "pod_id": pod.pk,
        "stop_id": stop.pk,
        "route_id": stop.route_id,
        "has_photo": bool(photo),
        "has_signature": bool(signature),
        "recipient_name": pod.recipient_name,
    }
    for leg in stop.legs.select_related("shipment").order_by("id"):
        event_record(
            shipment=leg.shipment,
            leg=leg,
            type="pod.captured",
            source="driver",
            actor=actor,
            occurred_at=data.captured_at,
            latitude=data.latitude,
            longitude=data.longitude,
            payload=details,
            extra_groups=[driver_group(driver_id)],
        )
    if not stop.legs.exists():
        outbox_enqueue(
            type="pod.captured",
            groups=[DASHBOARD_GROUP, driver_group(driver_id)],
            payload=details,
        )
    if photo:
        transaction.on_commit(lambda: pod_thumbnail_queue(pod_id=pod.pk))
    return pod
