"""Real servers on loopback for the channel tests: an SMTP server (aiosmtpd)
and a small HTTP server shaped like an SMS provider's API."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


class _Inbox:
    """aiosmtpd handler: keeps every message it accepts, in arrival order."""

    def __init__(self):
        self.messages: list[EmailMessage] = []
        self.refuse: dict[
            str, str
        ] = {}  # address -> SMTP reply, e.g. "550 no such user"
        self._lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        reply = self.refuse.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        message = email.message_from_bytes(
            envelope.content, policy=email.policy.default
        )
        with self._lock:
            self.messages.append(message)
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(self):
        self.inbox = _Inbox()
        # aiosmtpd checks readiness by connecting to the configured port, so it
        # needs a real one (not 0): take a free port from the OS.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free_port = probe.getsockname()[1]
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=free_port)
        self.running = False
        self.started_once = False

    def start(self) -> SmtpServer:
        if (
            self.started_once
        ):  # a stopped controller cannot restart: a new one, same port
            self.controller = Controller(
                self.inbox, hostname="127.0.0.1", port=self.port
            )
        self.controller.start()
        self.running = self.started_once = True
        return self

    @property
    def port(self) -> int:
        return self.controller.port

    def stop(self) -> None:
        if self.running:
            self.controller.stop()
            self.running = False

    @property
    def messages(self) -> list[EmailMessage]:
        return list(self.inbox.messages)

    def wait_for(self, count: int, timeout_seconds: float = 30) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if len(self.inbox.messages) >= count:
                return self.messages
            time.sleep(0.05)
        raise AssertionError(
            f"expected {count} e-mails within {timeout_seconds} s, got {len(self.inbox.messages)}"
        )


# Keep aiosmtpd's default, which refuses nothing we send.
assert SMTP


@dataclass
class SmsCall:
    path: str
    authorization: tuple[str, str]
    form: dict[str, str]


@dataclass
class SmsApi:
    """Answers from ``script`` in order (status, json body), then 201s."""

    script: list[tuple[int, dict]] = field(default_factory=list)
    calls: list[SmsCall] = field(default_factory=list)
    delay_seconds: float = 0.0
    server: ThreadingHTTPServer | None = None

    def start(self) -> SmsApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                user, _, password = (
                    base64.b64decode(
                        self.headers.get("Authorization", "Basic ").split(" ", 1)[1]
                        or ""
                    )
                    .decode()
                    .partition(":")
                )
                form = {k: v[0] for k, v in parse_qs(raw).items()}
                api.calls.append(SmsCall(self.path, (user, password), form))
                if api.delay_seconds:
                    time.sleep(api.delay_seconds)
                status, body = (
                    api.script.pop(0)
                    if api.script
                    else (201, {"sid": f"SM{len(api.calls):04d}", "status": "queued"})
                )
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/2010-04-01"

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def wait_until(predicate: Callable[[], object], timeout_seconds: float, *, what: str):
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_seconds} s waiting for {what}")
