"""The fault proxy behaves as each mode says, against a real socket server."""

from __future__ import annotations

import asyncio
import time

import pytest

from reliability.faultproxy import FaultMix, FaultProxy

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class CountingServer:
    def __init__(self):
        self.requests = 0
        self.bytes_received = 0
        self.server = None
        self.port = 0

    async def start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await reader.read(1024)
            if not chunk:
                break
            data += chunk
            self.bytes_received += len(chunk)
        if b"\r\n\r\n" in data:
            self.requests += 1
            writer.write(RESPONSE)
            await writer.drain()
        writer.close()

    async def stop(self):
        self.server.close()
        await self.server.wait_closed()


async def _request(port: int, timeout: float = 3.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 200\r\n\r\n" + b"a" * 200)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


async def _run(mode: str, **options):
    server = CountingServer()
    await server.start()
    proxy = FaultProxy("127.0.0.1", server.port, mode=mode, **options)
    await proxy.start()
    started = time.monotonic()
    try:
        try:
            answer = await _request(proxy.listen_port)
            outcome = answer
        except (ConnectionError, asyncio.TimeoutError, OSError) as exc:
            outcome = exc
        return outcome, server, time.monotonic() - started
    finally:
        await proxy.stop()
        await server.stop()


def test_pass_forwards_request_and_response():
    outcome, server, _ = asyncio.run(_run("pass"))
    assert outcome.endswith(b"ok")
    assert server.requests == 1


def test_cut_response_lets_the_server_handle_the_request_but_the_client_gets_nothing():
    outcome, server, _ = asyncio.run(_run("cut_response"))
    assert server.requests == 1
    assert not (isinstance(outcome, bytes) and outcome.endswith(b"ok"))


def test_reset_after_n_bytes_stops_the_request_midway():
    outcome, server, _ = asyncio.run(_run("reset", reset_after_bytes=20))
    assert server.requests == 0
    assert server.bytes_received <= 20
    assert not (isinstance(outcome, bytes) and outcome.endswith(b"ok"))


def test_delay_holds_each_chunk():
    outcome, server, elapsed = asyncio.run(_run("delay", delay_seconds=0.4))
    assert outcome.endswith(b"ok")
    assert elapsed >= 0.8  # one delay each way


def test_blackhole_answers_nothing_and_forwards_nothing():
    outcome, server, _ = asyncio.run(_run("blackhole"))
    assert server.requests == 0
    assert not isinstance(outcome, bytes) or outcome == b""


@pytest.mark.parametrize("seed", [1, 2])
def test_a_mix_draws_modes_in_proportion(seed):
    import random

    mix = FaultMix(cut_response=0.3, reset=0.05, delay=0.1)
    rng = random.Random(seed)
    draws = [mix.draw(rng) for _ in range(10_000)]
    assert 0.27 < draws.count("cut_response") / 10_000 < 0.33
    assert 0.035 < draws.count("reset") / 10_000 < 0.065
    assert 0.08 < draws.count("delay") / 10_000 < 0.12
