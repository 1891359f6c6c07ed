"""R4: no event is skipped when sequences commit out of order.

8 writer threads record shipment events through ``event_record`` (event row +
outbox row in one transaction); each transaction holds open for a random
0-200 ms (``pg_sleep``) after its rows took their ids, so ids commit out of
order. Meanwhile the real relay (``outbox_relay_run``) numbers and publishes,
and the dashboard's ``after_seq`` endpoint is read over HTTP from a real server.
After the writers stop, the relay and the reader drain.

Teeth: a naive poller reading ``id > high-water mark`` runs alongside and must
miss some rows; if it does not, the test did not create the race.

CI size: 2,000 events. Full bar (RELIABILITY_SCALE=5): 10,000 events.
"""

from __future__ import annotations

import json
import random
import threading
import time

import pytest
from django.db import connection, transaction

from reliability.harness.http_pool import HttpPool
from reliability.harness.sizing import scaled, seed
from shipments.events import event_record
from shipments.models import OutboxMessage, Shipment
from tests import factories
from tests.reliability import builders
from tracking.relay import outbox_relay_run, stream_last_seq

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

WRITERS = 8
EVENTS = scaled(2_000, full=10_000)
MAX_HOLD_SECONDS = 0.2
EVENTS_PER_TRANSACTION = (1, 4)
RUN_LIMIT_SECONDS = 240


def _writer(index: int, shipment_ids: list[int], quota: int, rng_seed: int, errors):
    rng = random.Random(rng_seed)
    written = 0
    try:
        shipments = list(Shipment.objects.filter(pk__in=shipment_ids))
        while written < quota:
            batch = min(quota - written, rng.randint(*EVENTS_PER_TRANSACTION))
            with transaction.atomic():
                for _ in range(batch):
                    event_record(
                        shipment=rng.choice(shipments),
                        type="r4.probe",
                        source="system",
                        payload={"writer": index, "n": written},
                    )
                    written += 1
                # The ids are taken; hold the transaction so later ids commit first.
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_sleep(%s)", [rng.uniform(0, MAX_HOLD_SECONDS)]
                    )
    except Exception as exc:  # reported by the test, never swallowed
        errors.append(repr(exc))
    finally:
        connection.close()


def _relay(stop: threading.Event, published_seqs: list[int], errors):
    try:
        while not stop.is_set():
            result = outbox_relay_run(batch_size=200)
            published_seqs.extend(result.seqs)
            if not result.published:
                time.sleep(0.02)
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        connection.close()


def _naive_poller(stop: threading.Event, seen: set[int], errors):
    """The pitfall: remember the highest id seen and ask only for larger ones."""
    high_water_mark = 0
    try:
        while not stop.is_set():
            ids = list(
                OutboxMessage.objects.filter(id__gt=high_water_mark)
                .order_by("id")
                .values_list("id", flat=True)[:1000]
            )
            if ids:
                seen.update(ids)
                high_water_mark = ids[-1]
            else:
                time.sleep(0.002)
        # A final drain of its own, so it is judged on the same footing.
        seen.update(
            OutboxMessage.objects.filter(id__gt=high_water_mark).values_list(
                "id", flat=True
            )
        )
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        connection.close()


def _read_after_seq(pool: HttpPool, headers, after: int, got: dict[str, int]) -> int:
    """One page of /api/v1/live/; returns the new cursor."""
    answer = pool.send(
        "GET", f"/api/v1/live/?after_seq={after}&limit=500", headers=headers
    )
    if answer.status != 200:
        raise AssertionError(f"after_seq answered {answer.status}: {answer.body[:200]}")
    page = json.loads(answer.body)
    for message in page["messages"]:
        got[message["message_id"]] = message["seq"]
    return page["last_seq"]


def _dashboard_reader(
    stop: threading.Event, url: str, headers, got: dict[str, int], errors
):
    cursor = 0
    try:
        with HttpPool(url, workers=1) as pool:
            while not stop.is_set():
                new = _read_after_seq(pool, headers, cursor, got)
                if new == cursor:
                    time.sleep(0.05)
                cursor = new
    except Exception as exc:
        errors.append(repr(exc))


def test_r4_no_event_is_skipped_when_commits_come_out_of_order(
    live_server_url, hubs, figure
):
    shipment_ids = [factories.shipment_make().shipment.pk for _ in range(WRITERS)]
    dispatcher = factories.dispatcher_make()
    headers = builders.token_header(dispatcher)
    outbox_relay_run()  # the setup's own messages are numbered before the race
    first_id = OutboxMessage.objects.order_by("-id").values_list("id", flat=True)[0]

    errors: list[str] = []
    published: list[int] = []
    naive_seen: set[int] = set()
    dashboard_got: dict[str, int] = {}
    stop_readers, stop_naive = threading.Event(), threading.Event()
    quota = [
        EVENTS // WRITERS + (1 if i < EVENTS % WRITERS else 0) for i in range(WRITERS)
    ]
    writers = [
        threading.Thread(
            target=_writer, args=(i, shipment_ids, quota[i], seed() + i, errors)
        )
        for i in range(WRITERS)
    ]
    readers = [
        threading.Thread(target=_relay, args=(stop_readers, published, errors)),
        threading.Thread(
            target=_dashboard_reader,
            args=(stop_readers, live_server_url.url, headers, dashboard_got, errors),
        ),
    ]
    naive = threading.Thread(
        target=_naive_poller, args=(stop_naive, naive_seen, errors)
    )

    started = time.monotonic()
    for thread in [*readers, naive, *writers]:
        thread.start()
    for thread in writers:
        thread.join(timeout=RUN_LIMIT_SECONDS)
    write_seconds = time.monotonic() - started
    stop_naive.set()
    naive.join(timeout=30)
    # Drain: the relay and the reader keep going until everything is through.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pending = OutboxMessage.objects.filter(published_at__isnull=True).exists()
        read_up_to = max(dashboard_got.values(), default=0)
        if not pending and read_up_to >= stream_last_seq():
            break
        time.sleep(0.1)
    drain_seconds = time.monotonic() - started - write_seconds
    stop_readers.set()
    for thread in readers:
        thread.join(timeout=30)
    # One last read from the final cursor, as a client does on reconnect.
    with HttpPool(live_server_url.url, workers=1) as pool:
        cursor = max(dashboard_got.values(), default=0)
        while (new := _read_after_seq(pool, headers, cursor, dashboard_got)) != cursor:
            cursor = new

    assert not errors, errors
    assert not any(t.is_alive() for t in [*writers, *readers, naive])
    race = OutboxMessage.objects.filter(id__gt=first_id)
    in_db = dict(race.values_list("id", "message_id"))
    probes = race.filter(type="shipment.event", payload__event_type="r4.probe").count()
    seqs = dict(race.values_list("id", "stream_seq"))
    never_published = [
        i for i, s in seqs.items() if s is None or s not in set(published)
    ]
    returned = {str(m) for m in in_db.values()} & set(dashboard_got)
    never_returned = len(in_db) - len(returned)
    naive_missed = len(set(in_db) - naive_seen)
    all_seqs = sorted(s for s in seqs.values() if s is not None)
    gap_free = all_seqs == list(range(all_seqs[0], all_seqs[0] + len(all_seqs)))

    figure(
        "R4",
        "events never published or never returned by after_seq",
        f"{len(never_published)} unpublished, {never_returned} not returned, of {len(in_db)} "
        f"({probes} probe events; writes {write_seconds:.1f} s, drain {drain_seconds:.1f} s)",
        f"0 of {EVENTS}",
        not never_published and not never_returned and probes == EVENTS,
        details={"stream_seq_gap_free": gap_free},
    )
    figure(
        "R4",
        "naive id > high-water-mark poller missed (teeth)",
        f"{naive_missed} of {len(in_db)}",
        "> 0 (the race happened)",
        naive_missed > 0,
    )

    assert probes == EVENTS
    assert never_published == []
    assert never_returned == 0
    assert gap_free
    assert naive_missed > 0, (
        "no out-of-order commit was observed: the test lost its teeth"
    )
