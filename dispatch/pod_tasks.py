"""POD thumbnails: a small JPEG beside each proof photo, made by a worker.

    pod_create ──on commit──▶ pod_thumbnail_make_task(pod_id)
        pod/2026/11/<random>.jpg  ──▶  pod/2026/11/<random>.thumb.jpg

The dispatcher's pages list many proofs; a 2048 px photo per row is too heavy,
so each photo gets a thumbnail once, off the request. The task is idempotent
(it runs with ``acks_late`` and is delivered again if its worker dies): a
complete thumbnail already in place means there is nothing to do, and one left
half-written by a killed worker does not decode, so it is made again.
"""

from __future__ import annotations

import io
import logging
from pathlib import PurePosixPath

from celery import shared_task
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

from .models import ProofOfDelivery

logger = logging.getLogger(__name__)

POD_THUMBNAIL_MAX_SIDE = 256
POD_THUMBNAIL_SUFFIX = ".thumb.jpg"


def pod_thumbnail_name(photo_name: str) -> str:
    """``pod/2026/11/ab12.jpg`` → ``pod/2026/11/ab12.thumb.jpg`` (beside the photo)."""
    path = PurePosixPath(photo_name)
    return str(path.with_name(path.stem + POD_THUMBNAIL_SUFFIX))


def _is_complete_image(name: str) -> bool:
    try:
        with default_storage.open(name, "rb") as stored, Image.open(stored) as image:
            image.load()
    except (OSError, SyntaxError, ValueError):
        return False
    return True


def pod_thumbnail_render(photo: bytes) -> bytes:
    with Image.open(io.BytesIO(photo)) as image:
        # A JPEG decodes straight at 1/2, 1/4 or 1/8 scale: several times
        # faster than decoding 2048 px to throw most of it away.
        image.draft("RGB", (POD_THUMBNAIL_MAX_SIDE, POD_THUMBNAIL_MAX_SIDE))
        image.thumbnail((POD_THUMBNAIL_MAX_SIDE, POD_THUMBNAIL_MAX_SIDE))
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=80, optimize=True)
    return out.getvalue()


def pod_thumbnail_make(*, pod_id: int) -> str | None:
    """The thumbnail of a proof's photo, made if missing; its storage name, or
    None when the proof has no photo (or is gone)."""
    photo_name = (
        ProofOfDelivery.objects.filter(pk=pod_id)
        .values_list("photo", flat=True)
        .first()
    )
    if not photo_name:
        return None
    name = pod_thumbnail_name(photo_name)
    if default_storage.exists(name):
        if _is_complete_image(name):
            return name
        default_storage.delete(name)  # half-written by a worker that died
    with default_storage.open(photo_name, "rb") as stored:
        thumbnail = pod_thumbnail_render(stored.read())
    saved = default_storage.save(name, ContentFile(thumbnail))
    if saved != name:
        # Another delivery wrote it meanwhile (the storage gave us a new name):
        # keep theirs, so there is one thumbnail per photo.
        default_storage.delete(saved)
    return name


def pod_thumbnail_queue(*, pod_id: int) -> None:
    """Called on commit of a proof with a photo; if the broker is away the
    proof keeps its full photo and the thumbnail can be made later."""
    try:
        pod_thumbnail_make_task.delay(pod_id)
    except Exception:  # noqa: BLE001 - a thumbnail never fails a delivery
        logger.warning("could not queue the thumbnail of POD %s", pod_id)


@shared_task(acks_late=True, ignore_result=True, idempotent=True)
def pod_thumbnail_make_task(pod_id: int) -> None:
    pod_thumbnail_make(pod_id=pod_id)
