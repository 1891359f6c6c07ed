"""A small asyncio TCP fault proxy for reliability tests (no toxiproxy or netem here).

Modes, switchable while running (``proxy.mode = …``) or per connection by chance:

* ``pass``        forward both ways untouched
* ``delay``       hold each chunk ``delay_seconds`` before forwarding
* ``blackhole``   accept and read, forward nothing, answer nothing
* ``reset``       forward ``reset_after_bytes`` bytes upstream, then reset both sides
* ``cut_response`` forward the whole request, let the server answer, then drop the
  connection before the first response byte reaches the client (the server has
  committed; the client never learns it: the case idempotency keys exist for)

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
from dataclasses import dataclass, field

MODES = ("pass", "delay", "blackhole", "reset", "cut_response")
CHUNK_BYTES = 65536


@dataclass
class FaultMix:
    """Chances per connection; what is left over passes. E.g. cut 0.3, reset 0.05, delay 0.1."""

    cut_response: float = 0.0
    reset: float = 0.0
    delay: float = 0.0
    blackhole: float = 0.0

    def draw(self, rng: random.Random) -> str:
        roll = rng.random()
        for mode in ("cut_response", "reset", "delay", "blackhole"):
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

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.listen_port)
        self.listen_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, client_reader, client_writer) -> None:
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
        to_server = asyncio.create_task(self._pipe(client_reader, upstream_writer, mode, upstream=True))
        to_client = asyncio.create_task(self._pipe(upstream_reader, client_writer, mode, upstream=False))
        failed = False
        pending = {to_server, to_client}
        while to_client in pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(task.exception() is not None for task in done):
                failed = True
                break
        for task in pending:  # the server closed, or a side failed: stop the other way
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        closer = _abort if failed else _close
        closer(upstream_writer)
        closer(client_writer)

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
