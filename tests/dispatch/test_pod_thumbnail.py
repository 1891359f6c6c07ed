"""POD thumbnails: queued when a proof with a photo commits, stored beside the
photo, made once however often the task is delivered."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

from dispatch.pod import PodInput, pod_create
from dispatch.pod_tasks import (
    POD_THUMBNAIL_MAX_SIDE,
    pod_thumbnail_make,
    pod_thumbnail_name,
)
from tests.tracking.stack import celery_worker

pytestmark = pytest.mark.django_db


def _jpeg(size=(1200, 900)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "teal").save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def stop(last_mile_route):
    return last_mile_route.stops.order_by("sequence").first()


def _thumbnails_of(photo_name: str) -> list[Path]:
    """Every file the storage holds for this photo's thumbnail, renamed copies included."""
    photo = Path(default_storage.path(photo_name))
    return sorted(photo.parent.glob(f"{photo.stem}.thumb*.jpg"))


def _pod_with_photo(stop, captured):
    with captured(execute=False) as callbacks:
        pod = pod_create(
            stop_id=stop.pk,
            driver_id=stop.route.driver_id,
            data=PodInput(photo=_jpeg(), signature=_jpeg((300, 100))),
        )
    return pod, callbacks


@pytest.mark.django_db(transaction=True)
def test_a_committed_photo_gets_its_thumbnail_from_a_worker(last_mile_route):
    stop = last_mile_route.stops.order_by("sequence").first()
    with celery_worker(name="pod-thumbnail-worker"):
        pod = pod_create(
            stop_id=stop.pk,
            driver_id=stop.route.driver_id,
            data=PodInput(photo=_jpeg(), signature=_jpeg((300, 100))),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _thumbnails_of(pod.photo.name):
            time.sleep(0.2)

    assert [p.name for p in _thumbnails_of(pod.photo.name)] == [
        Path(pod_thumbnail_name(pod.photo.name)).name
    ]
    assert not _thumbnails_of(pod.signature.name)  # photos only


def test_the_thumbnail_is_a_small_jpeg_beside_the_photo(
    stop, django_capture_on_commit_callbacks
):
    pod, _ = _pod_with_photo(stop, django_capture_on_commit_callbacks)

    name = pod_thumbnail_make(pod_id=pod.pk)

    assert name == pod_thumbnail_name(pod.photo.name)
    assert Path(name).parent == Path(pod.photo.name).parent
    assert name.endswith(".thumb.jpg")
    with default_storage.open(name, "rb") as stored, Image.open(stored) as image:
        assert image.format == "JPEG"
        assert max(image.size) == POD_THUMBNAIL_MAX_SIDE


def test_making_it_again_leaves_one_thumbnail(stop, django_capture_on_commit_callbacks):
    pod, _ = _pod_with_photo(stop, django_capture_on_commit_callbacks)
    first = pod_thumbnail_make(pod_id=pod.pk)
    written = Path(default_storage.path(first)).stat().st_mtime_ns

    again = pod_thumbnail_make(pod_id=pod.pk)

    assert again == first
    assert len(_thumbnails_of(pod.photo.name)) == 1
    assert Path(default_storage.path(first)).stat().st_mtime_ns == written


def test_a_half_written_thumbnail_is_made_again(
    stop, django_capture_on_commit_callbacks
):
    pod, _ = _pod_with_photo(stop, django_capture_on_commit_callbacks)
    name = pod_thumbnail_name(pod.photo.name)
    whole = io.BytesIO()
    Image.new("RGB", (256, 192), "red").save(whole, "JPEG")
    default_storage.save(
        name, ContentFile(whole.getvalue()[:200])
    )  # a worker died mid-write

    pod_thumbnail_make(pod_id=pod.pk)

    assert len(_thumbnails_of(pod.photo.name)) == 1
    with default_storage.open(name, "rb") as stored, Image.open(stored) as image:
        image.load()
        assert image.size[0] == POD_THUMBNAIL_MAX_SIDE


def test_a_proof_without_photo_has_no_thumbnail(last_mile_route):
    stop = last_mile_route.stops.order_by("sequence")[1]  # requires nothing
    pod = pod_create(
        stop_id=stop.pk,
        driver_id=stop.route.driver_id,
        data=PodInput(recipient_name="C. M."),
    )

    assert pod_thumbnail_make(pod_id=pod.pk) is None
    assert pod_thumbnail_make(pod_id=10**9) is None
