"""A channel layer that dies on cue, for R3 (c): the relay SIGKILLed after it
published to the broker and before it marked the rows published.

``config.settings.reliability`` uses it instead of ``RedisChannelLayer`` in a
process started with ``RELIABILITY_KILL_AFTER_PUBLISH=<flag path>``. When the
harness creates the flag file, the next ``group_send`` to the dashboard group
completes, the process that removed the flag appends one line to
``<flag path>.log`` and SIGKILLs itself: the relay's marking step never runs.
"""

from __future__ import annotations

import json
import os
import signal
import time

from channels_redis.core import RedisChannelLayer

from shipments.outbox import DASHBOARD_GROUP

KILL_FLAG_ENV = "RELIABILITY_KILL_AFTER_PUBLISH"


def kill_armed(flag_path: str) -> bool:
    """True for exactly one caller per flag file (removal is atomic)."""
    try:
        os.unlink(flag_path)
    except FileNotFoundError:
        return False
    return True


class KillAfterPublishLayer(RedisChannelLayer):
    async def group_send(self, group, message):
        await super().group_send(group, message)
        flag_path = os.environ.get(KILL_FLAG_ENV, "")
        if group != DASHBOARD_GROUP or not flag_path or not kill_armed(flag_path):
            return
        record = {
            "pid": os.getpid(),
            "at": time.time(),
            "message_ids": [m.get("message_id") for m in message.get("messages", [message])],
        }
        with open(f"{flag_path}.log", "a") as log:
            log.write(json.dumps(record) + "\n")
            log.flush()
            os.fsync(log.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
