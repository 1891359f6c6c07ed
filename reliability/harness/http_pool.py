"""Many HTTP requests at once against a live server, from a bounded thread pool.

One ``httpx.Client`` (thread-safe, keep-alive pool) is shared by the workers;
every request has a timeout, so a hung server fails the test instead of
hanging it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

REQUEST_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Sent:
    """One answer, kept small: what the tests compare."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""  # a transport error instead of an answer


class HttpPool:
    def __init__(self, base_url: str, *, workers: int = 16):
        self.base_url = base_url.rstrip("/")
        self.workers = workers
        limits = httpx.Limits(
            max_connections=workers, max_keepalive_connections=workers
        )
        self.client = httpx.Client(
            base_url=self.base_url, timeout=REQUEST_TIMEOUT_SECONDS, limits=limits
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> HttpPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, method: str, path: str, **kwargs: Any) -> Sent:
        started = time.monotonic()
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            return Sent(
                status=0,
                body=b"",
                seconds=time.monotonic() - started,
                error=f"{type(exc).__name__}: {exc}",
            )
        return Sent(
            status=response.status_code,
            body=response.content,
            headers=dict(response.headers),
            seconds=time.monotonic() - started,
        )

    def map(self, fn: Callable[[Any], Sent], items: Iterable[Any]) -> list[Sent]:
        """``fn(item)`` for every item on the pool, answers in item order."""
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(fn, items))

    def burst(self, calls: Sequence[tuple[str, str, dict[str, Any]]]) -> list[Sent]:
        """Send (method, path, kwargs) calls all at once; answers in call order."""
        return self.map(lambda call: self.send(call[0], call[1], **call[2]), calls)
