"""R10: status-transition and conflict rules, as properties.

Pure part (no database): the leg and shipment tables of ``shipments.states``,
``derive_shipment_status`` and the driver rules' ``leg_path``, over random walks
of a shipment's legs:

* every leg move the leg table allows gives a shipment move the shipment table
  allows (else ``leg_transition`` would refuse a legal leg move);
* terminal shipment states stick;
* one outcome per attempt: a leg attempt ends completed or failed, never both;
* ``leg_path`` walks only allowed moves, never through ``cancelled``, through
  ``failed`` only as the target, and nowhere from a terminal state.

API part (driver events API + dispatcher reassign/cancel, test client, real
PostgreSQL): random per-stop event sequences, interleaved and batched:

* a completed stop stays completed;
* non-terminal items after a terminal outcome are stored, not applied;
* an applied delivery after an applied failure carries a conflict flag;
* every ignored item (rejected) carries a reason code;
* dispatcher reassign or cancel racing an offline, POD-backed delivery ends
  delivered with a conflict flag.

CI size: 10,000 pure walks (the full bar; about 3 s), exhaustive ``leg_path``,
and 12 API examples of 4 stops (48 sequences). Full bar (RELIABILITY_SCALE=5):
60 API examples (240 sequences).
"""

from __future__ import annotations

import io
import itertools
import json
import random
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from rest_framework.test import APIClient

from dispatch.driver_events import leg_path
from dispatch.models import DispatchConflict, DriverEventReceipt
from reliability.harness.sizing import scaled, seed
from routing.models import RouteStop
from shipments.states import (
    LEG_TRANSITIONS,
    SHIPMENT_TERMINAL,
    SHIPMENT_TRANSITIONS,
    LegStatus,
    derive_shipment_status,
)
from tests import factories
from tests.dispatch import builders as dispatch_builders
from tests.reliability import builders

WALKS = scaled(10_000)  # cheap: the full bar runs in CI
API_EXAMPLES = scaled(12, full=60)
L = LegStatus
# The chains shipments.planning builds: a middle leg only between two hubs.
CHAIN_SHAPES = (("first", "last"), ("first", "middle", "last"))
RETURN_CHAIN_SHAPES = (("return", "return"), ("return", "middle", "return"))


# ---------------------------------------------------------------------------
# Pure rules
# ---------------------------------------------------------------------------


def test_r10_leg_path_walks_only_allowed_moves(figure):
    """Exhaustive over every (current, target) pair."""
    problems = []
    for current, target in itertools.product(L.values, L.values):
        path = leg_path(current, target)
        if current in (L.COMPLETED, L.CANCELLED) and current != target:
            if path is not None:
                problems.append(f"{current}->{target}: left a terminal state {path}")
            continue
        if path is None:
            continue
        steps = [current, *path]
        for a, b in itertools.pairwise(steps):
            if b not in LEG_TRANSITIONS[a]:
                problems.append(f"{current}->{target}: {a}->{b} not allowed")
            if (a, b) == (L.ASSIGNED, L.PLANNED):
                problems.append(f"{current}->{target}: un-assigns")
        if L.CANCELLED in path:
            problems.append(f"{current}->{target}: passes through cancelled")
        if L.FAILED in path[:-1] or (L.FAILED in path and target != L.FAILED):
            problems.append(f"{current}->{target}: passes through failed")
    figure(
        "R10", "leg_path violations (all 49 pairs)", len(problems), "0", not problems
    )
    assert not problems, problems


def _walk(rng: random.Random, steps: int):
    """Random legal leg moves of one shipment, in chain order: a leg starts only
    when every earlier live leg is completed. Yields (legs before, legs after)."""
    is_return = rng.random() < 0.2
    miles = rng.choice(RETURN_CHAIN_SHAPES if is_return else CHAIN_SHAPES)
    legs = [[mile, L.PLANNED] for mile in miles]
    for _ in range(steps):
        before = [tuple(leg) for leg in legs]
        moves = []
        for i, (_, status) in enumerate(legs):
            earlier_done = all(s in (L.COMPLETED, L.CANCELLED) for _, s in legs[:i])
            for target in LEG_TRANSITIONS[status]:
                if target == L.CANCELLED:
                    continue  # cancelling is a shipment-level act (below)
                if target == L.IN_TRANSIT and not earlier_done:
                    continue
                if status == L.FAILED and target == L.PLANNED and not earlier_done:
                    continue
                moves.append((i, target))
        if not moves:
            return
        current = derive_shipment_status(is_return=is_return, legs=before)
        if (
            rng.random() < 0.03
            and "cancelled" in SHIPMENT_TRANSITIONS[current]
            and not any(s in (L.IN_TRANSIT, L.ARRIVED) for _, s in legs)
        ):
            # shipment_cancel (its own guards): every leg not completed is cancelled
            for leg in legs:
                if leg[1] != L.COMPLETED:
                    leg[1] = L.CANCELLED
            yield before, [tuple(leg) for leg in legs], is_return, "cancel"
            return
        i, target = rng.choice(moves)
        legs[i][1] = target
        yield before, [tuple(leg) for leg in legs], is_return, f"leg{i}:{target}"


def test_r10_leg_moves_give_shipment_moves_the_table_allows(figure):
    rng = random.Random(seed())
    violations: Counter = Counter()
    samples: list[str] = []
    attempts_with_two_outcomes = 0
    exercised: Counter = Counter()
    for _ in range(WALKS):
        outcome_of_attempt: dict[int, set[str]] = {}
        history = []
        terminal_at = None
        for before, after, is_return, move in _walk(rng, rng.randint(3, 30)):
            history.append(move)
            old = derive_shipment_status(is_return=is_return, legs=before)
            new = (
                "cancelled"
                if move == "cancel"
                else derive_shipment_status(is_return=is_return, legs=after)
            )
            if terminal_at is not None and new != terminal_at:
                violations["terminal state left"] += 1
                samples.append(f"terminal {terminal_at} -> {new} after {history}")
            if new != old:
                exercised[f"{old}->{new}"] += 1
            if new != old and new not in SHIPMENT_TRANSITIONS[old]:
                violations[f"{old}->{new}"] += 1
                if len(samples) < 12:
                    samples.append(f"{old}->{new} via {history} legs {after}")
            if new in SHIPMENT_TERMINAL and terminal_at is None:
                terminal_at = new
            for i, ((_, s0), (_, s1)) in enumerate(zip(before, after, strict=True)):
                if s1 == L.IN_TRANSIT and s0 != L.IN_TRANSIT:
                    outcome_of_attempt[i] = set()
                if (
                    s1 in (L.COMPLETED, L.FAILED)
                    and s0 != s1
                    and i in outcome_of_attempt
                ):
                    outcome_of_attempt[i].add(s1)
                    if len(outcome_of_attempt[i]) > 1:
                        attempts_with_two_outcomes += 1
    total = sum(violations.values()) + attempts_with_two_outcomes
    figure(
        "R10",
        "pure-rule violations in random walks",
        f"{total} in {WALKS} walks",
        "0",
        total == 0,
        details={
            "by_kind": dict(violations),
            "samples": samples[:12],
            "shipment_moves_exercised": dict(exercised),
        },
    )
    assert total == 0, samples[:12]
    # Teeth: the walks reached every terminal state and the retry paths.
    reached = {move.split("->")[1] for move in exercised}
    assert {"delivered", "returned", "cancelled", "delivery_failed"} <= reached


# ---------------------------------------------------------------------------
# Thin API layer
# ---------------------------------------------------------------------------

STOP_ACTIONS = ("arrived", "departed", "delivered", "delivery_failed", "reassign")


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 160, 200)).save(out, "JPEG")
    return out.getvalue()


class ApiScene:
    def __init__(self, hub):
        self.driver = factories.driver_make(hub)
        self.route = builders.published_route(
            hub=hub, driver=self.driver, stops=4, requires=[["photo"], [], [], []]
        )
        self.stops = builders.delivery_stops(self.route)
        self.spare = dispatch_builders.route_make(hub=hub, stops=[])
        self.driver_client = APIClient()
        self.driver_client.credentials(
            HTTP_AUTHORIZATION=f"Token {self.driver.user.auth_token.key}"
        )
        self.dispatcher_client = APIClient()
        self.dispatcher_client.credentials(
            HTTP_AUTHORIZATION=f"Token {factories.dispatcher_make().auth_token.key}"
        )
        self.seq = itertools.count(1)

    def events(self, items: list[dict]):
        return self.driver_client.post(
            "/api/v1/driver/events/",
            data=json.dumps({"device_id": "r10-phone", "events": items}),
            content_type="application/json",
            HTTP_IDEMPOTENCY_KEY=builders.new_key("r10"),
        )

    def pod_photo(self, stop):
        return self.driver_client.post(
            f"/api/v1/driver/stops/{stop.pk}/pod/",
            {"photo": io.BytesIO(_jpeg()), "recipient_name": "C. Martin"},
            format="multipart",
            HTTP_IDEMPOTENCY_KEY=builders.new_key("r10-pod"),
        )

    def item(self, kind: str, stop) -> dict:
        extra = {"reason": "not_home"} if kind == "delivery_failed" else {}
        return builders.driver_event(
            kind, next(self.seq), timezone.now().isoformat(), stop_id=stop.pk, **extra
        )

    def reassign(self, stop):
        return self.dispatcher_client.post(
            f"/api/v1/routes/stops/{stop.pk}/reassign/",
            {"route_id": self.spare.pk},
            format="json",
            HTTP_IDEMPOTENCY_KEY=builders.new_key("r10-mv"),
        )


@pytest.mark.django_db
def test_r10_random_event_sequences_through_the_api(hubs, figure):
    totals: Counter = Counter()
    samples: list[str] = []

    @settings(
        max_examples=API_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        sequences=st.lists(
            st.lists(st.sampled_from(STOP_ACTIONS), min_size=1, max_size=6),
            min_size=4,
            max_size=4,
        ),
        rng=st.randoms(use_true_random=False),
    )
    def run(sequences, rng):
        scene = ApiScene(hubs[1])
        totals["sequences"] += len(sequences)
        # The photo-requiring stop gets its proof first (the phone uploads it online).
        assert scene.pod_photo(scene.stops[0]).status_code == 201
        # Interleave the stops' sequences at random, each stop keeping its order.
        turns = [i for i, seq in enumerate(sequences) for _ in seq]
        rng.shuffle(turns)
        cursors = dict.fromkeys(range(len(sequences)), 0)
        interleaved = []
        for i in turns:
            interleaved.append((i, sequences[i][cursors[i]]))
            cursors[i] += 1
        closed_after: dict[int, str] = {}
        pending_batch: list[tuple[int, dict]] = []

        def flush():
            if not pending_batch:
                return
            answer = scene.events([item for _, item in pending_batch])
            assert answer.status_code == 200, answer.content[:300]
            for (stop_index, item), result in zip(
                pending_batch, answer.json()["results"], strict=True
            ):
                check_item(stop_index, item, result)
            pending_batch.clear()
            snapshot()

        def check_item(stop_index, item, result):
            totals["items"] += 1
            if result["status"] == "rejected":
                totals["ignored"] += 1
                if result.get("reason"):
                    totals["ignored_with_reason"] += 1
            was = closed_after.get(stop_index)
            if (
                was == "completed"
                and result["status"] == "applied"
                and item["type"] in ("arrived", "delivered", "delivery_failed")
            ):
                totals["applied_after_terminal"] += 1
                samples.append(f"{item['type']} applied on a completed stop")

        def snapshot():
            for i, stop in enumerate(scene.stops):
                stop.refresh_from_db()
                if closed_after.get(i) == "completed" and stop.status != "completed":
                    totals["completed_left"] += 1
                    samples.append(f"stop {i} left completed for {stop.status}")
                if stop.status in ("completed", "failed", "skipped"):
                    closed_after[i] = stop.status

        for stop_index, kind in interleaved:
            stop = scene.stops[stop_index]
            if kind == "reassign":
                flush()
                answer = scene.reassign(stop)
                assert answer.status_code in (201, 409), answer.content[:300]
                snapshot()
                continue
            pending_batch.append((stop_index, scene.item(kind, stop)))
            if rng.random() < 0.4:
                flush()
        flush()

        # One outcome per attempt: a delivery applied after an applied failure is flagged.
        for stop in scene.stops:
            applied = set(
                DriverEventReceipt.objects.filter(
                    stop=stop, status="applied"
                ).values_list("type", flat=True)
            )
            if {"delivered", "delivery_failed"} <= applied:
                totals["both_outcomes"] += 1
                if not DispatchConflict.objects.filter(
                    stop=stop, kind=DispatchConflict.Kind.DELIVERED_AFTER_FAILURE
                ).exists():
                    totals["both_outcomes_unflagged"] += 1
                    samples.append(f"stop {stop.pk}: delivered and failed, no conflict")

    run()
    ignored = totals["ignored"]
    share = 100.0 * totals["ignored_with_reason"] / ignored if ignored else 100.0
    violations = (
        totals["applied_after_terminal"]
        + totals["completed_left"]
        + totals["both_outcomes_unflagged"]
    )
    figure(
        "R10",
        "API-layer violations in random sequences",
        f"{violations} in {totals['sequences']} sequences ({totals['items']} items)",
        "0",
        violations == 0,
        details={**dict(totals), "samples": samples[:10]},
    )
    figure(
        "R10",
        "ignored items carrying a reason code",
        f"{share:.1f}% of {ignored}",
        "100%",
        share == 100.0,
    )
    assert violations == 0, samples[:10]
    assert share == 100.0
    assert ignored > 0  # the sequences did exercise refusals


@pytest.mark.django_db
def test_r10_reassign_racing_an_offline_pod_backed_delivery(hubs, figure):
    """The dispatcher moves a stop while the phone is offline; the driver had
    already delivered it with a photo. Physical fact wins: delivered + conflict."""
    scene = ApiScene(hubs[1])
    photo_stop = scene.stops[0]  # requires a photo
    assert scene.reassign(photo_stop).status_code == 201

    # Back online, the phone sends its queue: the proof first, then the delivery.
    pod = scene.pod_photo(photo_stop)
    delivered = scene.events([scene.item("delivered", photo_stop)])

    photo_stop.refresh_from_db()
    result = delivered.json()["results"][0]
    conflict = DispatchConflict.objects.filter(
        stop=photo_stop, kind=DispatchConflict.Kind.DELIVERED_AFTER_REASSIGNMENT
    ).exists()
    ok = pod.status_code == 201 and photo_stop.status == "completed" and conflict
    figure(
        "R10",
        "reassign vs offline POD-backed delivery: delivered + conflict",
        f"pod {pod.status_code}, item {result['status']} {result.get('reason', '')}, "
        f"stop {photo_stop.status}, conflict {conflict}",
        "pod 201, stop completed, conflict flagged",
        ok,
    )
    assert pod.status_code == 201, pod.content[:300]
    assert result["status"] == "applied", result
    assert photo_stop.status == RouteStop.Status.COMPLETED
    assert conflict


@pytest.mark.django_db
def test_r10_cancel_racing_an_offline_delivery(hubs, figure):
    """The dispatcher cancels the shipment while the phone is offline; the parcel
    was already handed over. Physical fact wins: the cancel of a shipment on a
    published route is refused (409: take it off the route first, which the
    reassign race covers with its conflict flag), and the delivery applies."""
    scene = ApiScene(hubs[1])
    stop = scene.stops[1]
    shipment = stop.legs.first().shipment
    cancel = scene.dispatcher_client.post(
        f"/api/v1/shipments/{shipment.pk}/cancel/",
        {"reason": "customer called"},
        format="json",
        HTTP_IDEMPOTENCY_KEY=builders.new_key("r10-cancel"),
    )
    delivered = scene.events(
        [
            builders.driver_event(
                "delivered",
                1,
                (timezone.now() - timedelta(minutes=3)).isoformat(),
                stop_id=stop.pk,
            )
        ]
    )
    result = delivered.json()["results"][0]
    stop.refresh_from_db()
    shipment.refresh_from_db()
    conflicts = DispatchConflict.objects.filter(stop=stop).count()
    ok = cancel.status_code == 409 and result["status"] == "applied" and shipment.status == "delivered"
    figure(
        "R10",
        "cancel vs offline delivery: delivered, the cancel refused",
        f"cancel {cancel.status_code}, item {result['status']} {result.get('reason', '')}, "
        f"stop {stop.status}, shipment {shipment.status}, conflicts {conflicts}",
        "cancel 409, item applied, shipment delivered",
        ok,
        details={"item": result, "conflicts": conflicts},
    )
    assert cancel.status_code == 409, cancel.content[:300]
    assert "published route" in cancel.json()["detail"]
    assert result["status"] == "applied", result
    assert shipment.status == "delivered"
