"""The fault proxy behaves as each mode says, against a real socket server."""

from __future__ import annotations

import asyncio
import time

import pytest

from reliability.faultproxy import FaultMix, FaultProxy

RESPONSE_BODY = b'{"results": ["applied", "applied", "applied", "applied"]}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(RESPONSE_BODY)
    + RESPONSE_BODY
)
REQUEST_BODY_BYTES = 200


class CountingServer:
    """Answers a request only once its whole body (Content-Length) has arrived,
    as an HTTP server does; ``requests`` counts the requests it handled."""

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
        try:
            while not _whole_request(data):
                chunk = await reader.read(1024)
                if not chunk:
                    break
                data += chunk
                self.bytes_received += len(chunk)
        except ConnectionError:
            pass
        if _whole_request(data):
            self.requests += 1
            writer.write(RESPONSE)
            await writer.drain()
        writer.close()

    async def stop(self):
        self.server.close()
        await self.server.wait_closed()


def _whole_request(data: bytes) -> bool:
    head, found, body = data.partition(b"\r\n\r\n")
    if not found:
        return False
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return len(body) >= length


async def _request(port: int, timeout: float = 3.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % REQUEST_BODY_BYTES
        + b"a" * REQUEST_BODY_BYTES
    )
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


async def _request_collecting(port: int, timeout: float = 3.0) -> tuple[bytes, Exception | None]:
    """What a client has in hand when the connection ends, and how it ended."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % REQUEST_BODY_BYTES
        + b"a" * REQUEST_BODY_BYTES
    )
    await writer.drain()
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(1024), timeout):
            received += chunk
        return received, None
    except (TimeoutError, ConnectionError, OSError) as exc:
        return received, exc
    finally:
        writer.close()


async def _run(mode: str, *, collect: bool = False, **options):
    server = CountingServer()
    await server.start()
    proxy = FaultProxy("127.0.0.1", server.port, mode=mode, **options)
    await proxy.start()
    started = time.monotonic()
    try:
        if collect:
            outcome = await _request_collecting(proxy.listen_port)
        else:
            try:
                outcome = await _request(proxy.listen_port)
            except (TimeoutError, ConnectionError, OSError) as exc:
                outcome = exc
        return outcome, server, time.monotonic() - started
    finally:
        await proxy.stop()
        await server.stop()


def test_pass_forwards_request_and_response():
    outcome, server, _ = asyncio.run(_run("pass"))
    assert outcome == RESPONSE
    assert server.requests == 1


def test_cut_response_lets_the_server_handle_the_request_but_the_client_gets_nothing():
    (received, ended_by), server, _ = asyncio.run(_run("cut_response", collect=True))
    assert server.requests == 1
    assert received == b""
    assert isinstance(ended_by, ConnectionError)


def test_reset_after_n_bytes_stops_the_request_midway():
    outcome, server, _ = asyncio.run(_run("reset", reset_after_bytes=20))
    assert server.requests == 0
    assert server.bytes_received <= 20
    assert not (isinstance(outcome, bytes) and outcome.endswith(RESPONSE_BODY))


def test_reset_request_body_delivers_the_head_and_half_the_body_then_resets():
    (received, ended_by), server, _ = asyncio.run(_run("reset_request_body", collect=True))
    assert server.requests == 0  # the server never had a whole request to handle
    head_bytes = server.bytes_received - REQUEST_BODY_BYTES // 2
    assert 0 < head_bytes < 100  # the head went through, and half of the body
    assert received == b""
    assert isinstance(ended_by, ConnectionError)


def test_reset_response_body_lets_the_server_answer_and_cuts_its_body_in_half():
    (received, ended_by), server, _ = asyncio.run(_run("reset_response_body", collect=True))
    assert server.requests == 1
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")  # a status line the client must not trust
    assert body == RESPONSE_BODY[: len(RESPONSE_BODY) // 2]
    assert isinstance(ended_by, ConnectionError)


def test_delay_holds_each_chunk():
    outcome, server, elapsed = asyncio.run(_run("delay", delay_seconds=0.4))
    assert outcome == RESPONSE
    assert elapsed >= 0.8  # one delay each way


def test_a_proxy_served_in_a_thread_switches_to_clean():
    async def one_request(port):
        try:
            return await _request(port)
        except (TimeoutError, ConnectionError, OSError) as exc:
            return exc

    async def main():
        server = CountingServer()
        await server.start()
        proxy = FaultProxy("127.0.0.1", server.port, mix=FaultMix(cut_response=1.0))
        with proxy.serving_in_thread():
            cut = await one_request(proxy.listen_port)
            proxy.make_clean()
            clean = await one_request(proxy.listen_port)
        await server.stop()
        return cut, clean, server, dict(proxy.counts)

    cut, clean, server, counts = asyncio.run(main())
    assert not isinstance(cut, bytes) or cut == b""
    assert clean == RESPONSE
    assert server.requests == 2
    assert counts == {"cut_response": 1, "pass": 1}


def test_blackhole_answers_nothing_and_forwards_nothing():
    outcome, server, _ = asyncio.run(_run("blackhole"))
    assert server.requests == 0
    assert not isinstance(outcome, bytes) or outcome == b""


@pytest.mark.parametrize("seed", [1, 2])
def test_a_mix_draws_modes_in_proportion(seed):
    import random

    mix = FaultMix(cut_response=0.3, reset=0.05, delay=0.1, reset_response_body=0.05)
    rng = random.Random(seed)
    draws = [mix.draw(rng) for _ in range(10_000)]
    assert 0.27 < draws.count("cut_response") / 10_000 < 0.33
    assert 0.035 < draws.count("reset") / 10_000 < 0.065
    assert 0.08 < draws.count("delay") / 10_000 < 0.12
    assert 0.035 < draws.count("reset_response_body") / 10_000 < 0.065
    assert 0.45 < draws.count("pass") / 10_000 < 0.55


def test_stopping_a_proxy_in_a_thread_drops_the_connections_still_open():
    async def main():
        server = CountingServer()
        await server.start()
        proxy = FaultProxy("127.0.0.1", server.port, mode="delay", delay_seconds=30)
        with proxy.serving_in_thread():
            held = asyncio.create_task(_request_collecting(proxy.listen_port, timeout=20))
            await asyncio.sleep(0.3)  # the request sits in the proxy's 30 s delay
            started = time.monotonic()
        stopped_in = time.monotonic() - started
        received, ended_by = await held
        await server.stop()
        return stopped_in, received, ended_by

    stopped_in, received, ended_by = asyncio.run(main())
    assert stopped_in < 8  # not the 30 s delay
    assert received == b""
    assert isinstance(ended_by, ConnectionError)
