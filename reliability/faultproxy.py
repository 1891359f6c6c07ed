"""A small asyncio TCP fault proxy for reliability tests (no toxiproxy or netem here).

Modes, switchable while running (``proxy.mode = …``) or per connection by chance:

* ``pass``        forward both ways untouched
* ``delay``       hold each chunk ``delay_seconds`` before forwarding
* ``blackhole``   accept and read, forward nothing, answer nothing
* ``reset``       forward ``reset_after_bytes`` bytes upstream, then reset both sides
* ``cut_response`` forward the whole request, let the server answer, then drop the
  connection before the first response byte reaches the client (the server has
  committed; the client never learns it: the case idempotency keys exist for)
* ``reset_request_body``  forward the request head and half of its body, then
  reset: the server never sees a whole request
* ``reset_response_body`` forward the whole request, let the server answer, pass
  the response head and half of its body, then reset: the server has committed
  and the client holds a status line it must not trust

Usage as a script: ``python -m reliability.faultproxy --listen 127.0.0.1:9000
--target 127.0.0.1:8000 --mode cut_response``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

MODES = (
    "pass", "delay", "blackhole", "reset", "cut_response",
    "reset_request_body", "reset_response_body",
)
CHUNK_BYTES = 65536
# How long a ``reset_*_body`` mode waits for the whole message it cuts in half.
MESSAGE_TIMEOUT_SECONDS = 30.0
RESET_PAUSE_SECONDS = 0.1
SHUTDOWN_SECONDS = 5.0


@dataclass
class FaultMix:
    """Chances per connection; what is left over passes. E.g. cut 0.3, reset 0.05, delay 0.1."""

    cut_response: float = 0.0
    reset: float = 0.0
    delay: float = 0.0
    blackhole: float = 0.0
    reset_request_body: float = 0.0
    reset_response_body: float = 0.0

    def draw(self, rng: random.Random) -> str:
        roll = rng.random()
        for mode in (
            "cut_response", "reset", "delay", "blackhole",
            "reset_request_body", "reset_response_body",
        ):
            chance = getattr(self, mode)
            if roll < chance:
                return mode
            roll -= chance
        return "pass"


@dataclass
class FaultProxy:
    target_host: str
    target_port: int
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    mode: str = "pass"
    mix: FaultMix | None = None  # when set, each connection draws its own mode
    delay_seconds: float = 2.0
    reset_after_bytes: int = 64
    seed: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._server: asyncio.AbstractServer | None = None
        self._open: set = set()  # writers of the connections being proxied

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.listen_port)
        self.listen_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _shutdown(self) -> None:
        """Stop listening and drop the connections still open; their handlers
        then end by themselves (cancelled only if they do not within seconds)."""
        await self.stop()
        for writer in list(self._open):
            _abort(writer)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            _, stuck = await asyncio.wait(others, timeout=SHUTDOWN_SECONDS)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)

    def make_clean(self) -> None:
        """Every new connection passes from now on (connections already open
        keep the mode they drew)."""
        self.mix = None
        self.mode = "pass"

    @contextlib.contextmanager
    def serving_in_thread(self) -> Iterator[FaultProxy]:
        """Run the proxy on its own event loop in a thread, so that clients
        blocking their own loop never stall the network they go through."""
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            started.set()
            loop.run_forever()

        thread = threading.Thread(target=serve, name="fault-proxy", daemon=True)
        thread.start()
        if not started.wait(10):
            raise RuntimeError("fault proxy did not start")
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(SHUTDOWN_SECONDS + 10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    async def _handle(self, client_reader, client_writer) -> None:
        self._open.add(client_writer)
        try:
            await self._proxy(client_reader, client_writer)
        finally:
            self._open.discard(client_writer)

    async def _proxy(self, client_reader, client_writer) -> None:
        mode = self.mix.draw(self._rng) if self.mix else self.mode
        self.counts[mode] = self.counts.get(mode, 0) + 1
        if mode == "blackhole":
            with contextlib.suppress(Exception):
                while await client_reader.read(CHUNK_BYTES):
                    pass
            _abort(client_writer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            _abort(client_writer)
            return
        self._open.add(upstream_writer)
        try:
            await self._forward(mode, client_reader, client_writer, upstream_reader, upstream_writer)
        finally:
            self._open.discard(upstream_writer)

    async def _forward(self, mode, client_reader, client_writer, upstream_reader, upstream_writer) -> None:
        if mode in ("reset_request_body", "reset_response_body"):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._half_message(mode, client_reader, client_writer, upstream_reader, upstream_writer),
                    MESSAGE_TIMEOUT_SECONDS,
                )
            _abort(upstream_writer)
            _abort(client_writer)
            return
        to_server = asyncio.create_task(self._pipe(client_reader, upstream_writer, mode, upstream=True))
        to_client = asyncio.create_task(self._pipe(upstream_reader, client_writer, mode, upstream=False))
        failed = False
        pending = {to_server, to_client}
        try:
            while to_client in pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(task.exception() is not None for task in done):
                    failed = True
                    break
        finally:
            for task in pending:  # the server closed, a side failed, or the proxy stops
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        closer = _abort if failed else _close
        closer(upstream_writer)
        closer(client_writer)

    async def _half_message(self, mode, client_reader, client_writer, upstream_reader, upstream_writer):
        """Pass one HTTP exchange up to the middle of the request body (or of the
        response body); the caller then resets both sides."""
        request = await _read_http_message(client_reader)
        if mode == "reset_request_body":
            upstream_writer.write(request[: _middle_of_body(request)])
            await upstream_writer.drain()
            return
        upstream_writer.write(request)
        await upstream_writer.drain()
        response = await _read_http_message(upstream_reader)
        client_writer.write(response[: _middle_of_body(response)])
        await client_writer.drain()
        # The client reads the status line and half the body before the line dies.
        await asyncio.sleep(RESET_PAUSE_SECONDS)

    async def _pipe(self, reader, writer, mode: str, *, upstream: bool) -> None:
        sent = 0
        while True:
            data = await reader.read(CHUNK_BYTES)
            if not data:
                if upstream:
                    with contextlib.suppress(Exception):
                        writer.write_eof()
                return
            if mode == "delay":
                await asyncio.sleep(self.delay_seconds)
            if mode == "reset" and upstream:
                room = self.reset_after_bytes - sent
                if room <= 0 or len(data) > room:
                    writer.write(data[: max(room, 0)])
                    await writer.drain()
                    raise ConnectionResetError("fault proxy: reset after N bytes")
            if mode == "cut_response" and not upstream:
                # The server has answered: the request reached it in full. Drop it.
                raise ConnectionResetError("fault proxy: response cut")
            writer.write(data)
            await writer.drain()
            sent += len(data)


async def _read_http_message(reader) -> bytes:
    """One HTTP/1.1 message: its head and a body framed by Content-Length or
    chunked encoding (else whatever comes until the peer closes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await reader.read(CHUNK_BYTES)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    def complete() -> bool:
        if b"content-length" in headers:
            return len(body) >= int(headers[b"content-length"])
        if headers.get(b"transfer-encoding") == b"chunked":
            return body.endswith(b"0\r\n\r\n")
        return not head.startswith(b"HTTP/")  # a request without a body is complete
    while not complete():
        chunk = await reader.read(CHUNK_BYTES)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _middle_of_body(message: bytes) -> int:
    """The offset half-way through the body (half-way through the head when
    there is no body)."""
    head_end = message.find(b"\r\n\r\n") + 4
    if head_end < 4:
        return len(message) // 2
    body_length = len(message) - head_end
    if body_length == 0:
        return head_end // 2
    return head_end + max(1, body_length // 2)


def _close(writer) -> None:
    with contextlib.suppress(Exception):
        writer.close()


def _abort(writer) -> None:
    """Close with RST rather than FIN, as a dropped mobile connection looks."""
    with contextlib.suppress(Exception):
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:9000")
    parser.add_argument("--target", required=True)
    parser.add_argument("--mode", choices=MODES, default="pass")
    parser.add_argument("--delay-seconds", type=float, default=2.0)
    parser.add_argument("--reset-after-bytes", type=int, default=64)
    args = parser.parse_args()
    listen_host, listen_port = args.listen.rsplit(":", 1)
    target_host, target_port = args.target.rsplit(":", 1)
    proxy = FaultProxy(
        target_host, int(target_port), listen_host, int(listen_port), mode=args.mode,
        delay_seconds=args.delay_seconds, reset_after_bytes=args.reset_after_bytes,
    )

    async def run() -> None:
        await proxy.start()
        print(f"fault proxy {args.mode} on {listen_host}:{proxy.listen_port} → {args.target}")
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
