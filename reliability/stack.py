"""A private stack for the [FAULT] and [LOAD] tiers (``make reliability``).

PostgreSQL and Redis run on their own loopback ports and temporary data
directories, started, killed and restarted by the harness; the application
processes (gunicorn, uvicorn, Celery worker and beat) run against them with
``config.settings.reliability``. Nothing here touches the machine's own
PostgreSQL (5432) or Redis (6379).

    with Stack(workdir) as stack:
        stack.postgres_start(); stack.redis_start()
        stack.database_create("r02")           # migrated, empty
        web = stack.gunicorn("r02", workers=3)
        ...
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .harness.live_server import child_pids

ROOT = Path(__file__).resolve().parents[1]
PG_BIN = Path(sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]) if Path(
    "/usr/lib/postgresql"
).exists() else Path("/usr/bin")
# Overridable so that two runs (or a run and a developer) never share a server.
PG_PORT = int(os.environ.get("RELIABILITY_PG_PORT", 5440))
REDIS_PORT = int(os.environ.get("RELIABILITY_REDIS_PORT", 6390))
SETTINGS_MODULE = "config.settings.reliability"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until(check, *, timeout: float, what: str, interval: float = 0.2) -> float:
    """Poll ``check()`` until it is true; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(Exception):
            if check():
                return time.monotonic() - started
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready within {timeout} s")


@dataclass
class Process:
    """An application process started by the stack (its own process group)."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    url: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def children(self) -> list[int]:
        """Direct children (gunicorn workers, Celery pool processes)."""
        return child_pids(self.pid)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole group (a SIGKILLed master leaves no orphans)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def stop(self, timeout: float = 20) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def peak_rss_kib(self, *, with_children: bool = True) -> int:
        pids = [self.pid] + (self.children() if with_children else [])
        peak = 0
        for pid in pids:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        return peak


@dataclass
class Stack:
    workdir: Path
    pg_port: int = PG_PORT
    redis_port: int = REDIS_PORT
    processes: list[Process] = field(default_factory=list)
    redis_process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs = self.workdir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.pg_data = self.workdir / "pgdata"
        self.redis_dir = self.workdir / "redis"

    # -- PostgreSQL -------------------------------------------------------------
    def _as_postgres(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """PostgreSQL refuses to run as root: run its tools as the postgres user."""
        command = [str(PG_BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True)

    def postgres_start(self) -> None:
        if not (self.pg_data / "PG_VERSION").exists():
            self.pg_data.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                user = pwd.getpwnam("postgres")
                for path in (self.workdir, self.pg_data):
                    os.chown(path, user.pw_uid, user.pw_gid)
            self._as_postgres(
                "initdb", "-D", str(self.pg_data), "-U", "postgres", "--auth=trust",
                "--no-sync", "-E", "UTF8",
            )
        options = (
            f"-p {self.pg_port} -k {self.workdir} -c listen_addresses=127.0.0.1"
            " -c max_connections=200 -c shared_buffers=256MB"
        )
        self._as_postgres(
            "pg_ctl", "-D", str(self.pg_data), "-o", options,
            "-l", str(self.workdir / "postgres.log"), "-w", "-t", "60", "start",
        )

    def postgres_stop(self, mode: str = "fast") -> None:
        self._as_postgres("pg_ctl", "-D", str(self.pg_data), "-m", mode, "-w", "stop", check=False)

    def postgres_restart(self, mode: str = "fast") -> float:
        """Restart as an operator would; returns seconds until it accepts connections."""
        self.postgres_stop(mode)
        started = time.monotonic()
        self.postgres_start()
        return time.monotonic() - started

    def postgres_ready(self) -> bool:
        return (
            subprocess.run(
                [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.pg_port)],
                check=False,
            ).returncode
            == 0
        )

    def psql(self, database: str, sql: str) -> str:
        """Run SQL, return the unaligned, tuples-only output."""
        result = subprocess.run(
            [
                str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.pg_port),
                "-U", "postgres", "-d", database, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql,
            ],
            check=True, capture_output=True, text=True,
        )
        return result.stdout.strip()

    def database_url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.pg_port}/{name}"

    TEMPLATE_DATABASE = "allmile_migrated"

    def database_create(self, name: str, *, migrate: bool = True) -> str:
        """A fresh database ``name`` (dropped first), migrated; returns its URL.

        The first call migrates a template database; later ones copy it, which
        takes a second instead of half a minute of migrations.
        """
        self.psql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not migrate:
            self.psql("postgres", f'CREATE DATABASE "{name}"')
            return self.database_url(name)
        template = self.TEMPLATE_DATABASE
        exists = self.psql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{template}'")
        if not exists:
            self.psql("postgres", f'CREATE DATABASE "{template}"')
            self.manage(template, "migrate", "--noinput", "-v0")
        self.psql("postgres", f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.database_url(name)

    # -- Redis ------------------------------------------------------------------
    def redis_start(self, *, persistence: bool = True) -> None:
        """Redis with the shipped configuration (AOF everysec, noeviction) on
        its own port and directory; ``persistence=False`` turns AOF off."""
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server", str(ROOT / "deploy" / "redis.conf"),
            "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(self.redis_dir),
            "--daemonize", "no", "--protected-mode", "yes",
        ]
        if not persistence:
            command += ["--appendonly", "no", "--save", ""]
        log = (self.logs / "redis.log").open("ab")
        self.redis_process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        _wait_until(self.redis_ready, timeout=30, what="redis")

    def redis_cli(self, *args: str) -> str:
        result = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.redis_port), *args],
            check=False, capture_output=True, text=True, timeout=10,
        )
        return result.stdout.strip()

    def redis_ready(self) -> bool:
        return self.redis_cli("ping") == "PONG"

    def redis_kill(self) -> None:
        """SIGKILL: no chance to write anything more than AOF already has."""
        if self.redis_process is not None and self.redis_process.poll() is None:
            self.redis_process.kill()
            self.redis_process.wait(timeout=10)

    def redis_shutdown(self) -> None:
        """A clean shutdown (what an operator's restart does)."""
        self.redis_cli("shutdown")
        if self.redis_process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.redis_process.wait(timeout=20)

    def redis_url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/{db}"

    # -- the application ----------------------------------------------------------
    def env(self, database: str, *, redis_db: int = 0, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
            "DATABASE_URL": self.database_url(database),
            "REDIS_URL": self.redis_url(redis_db),
            "PYTHONUNBUFFERED": "1",
        }
        env.update({key: str(value) for key, value in extra.items()})
        return env

    def manage(self, database: str, *args: str, **extra_env: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT,
            env=self.env(database, **extra_env), check=False, capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def spawn(self, name: str, command: list[str], env: dict[str, str], url: str = "") -> Process:
        """Any process of a target's (a load generator, a consumer), logged and
        stopped with the others."""
        log_path = self.logs / f"{name}.log"
        log = log_path.open("ab")
        popen = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        process = Process(name=name, popen=popen, log_path=log_path, url=url)
        self.processes.append(process)
        return process

    def _wait_http(self, process: Process, timeout: float = 60) -> None:
        def answers() -> bool:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited; see {process.log_path}")
            return httpx.get(f"{process.url}/healthz", timeout=2).status_code < 500

        try:
            _wait_until(answers, timeout=timeout, what=process.name)
        except RuntimeError:
            raise
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; see {process.log_path}") from exc

    def gunicorn(self, database: str, *, workers: int = 3, name: str = "gunicorn",
                 port: int | None = None, **extra_env: str) -> Process:
        """WSGI workers for the HTTP API (what R1/R11 measure against)."""
        port = port or free_port()
        process = self.spawn(
            name,
            [
                sys.executable, "-m", "gunicorn", "config.wsgi:application",
                "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
                "--timeout", "60", "--graceful-timeout", "5", "--log-level", "warning",
            ],
            self.env(database, **{"DB_CONN_MAX_AGE": "60", **extra_env}),
            url=f"http://127.0.0.1:{port}",
        )
        self._wait_http(process)
        return process

    def uvicorn(self, database: str, *, workers: int = 1, name: str = "uvicorn",
                port: int | None = None, **extra_env: str) -> Process:
        """The ASGI server (HTTP + WebSockets), as the Dockerfile runs it."""
        port = port or free_port()
        command = [
            sys.executable, "-m", "uvicorn", "config.asgi:application",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        ]
        if workers > 1:
            command += ["--workers", str(workers)]
        process = self.spawn(name, command, self.env(database, **extra_env),
                              url=f"http://127.0.0.1:{port}")
        self._wait_http(process)
        return process

    def celery_worker(self, database: str, *, concurrency: int = 2, pool: str = "prefork",
                      name: str = "worker", queues: str | None = None,
                      wait: bool = True, **extra_env: str) -> Process:
        command = [
            sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "info",
            f"--pool={pool}", f"--concurrency={concurrency}", "-n", f"{name}@%h",
        ]
        if queues:
            command += ["-Q", queues]
        process = self.spawn(name, command, self.env(database, **extra_env))
        if wait:
            self.celery_wait_ready(process)
        return process

    def celery_wait_ready(self, process: Process, timeout: float = 90) -> float:
        def ready() -> bool:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited; see {process.log_path}")
            return "ready." in process.log_path.read_text(errors="replace")

        return _wait_until(ready, timeout=timeout, what=process.name, interval=0.3)

    def celery_beat(self, database: str, *, name: str = "beat", **extra_env: str) -> Process:
        schedule = self.workdir / f"{name}-schedule"
        return self.spawn(
            name,
            [sys.executable, "-m", "celery", "-A", "config", "beat", "-l", "warning",
             "--schedule", str(schedule)],
            self.env(database, **extra_env),
        )

    def stop_processes(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    # -- lifecycle ----------------------------------------------------------------
    def stop(self) -> None:
        self.stop_processes()
        if self.redis_process is not None and self.redis_process.poll() is None:
            self.redis_cli("shutdown", "nosave")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.redis_process.wait(timeout=10)
            if self.redis_process.poll() is None:
                self.redis_process.kill()
        if (self.pg_data / "postmaster.pid").exists():
            self.postgres_stop("fast")

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def stack_remove(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
