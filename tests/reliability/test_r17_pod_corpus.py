"""R17: proof-of-delivery upload hardening, a corpus against a real server.

gunicorn (2 workers) on the test database; uploads go through httpx as the
phone sends them (multipart, Idempotency-Key). The corpus:

* valid JPEG, PNG and WebP, and a JPEG carrying GPS EXIF: accepted, stored
  re-encoded without EXIF under a random name, served only through the
  authorised view (``Content-Type``, ``nosniff``, ``Content-Disposition``);
* a JPEG/HTML polyglot: refused, or (the product's approach) re-encoded so
  no byte of the HTML survives; either way nothing executable is stored;
* SVG with script, HTML named ``.jpg``, a PNG bomb (30,000 x 30,000 px in
  under 1 MB), a truncated JPEG, an empty file, a 25 MB file, 101 files in one
  request: refused (4xx, never 5xx) in under 2 s;
* file names with ``../`` and NUL: refused, or stored under a random name with
  nothing written outside the media root;
* the worker's peak RSS growth while refusing the bomb, measured on both
  gunicorn workers (``/proc/<pid>/clear_refs`` resets the peak first).

CI size = full bar: the corpus is fixed (about 30 uploads).
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import zlib
from pathlib import Path

import pytest
from django.conf import settings
from PIL import Image

from dispatch.models import ProofOfDelivery
from reliability.harness.http_pool import HttpPool
from reliability.harness.live_server import process_peak_rss_kib
from tests import factories
from tests.reliability import builders

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

REJECT_SECONDS = 2.0
RSS_GROWTH_LIMIT_MIB = 200
STORED_NAME = re.compile(r"^pod/\d{4}/\d{2}/[0-9a-f]{32}(_\w+)?\.jpg$")
HTML = b"<html><body><script>alert(document.cookie)</script></body></html>"


# -- the corpus ---------------------------------------------------------------


def _image(fmt: str, size=(640, 480), **save) -> bytes:
    image = Image.new("RGB", size)
    for x in range(0, size[0], 8):  # some structure, so encoders do real work
        for y in range(0, size[1], 8):
            image.putpixel((x, y), (x % 256, y % 256, (x + y) % 256))
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def _jpeg_with_gps() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x8825] = {  # GPS IFD: 43.7396 N, 7.4276 E (Casino de Monte-Carlo)
        1: "N",
        2: (43.0, 44.0, 22.56),
        3: "E",
        4: (7.0, 25.0, 39.36),
    }
    return _image("JPEG", exif=exif.tobytes())


def _polyglot() -> bytes:
    """A JPEG that is also an HTML page: script in a comment segment and after EOI."""
    jpeg = _image("JPEG", size=(64, 48))
    comment = b"\xff\xfe" + struct.pack(">H", len(HTML) + 2) + HTML
    return jpeg[:2] + comment + jpeg[2:] + HTML


def _png_bomb(width=30_000, height=30_000) -> bytes:
    """8-bit greyscale, all zero: 900 MB of pixels in well under 1 MB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    # Every row is a filter byte and pixels, all zero: the image data is one run
    # of zeros. Deflate it block by block with a full flush between blocks, so
    # every block after the first compresses to the same bytes; Adler-32 of n
    # zero bytes is (n mod 65521) << 16 | 1. (Checked once against zlib.)
    total = height * (width + 1)
    block_bytes = (width + 1) * 500
    blocks = total // block_bytes
    assert blocks * block_bytes == total
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(block_bytes)
    first = raw.compress(block) + raw.flush(zlib.Z_FULL_FLUSH)
    again = raw.compress(block) + raw.flush(zlib.Z_FULL_FLUSH)
    last = raw.compress(block) + raw.flush(zlib.Z_FINISH)
    adler = ((total % 65521) << 16) | 1
    idat = b"\x78\xda" + first + again * (blocks - 2) + last + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


SVG = b"""<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script><rect width="10" height="10"/></svg>"""


def corpus() -> dict[str, tuple[str, list[tuple[str, bytes, str]]]]:
    """name -> (expected: "accept" | "refuse" | "sanitise", [(filename, bytes, mime)])."""
    jpeg = _image("JPEG")
    small = _image("JPEG", size=(32, 24))
    bomb = _png_bomb()
    assert len(bomb) < 1024 * 1024
    return {
        "valid JPEG": ("accept", [("photo.jpg", jpeg, "image/jpeg")]),
        "valid PNG": ("accept", [("photo.png", _image("PNG"), "image/png")]),
        "valid WebP": ("accept", [("photo.webp", _image("WEBP"), "image/webp")]),
        "JPEG with GPS EXIF": ("accept", [("gps.jpg", _jpeg_with_gps(), "image/jpeg")]),
        "JPEG/HTML polyglot": ("sanitise", [("poly.jpg", _polyglot(), "image/jpeg")]),
        "SVG with script": ("refuse", [("photo.svg", SVG, "image/svg+xml")]),
        "SVG named .jpg": ("refuse", [("photo.jpg", SVG, "image/jpeg")]),
        "HTML named .jpg": ("refuse", [("photo.jpg", HTML, "image/jpeg")]),
        "PNG bomb 30000x30000": ("refuse", [("bomb.png", bomb, "image/png")]),
        "truncated JPEG": (
            "refuse",
            [("cut.jpg", jpeg[: len(jpeg) // 2], "image/jpeg")],
        ),
        "0-byte file": ("refuse", [("empty.jpg", b"", "image/jpeg")]),
        "25 MB file": (
            "refuse",
            [("big.jpg", jpeg + os.urandom(25 * 1024 * 1024), "image/jpeg")],
        ),
        "name with ../": (
            "sanitise",
            [("../../../../tmp/evil.jpg", small, "image/jpeg")],
        ),
        "name with NUL": ("sanitise", [("evil\x00.php.jpg", small, "image/jpeg")]),
        "101 files": ("refuse", [("p.jpg", small, "image/jpeg")] * 101),
    }


# -- the test -------------------------------------------------------------------


def _media_files() -> set[Path]:
    root = Path(settings.MEDIA_ROOT)
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def _reset_peaks(pids: list[int]) -> dict[int, int]:
    """Reset each worker's peak RSS to its current RSS; return the current RSS."""
    current = {}
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                current[pid] = int(line.split()[1])
    return current


def test_r17_the_pod_corpus(live_server_url, hubs, figure):
    monaco = hubs[1]
    driver = factories.driver_make(monaco)
    other = factories.driver_make(monaco)
    route = builders.published_route(hub=monaco, driver=driver, stops=2)
    builders.published_route(hub=monaco, driver=other, stops=1)
    stop = builders.delivery_stops(route)[0]
    auth = builders.token_header(driver.user)
    outside = Path("/tmp/evil.jpg")
    outside_before = outside.exists() and outside.stat().st_mtime
    media_before = _media_files()

    results = {}
    with HttpPool(live_server_url.url, workers=2) as pool:

        def upload(files):
            return pool.send(
                "POST",
                f"/api/v1/driver/stops/{stop.pk}/pod/",
                headers={**auth, "Idempotency-Key": builders.new_key("r17")},
                files=[("photo", f) for f in files],  # the photo alone: no fallback
            )

        # Warm both workers, then measure the bomb on a clean peak.
        for _ in range(2):
            assert (
                upload([("w.jpg", _image("JPEG", size=(32, 24)), "image/jpeg")]).status
                == 201
            )
        items = corpus()
        pids = live_server_url.worker_pids()
        rss_before = _reset_peaks(pids)
        bomb_answer = upload(items["PNG bomb 30000x30000"][1])
        rss_growth_mib = max(
            (process_peak_rss_kib(pid) - rss_before[pid]) / 1024 for pid in pids
        )
        results["PNG bomb 30000x30000"] = bomb_answer
        for name, (_, files) in items.items():
            if name not in results:
                results[name] = upload(files)

        # How accepted files are stored and served.
        accepted = {
            name: answer for name, answer in results.items() if answer.status == 201
        }
        served = {}
        for name, answer in accepted.items():
            pod_id = json.loads(answer.body)["id"]
            pod = ProofOfDelivery.objects.get(pk=pod_id)
            own = pool.send("GET", f"/api/v1/pods/{pod_id}/photo/", headers=auth)
            foreign = pool.send(
                "GET",
                f"/api/v1/pods/{pod_id}/photo/",
                headers=builders.token_header(other.user),
            )
            anonymous = pool.send("GET", f"/api/v1/pods/{pod_id}/photo/")
            direct = pool.send("GET", f"{settings.MEDIA_URL}{pod.photo.name}")
            stored = (
                Path(settings.MEDIA_ROOT, pod.photo.name).read_bytes()
                if pod.photo.name
                else b""
            )
            served[name] = {
                "name": pod.photo.name,
                "random_name": bool(STORED_NAME.match(pod.photo.name)),
                "own": own.status,
                "content_type": own.headers.get("content-type"),
                "nosniff": own.headers.get("x-content-type-options") == "nosniff",
                "disposition": own.headers.get("content-disposition", ""),
                "foreign": foreign.status,
                "anonymous": anonymous.status,
                "direct_media_url": direct.status,
                "exif": _has_exif(stored),
                "html_survived": b"<script" in stored or b"<html" in stored,
                "is_jpeg": stored[:3] == b"\xff\xd8\xff",
            }

    malicious_accepted = []
    valid_rejected = []
    slow_rejects = []
    server_errors = []
    for name, (expected, _) in items.items():
        answer = results[name]
        if answer.status >= 500 or answer.status == 0:
            server_errors.append(f"{name}: {answer.status} {answer.error}")
        if expected == "accept" and answer.status != 201:
            valid_rejected.append(f"{name}: {answer.status} {answer.body[:120]!r}")
        if expected == "refuse":
            if answer.status < 400:
                malicious_accepted.append(f"{name}: {answer.status}")
            elif answer.seconds > REJECT_SECONDS:
                slow_rejects.append(f"{name}: {answer.seconds:.2f} s")
        if expected == "sanitise" and answer.status == 201:
            facts = served[name]
            if facts["html_survived"] or not facts["random_name"] or facts["exif"]:
                malicious_accepted.append(f"{name}: stored as {facts}")
    with_exif = [n for n, f in served.items() if f["exif"]]
    badly_served = [
        f"{n}: {f}"
        for n, f in served.items()
        if not (
            f["own"] == 200
            and f["content_type"] == "image/jpeg"
            and f["nosniff"]
            and "filename=" in f["disposition"]
            and f["foreign"] == 404
            and f["anonymous"] in (401, 403)
            and f["direct_media_url"] == 404
            and f["random_name"]
            and f["is_jpeg"]
        )
    ]
    new_files = _media_files() - media_before
    escaped = [
        str(p)
        for p in new_files
        if not str(p).startswith(str(Path(settings.MEDIA_ROOT)))
    ]
    wrote_outside = outside.exists() and outside.stat().st_mtime != outside_before
    reject_latency = max(
        (results[n].seconds for n, (e, _) in items.items() if e == "refuse"), default=0
    )

    figure(
        "R17",
        "malicious files accepted",
        f"{len(malicious_accepted)} of {sum(1 for e, _ in items.values() if e != 'accept')}",
        "0",
        not malicious_accepted and not wrote_outside and not escaped,
        details={
            "accepted": malicious_accepted,
            "statuses": {n: a.status for n, a in results.items()},
        },
    )
    figure(
        "R17",
        "valid files rejected",
        f"{len(valid_rejected)} of {sum(1 for e, _ in items.values() if e == 'accept')}",
        "0 (100% accepted)",
        not valid_rejected,
        details={"rejected": valid_rejected},
    )
    figure(
        "R17",
        "worker peak-RSS growth handling the bomb",
        f"{rss_growth_mib:.1f} MiB (answer {bomb_answer.status} in {bomb_answer.seconds:.2f} s)",
        f"< {RSS_GROWTH_LIMIT_MIB} MiB",
        rss_growth_mib < RSS_GROWTH_LIMIT_MIB,
    )
    figure(
        "R17",
        "slowest refusal",
        f"{reject_latency:.2f} s",
        f"< {REJECT_SECONDS} s",
        not slow_rejects,
    )
    figure("R17", "stored files with EXIF", len(with_exif), "0", not with_exif)
    figure(
        "R17",
        "accepted files served wrongly (type, nosniff, disposition, authz, direct URL)",
        len(badly_served),
        "0",
        not badly_served,
        details={"served": served},
    )

    assert not server_errors, server_errors
    assert not valid_rejected, valid_rejected
    assert not malicious_accepted, malicious_accepted
    assert not slow_rejects, slow_rejects
    assert rss_growth_mib < RSS_GROWTH_LIMIT_MIB
    assert not with_exif
    assert not badly_served, badly_served
    assert not wrote_outside
    assert not escaped


def _has_exif(data: bytes) -> bool:
    if not data or b"Exif\x00\x00" in data:
        return bool(data)
    return bool(Image.open(io.BytesIO(data)).getexif())
