"""A real road network on this machine: OSRM built from ``data/monaco.osm.pbf``.

    python -m tools.osrm build                # venv + extract/partition/customize
    python -m tools.osrm serve --port 5000    # then OSRM_BASE_URL=http://127.0.0.1:5000

The project runs on Python 3.11, but ``osrm-bindings`` ships wheels for
Python >= 3.12 only, with the OSRM programs inside (``osrm/bin/``, profiles in
``osrm/share/profiles/``). So the programs live in a separate, disposable venv,
``.local/osrm-venv``, made with a 3.12+ interpreter and filled from the package
index by name. Nothing else is downloaded. The project never imports OSRM: it
talks to ``osrm-routed`` over HTTP (``routing.solver.matrix.osrm_matrix``).

Every step is bounded in time, each build is stamped so it is redone only when
its input, profile or OSRM version changes, and a file lock keeps two
processes from building the same thing at once.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
DATA_PBF = REPO_DIR / "data" / "monaco.osm.pbf"
OSRM_VENV = REPO_DIR / ".local" / "osrm-venv"
DEFAULT_WORKDIR = REPO_DIR / ".local" / "osrm"
# 26.x is the release this was measured with; a new major may change the
# table service, so it is a deliberate upgrade.
OSRM_BINDINGS_REQUIREMENT = "osrm-bindings>=26.10,<27"
PROFILE = "car"
# Written last, so a venv interrupted half-way is recognised and rebuilt.
VENV_READY_MARKER = ".allmile-ready"
BUILD_STAMP = "allmile-build.json"

# Measured here: venv 14 s, pip 5 s (20.8 MB wheel), extract of Monaco 3 s,
# partition and customize well under 1 s, osrm-routed ready in under 1 s. The
# bounds leave room for a slow index and a busy machine without hanging CI.
VENV_CREATE_TIMEOUT_SECONDS = 120
PIP_INSTALL_TIMEOUT_SECONDS = 300
BUILD_STEP_TIMEOUT_SECONDS = 180
ROUTED_READY_TIMEOUT_SECONDS = 30
ROUTED_STOP_TIMEOUT_SECONDS = 10
LOCK_TIMEOUT_SECONDS = 600


class OsrmSetupError(RuntimeError):
    """The OSRM programs could not be installed, built or started."""


# ---------------------------------------------------------------------------
# The venv with the OSRM programs
# ---------------------------------------------------------------------------


def python312_candidates() -> Iterator[str]:
    """``OSRM_PYTHON`` first, then pyenv's 3.12+ versions, then PATH."""
    if os.environ.get("OSRM_PYTHON"):
        yield os.environ["OSRM_PYTHON"]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for version_dir in sorted((pyenv_root / "versions").glob("3.1[2-9]*")):
        minor = ".".join(version_dir.name.split(".")[:2])
        yield str(version_dir / "bin" / f"python{minor}")
    for name in ("python3.12", "python3.13", "python3.14"):
        found = shutil.which(name)
        if found:
            yield found


def find_python312() -> str:
    """An interpreter that is really >= 3.12 (pyenv shims answer "command not
    found" for versions that are not active, so each one is asked)."""
    tried = []
    for candidate in python312_candidates():
        try:
            answer = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info >= (3, 12))"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            tried.append(f"{candidate}: {error}")
            continue
        if answer.returncode == 0 and answer.stdout.strip() == "True":
            return candidate
        tried.append(f"{candidate}: {(answer.stderr or answer.stdout).strip()[:80]}")
    raise OsrmSetupError(
        "osrm-bindings needs Python >= 3.12 and none was found; set OSRM_PYTHON. Tried: "
        + ("; ".join(tried) or "nothing")
    )


def osrm_package_dir(venv: Path = OSRM_VENV) -> Path | None:
    found = sorted(venv.glob("lib/python3.*/site-packages/osrm"))
    return found[-1] if found else None


def ensure_osrm_venv(venv: Path = OSRM_VENV) -> Path:
    """The ``osrm/`` package directory of a ready venv, made if missing."""
    package = osrm_package_dir(venv)
    if package is not None and (venv / VENV_READY_MARKER).exists():
        return package
    venv.parent.mkdir(parents=True, exist_ok=True)
    with _locked(venv.parent / f"{venv.name}.lock"):
        package = osrm_package_dir(venv)
        if package is not None and (venv / VENV_READY_MARKER).exists():
            return package  # another process finished it while we waited
        shutil.rmtree(venv, ignore_errors=True)  # half-made: start again
        python = find_python312()
        _log(f"creating {venv} with {python}")
        _run([python, "-m", "venv", str(venv)], timeout=VENV_CREATE_TIMEOUT_SECONDS)
        _log(f"installing {OSRM_BINDINGS_REQUIREMENT} from the package index")
        _run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                OSRM_BINDINGS_REQUIREMENT,
            ],
            timeout=PIP_INSTALL_TIMEOUT_SECONDS,
        )
        package = osrm_package_dir(venv)
        if package is None or not (package / "bin" / "osrm-routed").exists():
            raise OsrmSetupError(
                f"osrm-bindings installed in {venv} but has no osrm/bin/osrm-routed"
            )
        (venv / VENV_READY_MARKER).write_text(_installed_version(venv) + "\n")
        return package


def _installed_version(venv: Path) -> str:
    metadata = sorted(
        venv.glob("lib/python3.*/site-packages/osrm_bindings-*.dist-info")
    )
    return (
        metadata[-1].name.removeprefix("osrm_bindings-").removesuffix(".dist-info")
        if metadata
        else "?"
    )


# ---------------------------------------------------------------------------
# Building the road network
# ---------------------------------------------------------------------------


def ensure_osrm(
    workdir: Path = DEFAULT_WORKDIR, *, pbf: Path = DATA_PBF, venv: Path = OSRM_VENV
) -> Path:
    """Make ``<workdir>/<name>.osrm`` (MLD, car profile) from ``pbf`` and return
    its path. The OSRM outputs land beside their input, hence the copy. Quick
    when nothing changed: the stamp names the input's sha256, the profile and
    the OSRM version."""
    package = ensure_osrm_venv(venv)
    if not pbf.exists():
        raise OsrmSetupError(f"no road data at {pbf}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    base = workdir / pbf.name.removesuffix(".osm.pbf")
    osrm_file = base.with_suffix(".osrm")
    wanted = {
        "pbf_sha256": hashlib.sha256(pbf.read_bytes()).hexdigest(),
        "profile": PROFILE,
        "osrm_bindings": _installed_version(venv),
        "algorithm": "mld",
    }
    stamp = workdir / BUILD_STAMP
    with _locked(workdir / "build.lock"):
        if _read_json(stamp) == wanted:
            return osrm_file
        stamp.unlink(missing_ok=True)
        for old in workdir.glob(f"{base.name}.osrm*"):
            old.unlink()
        shutil.copyfile(pbf, workdir / pbf.name)
        bin_dir = package / "bin"
        profile = package / "share" / "profiles" / f"{PROFILE}.lua"
        started = time.monotonic()
        _run(
            [
                str(bin_dir / "osrm-extract"),
                "-p",
                str(profile),
                str(workdir / pbf.name),
            ],
            timeout=BUILD_STEP_TIMEOUT_SECONDS,
            cwd=workdir,
        )
        _run(
            [str(bin_dir / "osrm-partition"), str(osrm_file)],
            timeout=BUILD_STEP_TIMEOUT_SECONDS,
            cwd=workdir,
        )
        _run(
            [str(bin_dir / "osrm-customize"), str(osrm_file)],
            timeout=BUILD_STEP_TIMEOUT_SECONDS,
            cwd=workdir,
        )
        _log(f"built {osrm_file} in {time.monotonic() - started:.1f} s")
        stamp.write_text(json.dumps(wanted, indent=2) + "\n")
    return osrm_file


# ---------------------------------------------------------------------------
# Serving it
# ---------------------------------------------------------------------------


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_osrm_routed(
    port: int,
    *,
    osrm_file: Path | None = None,
    threads: int = 2,
    max_table_size: int = 100,
    log_path: Path | None = None,
    ready_timeout_seconds: float = ROUTED_READY_TIMEOUT_SECONDS,
    extra_args: Sequence[str] = (),
) -> subprocess.Popen:
    """Start ``osrm-routed --algorithm mld --ip 127.0.0.1 --port <port>`` and
    return once it answers a route request. Builds the default network first
    when no ``osrm_file`` is given. Stop it with ``stop_osrm_routed``.

    ``max_table_size`` is the server's cap on a table request's side; the
    client's ``chunk_size`` must not exceed it (both default to 100).
    ``extra_args`` go to osrm-routed as they are (e.g. ``--max-header-size``)."""
    if osrm_file is None:
        osrm_file = ensure_osrm()
    package = ensure_osrm_venv()
    # A server already on the port would answer the readiness probe in our
    # place; refuse instead of testing someone else's OSRM.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            raise OsrmSetupError(
                f"port {port} on 127.0.0.1 is taken: {error}"
            ) from error
    log_path = log_path or routed_log_path(Path(osrm_file), port)
    with open(
        log_path, "wb"
    ) as log:  # a file, not a pipe: a full pipe would block the server
        process = subprocess.Popen(
            [
                str(package / "bin" / "osrm-routed"),
                "--algorithm",
                "mld",
                "--ip",
                "127.0.0.1",
                "--port",
                str(port),
                "--threads",
                str(threads),
                "--max-table-size",
                str(max_table_size),
                *extra_args,
                str(osrm_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_until_ready(process, port, ready_timeout_seconds, log_path)
    except BaseException:
        stop_osrm_routed(process)
        raise
    return process


def routed_log_path(osrm_file: Path, port: int) -> Path:
    return osrm_file.parent / f"osrm-routed-{port}.log"


def _wait_until_ready(
    process: subprocess.Popen, port: int, timeout_seconds: float, log_path: Path
) -> None:
    # /nearest on a point of the network: answers only once the data is loaded.
    probe_url = f"http://127.0.0.1:{port}/nearest/v1/driving/7.4206,43.7387"
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise OsrmSetupError(
                f"osrm-routed exited with {process.returncode}: {_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(probe_url, timeout=2) as response:  # noqa: S310 (loopback, fixed scheme)
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise OsrmSetupError(
        f"osrm-routed not ready after {timeout_seconds} s: {_tail(log_path)}"
    )


def stop_osrm_routed(
    process: subprocess.Popen, timeout_seconds: float = ROUTED_STOP_TIMEOUT_SECONDS
) -> int:
    """SIGTERM, then SIGKILL after ``timeout_seconds``; returns the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_seconds)
    return process.returncode


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(
    path: Path, timeout_seconds: float = LOCK_TIMEOUT_SECONDS
) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OsrmSetupError(
                        f"{path} still locked after {timeout_seconds} s"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str], *, timeout: float, cwd: Path | None = None) -> None:
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise OsrmSetupError(
            f"{Path(command[0]).name} took more than {timeout} s"
        ) from error
    except OSError as error:
        raise OsrmSetupError(f"cannot run {command[0]}: {error}") from error
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip().splitlines()[-15:]
        raise OsrmSetupError(
            f"{' '.join(command)} exited with {done.returncode}:\n" + "\n".join(output)
        )


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return " | ".join(
            path.read_text(errors="replace").strip().splitlines()[-lines:]
        )
    except OSError:
        return "(no log)"


def _log(message: str) -> None:
    print(f"[osrm] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.osrm", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="make the venv and the routable network")
    serve = commands.add_parser(
        "serve", help="build if needed, then serve on 127.0.0.1 until stopped"
    )
    for sub in (build, serve):
        sub.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
        sub.add_argument("--pbf", type=Path, default=DATA_PBF)
    serve.add_argument("--port", type=int, default=5000)
    serve.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    try:
        osrm_file = ensure_osrm(args.workdir, pbf=args.pbf)
    except OsrmSetupError as error:
        _log(f"error: {error}")
        return 1
    if args.command == "build":
        print(osrm_file)
        return 0

    # Ctrl-C and SIGTERM (make, a supervisor) both stop the server cleanly, even
    # while it starts. The handler only sets a flag: an exception raised inside
    # Popen.poll() can leave its wait lock taken, and the stop then hangs.
    stop_requested: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda received, _frame: stop_requested.append(received))
    try:
        process = start_osrm_routed(
            args.port, osrm_file=osrm_file, threads=args.threads
        )
    except OsrmSetupError as error:
        _log(f"error: {error}")
        return 1
    _log(
        f"serving {osrm_file.name} (pid {process.pid}); use OSRM_BASE_URL=http://127.0.0.1:{args.port}"
    )
    while process.poll() is None and not stop_requested:
        time.sleep(0.2)
    if not stop_requested:
        _log(
            f"osrm-routed exited with {process.returncode}: {_tail(routed_log_path(osrm_file, args.port))}"
        )
        return 1
    code = stop_osrm_routed(process)
    _log(f"stopped (osrm-routed exit code {code})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
