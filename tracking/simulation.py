"""Simulated drivers for the demo: the real driver API, over HTTP.

Each driver (one thread): sign in → today's route → ``route_started`` → for each
stop: drive there (pings along the straight line, every couple of seconds) →
``arrived`` → scan the parcels → pick up / deliver (proof of delivery uploaded
when the stop requires it) or, now and then, fail with a reason → ``departed``
→ back to the hub → ``hub_scan_in`` → ``route_finished``.

Time runs ``speedup`` times faster for waiting and service; driving is capped at
``MAX_GROUND_SPEED_MPS`` of real time, because the API rightly rejects fixes that
move faster than any vehicle. One first-mile driver can be held at the hub for a
while (``stall_seconds``): a first-mile delay the ETA engine propagates to the
middle-mile cut-off once it is long enough to miss it.
"""

from __future__ import annotations

import io
import logging
import math
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

logger = logging.getLogger(__name__)

PLANNED_SPEED_MPS = 27 / 3.6  # the solver's van speed
ROAD_DETOUR_FACTOR = 1.3
MAX_GROUND_SPEED_MPS = 55.0  # below the API's 70 m/s plausibility bound
PING_EVERY_SECONDS = 2.0
FAILURE_REASONS = ("not_home", "access_denied", "address_not_found")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _meters(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lng1, lat2, lng2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lng2 - lng1) / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(min(1.0, math.sqrt(h)))


def _tiny_jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 180, 150)).save(buffer, "JPEG")
    return buffer.getvalue()


def _tiny_png() -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (120, 40), "white")
    ImageDraw.Draw(image).line([(5, 30), (40, 10), (80, 30), (115, 8)], fill="black", width=2)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class SimulationStats:
    drivers: int = 0
    pings: int = 0
    events_applied: int = 0
    events_rejected: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class DriverSimulation:
    def __init__(
        self,
        *,
        base_url: str,
        username: str,
        password: str,
        hub_points: dict[str, tuple[float, float]],
        speedup: float,
        deadline: float,
        stats: SimulationStats,
        failure_rate: float = 0.08,
        stall_seconds: float = 0.0,
        seed: int = 0,
        stop_event: threading.Event | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.hub_points = hub_points
        self.speedup = max(1.0, speedup)
        self.deadline = deadline
        self.stats = stats
        self.failure_rate = failure_rate
        self.stall_seconds = stall_seconds
        self.random = random.Random(f"{seed}:{username}")
        self.stop_event = stop_event or threading.Event()
        self.device_id = f"sim-{username}"
        self.seq = int(time.time() * 1000)  # fresh per run: a new "install"
        self.client = httpx.Client(base_url=self.base_url, timeout=20.0)
        self.position: tuple[float, float] | None = None

    # ------------------------------------------------------------ plumbing

    def _alive(self) -> bool:
        return time.monotonic() < self.deadline and not self.stop_event.is_set()

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while self._alive() and time.monotonic() < end:
            time.sleep(min(0.25, end - time.monotonic()))

    def login(self) -> bool:
        response = self.client.post(
            "/api/v1/auth/token/", json={"username": self.username, "password": self.password}
        )
        if response.status_code != 200:
            self.stats.errors.append(f"{self.username}: sign-in answered {response.status_code}")
            return False
        self.client.headers["Authorization"] = f"Token {response.json()['token']}"
        return True

    def ping(self, point: tuple[float, float], speed_mps: float = 0.0) -> None:
        self.position = point
        response = self.client.post(
            "/api/v1/driver/pings/",
            json={
                "device_id": self.device_id,
                "pings": [
                    {
                        "latitude": round(point[0], 6),
                        "longitude": round(point[1], 6),
                        "accuracy": 8.0,
                        "speed": round(speed_mps, 1),
                        "recorded_at": _now_iso(),
                    }
                ],
            },
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        if response.status_code == 200:
            self.stats.add(pings=response.json().get("accepted", 0))

    def event(self, type_: str, *, stop_id: int | None = None, **extra) -> dict | None:
        self.seq += 1
        item = {
            "event_id": str(uuid.uuid4()),
            "seq": self.seq,
            "type": type_,
            "occurred_at": _now_iso(),
            **({"stop_id": stop_id} if stop_id else {}),
            **({"latitude": self.position[0], "longitude": self.position[1]} if self.position else {}),
            **extra,
        }
        response = self.client.post(
            "/api/v1/driver/events/",
            json={"device_id": self.device_id, "events": [item]},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        if response.status_code != 200:
            self.stats.add(events_rejected=1)
            return None
        result = response.json()["results"][0]
        if result["status"] == "rejected":
            self.stats.add(events_rejected=1)
            logger.info("%s %s rejected: %s", self.username, type_, result.get("reason"))
        else:
            self.stats.add(events_applied=1)
        return result

    def pod(self, stop: dict) -> None:
        requires = set(stop.get("requires") or [])
        if not requires:
            return
        files = {}
        if "photo" in requires:
            files["photo"] = ("door.jpg", _tiny_jpeg(), "image/jpeg")
        if "signature" in requires:
            files["signature"] = ("signature.png", _tiny_png(), "image/png")
        data = {"recipient_name": "Resident", "captured_at": _now_iso()}
        self.client.post(
            f"/api/v1/driver/stops/{stop['id']}/pod/",
            data=data,
            files=files or None,
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )

    # ------------------------------------------------------------ the day

    def drive_to(self, target: tuple[float, float]) -> None:
        start = self.position or target
        meters = _meters(start, target) * ROAD_DETOUR_FACTOR
        planned_seconds = meters / PLANNED_SPEED_MPS
        real_seconds = max(planned_seconds / self.speedup, meters / MAX_GROUND_SPEED_MPS, 0.5)
        steps = max(1, int(real_seconds / PING_EVERY_SECONDS))
        speed = meters / real_seconds
        for step in range(1, steps + 1):
            if not self._alive():
                return
            fraction = step / steps
            point = (
                start[0] + (target[0] - start[0]) * fraction,
                start[1] + (target[1] - start[1]) * fraction,
            )
            self._sleep(real_seconds / steps)
            self.ping(point, speed)

    def serve(self, stop: dict, route: dict, *, first_hub_stop: bool) -> None:
        kind = stop["kind"]
        barcodes = [p["barcode"] for p in stop.get("parcels") or [] if p.get("barcode")]
        if kind == "hub":
            # Parcel by parcel: one still on its first mile is refused alone.
            scan = "hub_scan_out" if first_hub_stop else "hub_scan_in"
            if not first_hub_stop:
                self.event("arrived", stop_id=stop["id"])
            for barcode in barcodes or [None]:
                self.event(scan, stop_id=stop["id"], **({"barcode": barcode} if barcode else {}))
            self.event("departed", stop_id=stop["id"])
            return
        self.event("arrived", stop_id=stop["id"])
        for barcode in barcodes:
            self.event("scanned", stop_id=stop["id"], barcode=barcode)
        self._sleep(stop.get("service_seconds", 120) / self.speedup)
        if kind == "pickup":
            self.event("picked_up", stop_id=stop["id"])
        elif self.random.random() < self.failure_rate:
            self.stats.add(failures=1)
            self.event("delivery_failed", stop_id=stop["id"], reason=self.random.choice(FAILURE_REASONS))
        else:
            self.pod(stop)
            self.event("delivered", stop_id=stop["id"])
        self.event("departed", stop_id=stop["id"])

    def run(self) -> None:
        try:
            if not self.login():
                return
            response = self.client.get("/api/v1/driver/route/")
            if response.status_code != 200:
                logger.info("%s has no route today (%s)", self.username, response.status_code)
                return
            route = response.json()
            self.stats.add(drivers=1)
            hub_point = self.hub_points.get(route.get("hub"))
            stops = [s for s in route["stops"] if s["status"] in ("pending", "arrived")]
            self.position = hub_point or (stops[0]["latitude"], stops[0]["longitude"]) if stops else hub_point
            if self.position:
                self.ping(self.position)
            if self.stall_seconds:
                # Held up at the hub (a loading problem, a traffic jam): pinging in place.
                logger.info("%s stalls for %.0f s", self.username, self.stall_seconds)
                end = time.monotonic() + self.stall_seconds
                while self._alive() and time.monotonic() < end:
                    self._sleep(PING_EVERY_SECONDS * 3)
                    self.ping(self.position)
            if route["status"] == "published":
                self.event("route_started")
            seen_hub_stop = False
            for stop in stops:
                if not self._alive():
                    return
                self.drive_to((stop["latitude"], stop["longitude"]))
                if not self._alive():
                    return
                self.serve(stop, route, first_hub_stop=not seen_hub_stop)
                seen_hub_stop = seen_hub_stop or stop["kind"] == "hub"
            if hub_point and route.get("mile") in ("first", "return") and self._alive():
                self.drive_to(hub_point)
                self.event("hub_scan_in")
            elif hub_point and self._alive():
                self.drive_to(hub_point)
            if self._alive():
                self.event("route_finished")
        except httpx.HTTPError as exc:
            self.stats.errors.append(f"{self.username}: {exc}")
        finally:
            self.client.close()
