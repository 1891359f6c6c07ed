"""A live socket that stays quiet longer than the layer's blocking read keeps working."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_channel_idle_past_the_blocking_read_still_receives():
    layer = get_channel_layer()
    assert type(layer).__name__ == "RedisChannelLayer"
    channel = await layer.new_channel()
    quiet_seconds = layer.brpop_timeout + 1.5  # one empty blocking read, then more

    async def send_later():
        await asyncio.sleep(quiet_seconds)
        await layer.send(channel, {"type": "ping", "n": 1})

    sender = asyncio.create_task(send_later())
    message = await asyncio.wait_for(layer.receive(channel), timeout=quiet_seconds + 10)
    await sender
    assert message == {"type": "ping", "n": 1}
