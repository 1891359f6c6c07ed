"""R9: offline replay, model-based (Hypothesis ``RuleBasedStateMachine``).

The system is the real driver API (``/api/v1/driver/events/`` and ``/pings/``
through the test client, real PostgreSQL). A model plays the phone:

* per-device ``seq``; a device clock skewed by up to +-15 min that sometimes jumps;
* an offline queue uploaded in batches that are split, shuffled, padded with
  duplicates and only partly acknowledged (the rest is sent again later);
* app reinstall: a new ``device_id`` whose ``seq`` starts again at 1 (the old
  queue is lost, as on a real phone; what the server saw stays).

The model predicts the server state with the A5 rules, which do not depend on
arrival order: a stop is completed if a delivery was reported, else failed if a
failure was, else skipped if the route was finished, else arrived if the driver
arrived or left, else pending. The latest position is the accepted fix with the
latest fix time. Invariants, checked after every upload and at the end:

1. no ``(device_id, seq)`` stored twice, and no event the server saw is lost;
2. latest position = the fix with the latest fix time;
3. every stop's status = the rule's result on the event set;
4. the same event set sent to a twin route in device order gives the same states.

CI size: 30 examples x up to 30 steps. Full bar (RELIABILITY_SCALE=17, about 10
min on two shared cores; give pytest ``--timeout 1800``): 500 examples x up to
50 steps.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from django.db.models import Count, Max
from django.utils import timezone
from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from rest_framework.test import APIClient

from dispatch.models import DriverEventReceipt, DriverPosition, LocationPing
from dispatch.pod import PodInput, pod_create
from reliability.harness.sizing import scale, scaled
from reliability.harness.sizing import seed as run_seed
from tests import factories
from tests.reliability import builders

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

EXAMPLES = scaled(30, full=500)
STEPS = 50 if scale() >= 10 else 30
STOPS = 3
REQUIRES = [[], ["recipient_name"], []]  # stop 2's proof is uploaded at the start
MAX_SKEW = timedelta(minutes=15)
PING_FUTURE_LIMIT = timedelta(minutes=2)  # dispatch.pings.MAX_CLOCK_AHEAD
STOP_EVENTS = ("arrived", "departed", "delivered", "delivery_failed")
FAILURE_REASONS = ("not_home", "access_denied", "business_closed")


def expected_stop_status(types: set[str]) -> str:
    """The A5 rule: physical outcomes first, then the plan, then presence."""
    if "delivered" in types:
        return "completed"
    if "delivery_failed" in types:
        return "failed"
    if "route_finished" in types:
        return "skipped"
    if types & {"arrived", "departed"}:
        return "arrived"
    return "pending"


@dataclass
class Device:
    device_id: str
    skew: timedelta
    next_seq: int = 1
    queue: list[dict] = field(default_factory=list)  # events not yet acknowledged
    fixes: list[dict] = field(default_factory=list)  # fixes not yet acknowledged

    def clock(self) -> datetime:
        return timezone.now() + self.skew


@dataclass
class Violations:
    duplicate_device_seq: int = 0
    lost_events: int = 0
    position_not_latest_fix: int = 0
    stop_status_not_rule: int = 0
    order_dependent: int = 0
    examples: int = 0
    steps: int = 0
    late_arrivals: int = 0  # events that reached the server after a later seq of theirs
    finished_before_earlier_events: int = 0
    samples: list[str] = field(default_factory=list)

    def total(self) -> int:
        return (
            self.duplicate_device_seq
            + self.lost_events
            + self.position_not_latest_fix
            + self.stop_status_not_rule
            + self.order_dependent
        )

    def note(self, kind: str, text: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.samples) < 10:
            self.samples.append(f"{kind}: {text}")


def _scene(hub):
    driver = factories.driver_make(hub)
    route = builders.published_route(
        hub=hub, driver=driver, stops=STOPS, requires=REQUIRES
    )
    stops = builders.delivery_stops(route)
    for stop, needs in zip(stops, REQUIRES, strict=True):
        if needs:
            pod_create(
                stop_id=stop.pk,
                driver_id=driver.pk,
                data=PodInput(recipient_name="C. Martin"),
            )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {driver.user.auth_token.key}")
    return driver, route, stops, client


def _state(route, stops) -> dict:
    route.refresh_from_db()
    out = {"route": route.status, "stops": [], "legs": [], "shipments": []}
    for stop in stops:
        stop.refresh_from_db()
        out["stops"].append(stop.status)
        legs = list(stop.legs.order_by("id").select_related("shipment"))
        out["legs"].append([leg.status for leg in legs])
        out["shipments"].append([leg.shipment.status for leg in legs])
    return out


def _post(client, path: str, body: dict):
    return client.post(
        path,
        data=json.dumps(body),
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY=f"r9-{uuid.uuid4()}",
    )


def machine_for(hub, violations: Violations):
    class OfflinePhone(RuleBasedStateMachine):
        """One driver, one route of three deliveries, one phone at a time."""

        def __init__(self):
            super().__init__()
            violations.examples += 1
            self.driver, self.route, self.stops, self.client = _scene(hub)
            self.device: Device | None = None
            self.devices: list[Device] = []
            self.seen: dict[str, dict] = {}  # event_id -> event, as the server saw it
            self.fix_accepted: list[datetime] = []
            self.finished = False
            self.recorded = 0
            self.flagged: set[str] = set()  # each kind counts once per example

        def _violation(self, kind: str, text: str) -> None:
            if kind not in self.flagged:
                self.flagged.add(kind)
                violations.note(kind, text)

        # -- the phone ------------------------------------------------------
        @initialize(skew_seconds=st.integers(-900, 900))
        def install(self, skew_seconds):
            self._new_device(skew_seconds)

        def _new_device(self, skew_seconds: int) -> None:
            self.device = Device(
                device_id=f"phone-{uuid.uuid4().hex[:8]}",
                skew=timedelta(seconds=skew_seconds),
            )
            self.devices.append(self.device)

        @precondition(lambda self: not self.finished)
        @rule(
            stop=st.integers(0, STOPS - 1),
            kind=st.sampled_from(STOP_EVENTS),
            reason=st.sampled_from(FAILURE_REASONS),
        )
        def record_stop_event(self, stop, kind, reason):
            violations.steps += 1
            extra = {"reason": reason} if kind == "delivery_failed" else {}
            self._record(kind, stop_id=self.stops[stop].pk, **extra)

        # A finished route takes no more stop events: finish only after some work.
        @precondition(lambda self: not self.finished and self.recorded >= 8)
        @rule()
        def finish_route(self):
            violations.steps += 1
            self._record("route_finished", route_id=self.route.pk)
            self.finished = True

        def _record(self, kind: str, **fields) -> None:
            device = self.device
            event = builders.driver_event(
                kind, device.next_seq, device.clock().isoformat(), **fields
            )
            event["_device"] = device.device_id
            device.next_seq += 1
            device.queue.append(event)
            self.recorded += 1

        @rule(count=st.integers(1, 4), spacing_seconds=st.integers(1, 20))
        def record_fixes(self, count, spacing_seconds):
            violations.steps += 1
            start = self.device.clock()
            for i in range(count):
                self.device.fixes.append(
                    {
                        # Within 40 m of each other: never an implausible jump.
                        "latitude": 43.7311 + 1e-4 * (i % 3),
                        "longitude": 7.4167 + 1e-4 * (i % 2),
                        "accuracy": 10,
                        "recorded_at": (
                            start + timedelta(seconds=i * spacing_seconds)
                        ).isoformat(),
                    }
                )

        @rule(jump_seconds=st.integers(-600, 600))
        def clock_jumps(self, jump_seconds):
            violations.steps += 1
            skew = self.device.skew + timedelta(seconds=jump_seconds)
            self.device.skew = max(-MAX_SKEW, min(MAX_SKEW, skew))

        @precondition(lambda self: len(self.devices) < 3 and self.recorded >= 3)
        @rule(skew_seconds=st.integers(-900, 900))
        def reinstall(self, skew_seconds):
            """A new install: unsent items are gone, seq starts again at 1."""
            violations.steps += 1
            self._new_device(skew_seconds)

        # -- uploads ----------------------------------------------------------
        @precondition(lambda self: bool(self.device.queue))
        @rule(rng=st.randoms(use_true_random=False))
        def upload_events(self, rng):
            """A random part of the queue, shuffled, with repeats; the answer gets
            back to the phone for only some items (a cut connection)."""
            violations.steps += 1
            queue = self.device.queue
            mode = rng.choice(("all", "random part", "newest first"))
            if mode == "all":
                chosen = list(queue)
            elif mode == "random part":
                chosen = rng.sample(queue, rng.randint(1, len(queue)))
            else:  # the newest items overtake older ones still waiting (a split batch)
                chosen = queue[len(queue) // 2 :]
            batch = chosen + rng.choices(chosen, k=rng.randint(0, 2))
            rng.shuffle(batch)
            response = _post(
                self.client,
                "/api/v1/driver/events/",
                {
                    "device_id": self.device.device_id,
                    "events": [
                        {k: v for k, v in e.items() if not k.startswith("_")}
                        for e in batch
                    ],
                },
            )
            assert response.status_code == 200, response.content[:300]
            self._note_seen(chosen)
            acked = {e["event_id"] for e in chosen if rng.random() < 0.6}
            self.device.queue = [e for e in queue if e["event_id"] not in acked]

        @precondition(lambda self: len(self.device.queue) >= 2)
        @rule(rng=st.randoms(use_true_random=False))
        def upload_events_again(self, rng):
            """(The same upload, listed twice so uploads come as often as recordings.)"""
            self.upload_events(rng)

        def _note_seen(self, chosen: list[dict]) -> None:
            for event in sorted(chosen, key=lambda e: e["seq"]):
                if event["event_id"] in self.seen:
                    continue
                later = [
                    e
                    for e in self.seen.values()
                    if e["_device"] == event["_device"] and e["seq"] > event["seq"]
                ]
                if later:
                    violations.late_arrivals += 1
                    if any(e["type"] == "route_finished" for e in later):
                        violations.finished_before_earlier_events += 1
                self.seen[event["event_id"]] = event

        @precondition(lambda self: bool(self.device.fixes))
        @rule(rng=st.randoms(use_true_random=False))
        def upload_fixes(self, rng):
            violations.steps += 1
            fixes = self.device.fixes
            chosen = rng.sample(fixes, rng.randint(1, len(fixes)))
            batch = chosen + rng.choices(chosen, k=rng.randint(0, 2))
            rng.shuffle(batch)
            before = timezone.now()
            response = _post(
                self.client,
                "/api/v1/driver/pings/",
                {"device_id": self.device.device_id, "pings": batch},
            )
            after = timezone.now()
            assert response.status_code == 200, response.content[:300]
            rejected = {r["index"] for r in response.json()["rejected"]}
            for index, fix in enumerate(batch):
                at = datetime.fromisoformat(fix["recorded_at"])
                if at <= before + PING_FUTURE_LIMIT:
                    self.fix_accepted.append(at)  # the model: not in the future
                elif at <= after + PING_FUTURE_LIMIT and index not in rejected:
                    self.fix_accepted.append(at)  # on the boundary: the server's call
            acked = {id(f) for f in chosen if rng.random() < 0.6}
            self.device.fixes = [f for f in fixes if id(f) not in acked]

        # -- invariants ---------------------------------------------------------
        @invariant()
        def no_seq_twice_and_nothing_lost(self):
            twice = (
                DriverEventReceipt.objects.filter(driver=self.driver)
                .values("device_id", "seq")
                .annotate(n=Count("id"))
                .filter(n__gt=1)
                .count()
            )
            if twice:
                self._violation("duplicate_device_seq", f"{twice} (device, seq) twice")
            stored = {
                str(e)
                for e in DriverEventReceipt.objects.filter(
                    driver=self.driver
                ).values_list("event_id", flat=True)
            }
            lost = set(self.seen) - stored
            if lost:
                self._violation("lost_events", f"{len(lost)} events seen, not stored")

        @invariant()
        def latest_position_is_the_latest_fix(self):
            position = DriverPosition.objects.filter(driver=self.driver).first()
            latest_stored = LocationPing.objects.filter(driver=self.driver).aggregate(
                m=Max("recorded_at")
            )["m"]
            expected = max(self.fix_accepted, default=None)
            got = position.recorded_at if position else None
            if not (got == latest_stored == expected):
                self._violation(
                    "position_not_latest_fix",
                    f"position {got}, latest stored {latest_stored}, model {expected}",
                )

        @invariant()
        def stops_follow_the_rule(self):
            statuses = _state(self.route, self.stops)["stops"]
            expected = self._expected_stops()
            if statuses != expected:
                self._violation(
                    "stop_status_not_rule",
                    f"got {statuses}, rule {expected}, events {self._event_summary()}",
                )

        def _expected_stops(self) -> list[str]:
            kinds: list[set[str]] = [set() for _ in self.stops]
            index = {stop.pk: i for i, stop in enumerate(self.stops)}
            for event in self.seen.values():
                if event["type"] == "route_finished":
                    for k in kinds:
                        k.add("route_finished")
                elif event.get("stop_id") in index:
                    kinds[index[event["stop_id"]]].add(event["type"])
            return [expected_stop_status(k) for k in kinds]

        def _event_summary(self) -> list[str]:
            index = {stop.pk: i for i, stop in enumerate(self.stops)}
            return [
                f"{e['_device'][-4:]}#{e['seq']}:{e['type']}@{index.get(e.get('stop_id'), '-')}"
                for e in self.seen.values()
            ]

        def teardown(self):
            """The same events, in device order, on a twin route: same states."""
            if not self.seen:
                return
            _, twin, twin_stops, twin_client = _scene(hub)
            mapping = {a.pk: b.pk for a, b in zip(self.stops, twin_stops, strict=True)}
            for device in self.devices:
                events = sorted(
                    (e for e in self.seen.values() if e["_device"] == device.device_id),
                    key=lambda e: e["seq"],
                )
                if not events:
                    continue
                body = []
                for e in events:
                    item = {k: v for k, v in e.items() if not k.startswith("_")}
                    if "stop_id" in item:
                        item["stop_id"] = mapping[item["stop_id"]]
                    if "route_id" in item:
                        item["route_id"] = twin.pk
                    body.append(item)
                response = _post(
                    twin_client,
                    "/api/v1/driver/events/",
                    {"device_id": device.device_id, "events": body},
                )
                assert response.status_code == 200
            mine, theirs = _state(self.route, self.stops), _state(twin, twin_stops)
            if mine != theirs:
                self._violation(
                    "order_dependent",
                    f"arrival order {mine} vs device order {theirs}; "
                    f"events {self._event_summary()}",
                )

    return OfflinePhone


def test_r9_offline_replay_keeps_the_invariants(hubs, figure):
    violations = Violations()
    machine = seed(run_seed())(machine_for(hubs[1], violations))
    failure = None
    try:
        # Invariants count violations instead of raising, so every example runs
        # and the figure is a count; samples of each kind are kept in the report.
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
    except AssertionError as exc:
        failure = exc
    total = violations.total()
    figure(
        "R9",
        "invariant violations",
        f"{total} in {violations.examples} examples, {violations.steps} steps",
        f"0 in {EXAMPLES} examples x up to {STEPS} steps",
        total == 0 and failure is None,
        details={
            "duplicate_device_seq": violations.duplicate_device_seq,
            "lost_events": violations.lost_events,
            "position_not_latest_fix": violations.position_not_latest_fix,
            "stop_status_not_rule": violations.stop_status_not_rule,
            "order_dependent": violations.order_dependent,
            "late_arrivals_exercised": violations.late_arrivals,
            "route_finished_before_earlier_events": violations.finished_before_earlier_events,
            "samples": violations.samples,
        },
    )
    if failure is not None:
        raise failure
    assert total == 0, violations.samples
    # Teeth: the run did deliver events after later ones of the same device.
    assert violations.late_arrivals > 0


def _late_item_scene(hub, late_type: str, **late_fields):
    """A failure or delivery reported before route_finished but arriving after it."""
    driver, route, stops, client = _scene(hub)
    now = timezone.now()
    early = builders.driver_event(
        late_type,
        1,
        (now - timedelta(minutes=10)).isoformat(),
        stop_id=stops[0].pk,
        **late_fields,
    )
    finish = builders.driver_event(
        "route_finished", 2, (now - timedelta(minutes=5)).isoformat(), route_id=route.pk
    )
    for batch in ([finish], [early]):  # the finish overtook the earlier item
        answer = _post(
            client, "/api/v1/driver/events/", {"device_id": "p", "events": batch}
        )
        assert answer.status_code == 200
    return _state(route, stops)["stops"][0]


@pytest.mark.parametrize(
    ("late_type", "fields", "expected"),
    [
        ("delivery_failed", {"reason": "not_home"}, "failed"),
        ("delivered", {}, "completed"),
    ],
)
def test_r9_an_item_overtaken_by_route_finished_keeps_its_outcome(
    hubs, late_type, fields, expected, figure
):
    """Regression case kept from the model: the rule says the attempt's outcome
    beats the finished route's 'skipped', whatever the arrival order."""
    got = _late_item_scene(hubs[1], late_type, **fields)
    figure(
        "R9",
        f"{late_type} overtaken by route_finished: stop status",
        got,
        expected,
        got == expected,
    )
    assert got == expected
