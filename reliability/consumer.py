"""A live-stream consumer for R3: joins the relay's dashboard group on the
channel layer and applies every message it receives through an inbox.

    python -m reliability.consumer --seconds 600     (with config.settings.reliability)

Per received message, in one transaction:

* a receipt row (``reliability_r03_receipt``, no unique key): every delivery,
  so two receipts of one ``message_id`` are a duplicate publish;
* the inbox row (``reliability.InboxMessage``, ``message_id`` unique, inserted
  with ``ON CONFLICT DO NOTHING``), and only when it was new, the application
  (``reliability_r03_application``, no unique key): two applications of one
  ``message_id`` would be a duplicate application.

The layer is at-most-once and Redis may go away: on an error the consumer
waits and receives again on the same channel (what Redis still holds for it is
not lost), and it joins the group again every few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import django

RECEIPT_TABLE = "reliability_r03_receipt"
APPLICATION_TABLE = "reliability_r03_application"
REJOIN_SECONDS = 5.0
RETRY_SECONDS = 0.5
logger = logging.getLogger("reliability.consumer")

TABLES_SQL = f"""
CREATE TABLE IF NOT EXISTS {RECEIPT_TABLE} (
    message_id varchar(64) NOT NULL,
    seq bigint,
    received_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS {APPLICATION_TABLE} (
    message_id varchar(64) NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


def tables_create() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(TABLES_SQL)


def received_record(received: list[tuple[str, int | None, float]]) -> int:
    """Store receipts and apply new messages once; returns how many were new."""
    from django.db import connection, transaction

    applied = 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {RECEIPT_TABLE} (message_id, seq, received_at)"
            " VALUES (%s, %s, to_timestamp(%s))",
            received,
        )
        for message_id, seq, _at in received:
            cursor.execute(
                "INSERT INTO reliability_inboxmessage (message_id, seq, received_at)"
                " VALUES (%s, %s, now()) ON CONFLICT (message_id) DO NOTHING RETURNING id",
                [message_id, seq],
            )
            if cursor.fetchone() is not None:
                cursor.execute(
                    f"INSERT INTO {APPLICATION_TABLE} (message_id) VALUES (%s)", [message_id]
                )
                applied += 1
    return applied


def bodies_of(message: dict) -> list[dict]:
    """The relay sends ``live.batch`` (several, in order) or ``live.message``."""
    if message.get("type") == "live.batch":
        return list(message.get("messages", []))
    return [message]


async def consume(group: str, deadline: float) -> None:
    from channels.layers import channel_layers

    loop = asyncio.get_running_loop()
    database = ThreadPoolExecutor(max_workers=1)  # Django's ORM is sync: one thread
    await loop.run_in_executor(database, tables_create)
    layer = channel_layers.make_backend("default")
    channel = await layer.new_channel()
    received_total = applied_total = errors = 0

    async def keep_joined() -> None:
        # Membership is a Redis key: join again, in case a Redis restart lost it.
        while True:
            with contextlib.suppress(Exception):
                await layer.group_add(group, channel)
            await asyncio.sleep(REJOIN_SECONDS)

    rejoin = asyncio.create_task(keep_joined())
    await asyncio.sleep(0.2)
    print("consumer ready", flush=True)
    while time.monotonic() < deadline:
        try:
            message = await layer.receive(channel)
        except Exception as exc:  # noqa: BLE001 - Redis down or a read timeout: retry
            # Same channel: what is queued for it in Redis is still there.
            errors += 1
            logger.warning("receive failed (%r); retrying", exc)
            await asyncio.sleep(RETRY_SECONDS)
            continue
        at = time.time()
        received = [
            (str(body["message_id"]), body.get("seq"), at)
            for body in bodies_of(message)
            if body.get("message_id")
        ]
        if not received:
            continue
        applied_total += await loop.run_in_executor(database, received_record, received)
        received_total += len(received)
        print(f"received {received_total} applied {applied_total} errors {errors}", flush=True)
    rejoin.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--group", default="dashboard")
    parser.add_argument("--seconds", type=float, default=900, help="stop after this long")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    django.setup()
    asyncio.run(consume(args.group, time.monotonic() + args.seconds))


if __name__ == "__main__":
    main()
