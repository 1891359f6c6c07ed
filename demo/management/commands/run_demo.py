"""Serve the platform and drive the demo drivers, until Ctrl-C.

uvicorn (HTTP + WebSockets, config.asgi) ──▶ http://127.0.0.1:PORT
simulate_drivers ── real driver API over HTTP ──▶ the same server
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
from django.core.management import get_commands
from django.core.management.base import BaseCommand


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Run the demo: the ASGI server plus simulated drivers on their published routes."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--password", default="allmile-demo")
        parser.add_argument(
            "--speedup",
            type=float,
            default=30.0,
            help="Simulated seconds per real second.",
        )
        parser.add_argument("--no-simulation", action="store_true")

    def handle(self, *args, host, port, password, speedup, no_simulation, **options):
        # Stop the children on SIGTERM as on Ctrl-C, so none outlives the demo.
        signal.signal(signal.SIGTERM, _interrupt)
        base_url = f"http://{host}:{port}"
        env = dict(os.environ)
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                host,
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
        )
        processes = [server]
        try:
            self._wait_until_up(base_url, server)
            if not no_simulation and "simulate_drivers" in get_commands():
                processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "manage.py",
                            "simulate_drivers",
                            "--base-url",
                            base_url,
                            "--password",
                            password,
                            "--speedup",
                            str(speedup),
                        ],
                        env=env,
                    )
                )
            self._print_welcome(base_url, password, simulated=len(processes) > 1)
            while all(p.poll() is None for p in processes[:1]):
                time.sleep(1)
        except KeyboardInterrupt:
            self.stdout.write("\nStopping…")
        finally:
            for process in reversed(processes):
                if process.poll() is None:
                    process.send_signal(signal.SIGINT)
            for process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()

    def _wait_until_up(self, base_url: str, server: subprocess.Popen) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit("The server exited during start-up.")
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise SystemExit("The server did not answer /healthz within 60 s.")

    def _print_welcome(self, base_url: str, password: str, *, simulated: bool) -> None:
        from dispatch.models import Driver

        drivers = Driver.objects.count()
        lines = [
            "",
            "Allmile is running (embedded default: SQLite, in-memory channel layer, in-process tasks).",
            f"  Dashboard      {base_url}/dashboard/   (login: dispatcher / {password})",
            f"  API docs       {base_url}/api/docs/",
            f"  Admin          {base_url}/admin/       (login: admin / {password})",
            f"  Health         {base_url}/healthz",
            f"  Driver logins  driver1 … driver{drivers} / {password}  (token: POST {base_url}/api/v1/auth/token/)",
            "  Simulated drivers are "
            + ("driving their routes now." if simulated else "off."),
            "Press Ctrl-C to stop.",
            "",
        ]
        self.stdout.write("\n".join(lines))
