"""Proof of delivery uploads: checked by content, size-capped, re-encoded without
EXIF, required items enforced, nothing stored when refused."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from django.conf import settings
from PIL import Image

from dispatch.models import ProofOfDelivery
from dispatch.pod import POD_MAX_FILE_BYTES
from tests.dispatch import builders

pytestmark = pytest.mark.django_db


def _upload(data: bytes, name: str) -> io.BytesIO:
    buffer = io.BytesIO(data)
    buffer.name = name
    return buffer


def _jpeg_with_gps(size=(120, 90)) -> bytes:
    image = Image.new("RGB", size, "green")
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x8825] = {
        1: "N",
        2: (43.0, 44.0, 22.0),
        3: "E",
        4: (7.0, 25.0, 39.0),
    }  # GPS IFD
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def _png_header_bomb(width=30_000, height=30_000) -> bytes:
    """A tiny PNG that claims 900 million pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


def _noise_jpeg(side: int) -> bytes:
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture
def stop(last_mile_route):
    """The route's first stop: it requires a photo and a signature."""
    return last_mile_route.stops.order_by("sequence").first()


def _post(client, stop, **fields):
    return client.post(
        f"/api/v1/driver/stops/{stop.pk}/pod/",
        fields,
        format="multipart",
        HTTP_IDEMPOTENCY_KEY=builders.key(),
    )


def _stored_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT) / "pod"
    return sorted(root.rglob("*.jpg")) if root.exists() else []


def test_a_valid_photo_and_signature_are_stored_re_encoded_without_exif(
    driver_client, stop
):
    response = _post(
        driver_client,
        stop,
        photo=_upload(_jpeg_with_gps(), "IMG_0001.JPG"),
        signature=_upload(_jpeg_with_gps((300, 100)), "sig.jpeg"),
        recipient_name="Camille Martin",
    )

    assert response.status_code == 201, response.content
    pod = ProofOfDelivery.objects.get()
    for field in (pod.photo, pod.signature):
        assert field.name.startswith("pod/")
        assert "IMG_0001" not in field.name
        assert "sig" not in field.name
        with field.open("rb") as stored:
            image = Image.open(stored)
            assert image.format == "JPEG"
            assert not image.getexif()  # no GPS, no maker: nothing carried over
    assert response.json()["photo_url"] == f"/api/v1/pods/{pod.pk}/photo/"


def test_a_text_file_renamed_jpg_is_refused_as_not_an_image(driver_client, stop):
    files_before = _stored_files()

    response = _post(
        driver_client,
        stop,
        photo=_upload(b"Dear customer,\nthis is not a photo.\n" * 20, "photo.jpg"),
        signature=_upload(_jpeg_with_gps(), "sig.jpg"),
    )

    assert response.status_code == 422  # a well-formed upload whose content is refused
    body = response.json()
    assert body["code"] == "pod_invalid"
    assert body["photo"] == ["The file is not a readable JPEG, PNG or WebP image."]
    assert not ProofOfDelivery.objects.exists()
    assert _stored_files() == files_before


def test_an_svg_or_html_disguised_as_an_image_is_refused(driver_client, stop):
    for payload in (
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        b"<html><body><script>alert(1)</script></body></html>",
    ):
        response = _post(
            driver_client,
            stop,
            photo=_upload(payload, "x.jpg"),
            signature=_upload(payload, "y.png"),
        )
        assert response.status_code == 422
        assert response.json()["code"] == "pod_invalid"
    assert not ProofOfDelivery.objects.exists()


def test_an_oversized_image_is_refused_with_413(driver_client, stop):
    big = _noise_jpeg(2000)
    assert POD_MAX_FILE_BYTES < len(big) < settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    response = _post(
        driver_client,
        stop,
        photo=_upload(big, "big.jpg"),
        signature=_upload(_jpeg_with_gps(), "sig.jpg"),
    )

    assert response.status_code == 413
    assert response.json()["photo"] == ["The file is larger than 4 MB."]
    assert not ProofOfDelivery.objects.exists()


def test_a_body_over_the_request_cap_is_refused_before_it_is_read(driver_client, stop):
    response = _post(
        driver_client,
        stop,
        photo=_upload(_noise_jpeg(2000), "a.jpg"),
        signature=_upload(_noise_jpeg(1400), "b.jpg"),
    )

    assert response.status_code == 413
    assert response.json()["code"] == "pod_too_large"


def test_a_pixel_bomb_is_refused_without_decoding_it(driver_client, stop):
    bomb = _png_header_bomb()
    assert len(bomb) < 1024 * 1024

    response = _post(
        driver_client,
        stop,
        photo=_upload(bomb, "bomb.png"),
        signature=_upload(_jpeg_with_gps(), "sig.jpg"),
    )

    assert response.status_code == 422
    assert "pixels" in response.json()["photo"][0]


def test_a_missing_required_signature_is_refused_with_a_clear_error(
    driver_client, stop
):
    assert stop.requires == ["photo", "signature"]

    response = _post(
        driver_client,
        stop,
        photo=_upload(_jpeg_with_gps(), "p.jpg"),
        recipient_name="C. M.",
    )

    assert response.status_code == 422
    body = response.json()
    assert body["signature"] == ["This stop requires a signature."]
    assert body["missing"] == ["signature"]
    assert not ProofOfDelivery.objects.exists()


def test_a_later_upload_may_add_to_a_complete_proof(driver_client, stop):
    from dispatch.pod import PodInput, pod_create

    pod_create(
        stop_id=stop.pk,
        driver_id=stop.route.driver_id,
        data=PodInput(photo=_jpeg_with_gps(), signature=_jpeg_with_gps()),
    )

    # Required items are already covered: an extra photo alone is fine now.
    response = _post(driver_client, stop, photo=_upload(_jpeg_with_gps(), "p.jpg"))

    assert response.status_code == 201
    assert ProofOfDelivery.objects.filter(stop=stop).count() == 2


def test_an_empty_upload_is_refused(driver_client, stop):
    response = _post(driver_client, stop, note="nothing else")

    assert response.status_code == 422
    assert "non_field_errors" in response.json()
