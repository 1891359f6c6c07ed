"""R19: schema-driven fuzzing with schemathesis against a real server.

The project's own schema (``/api/schema/``, drf-spectacular) drives
``st run`` against gunicorn on the test database, once as a driver (the
driver's operations) and once as a dispatcher (everything else), with every
check on, all four phases, a fixed seed and a time budget per run. The test
database holds a published route, a proof of delivery and shipments, so
generated ids sometimes hit real objects.

Every check runs; ``schemathesis.toml`` beside this file adds 413 and 422 to
what two checks accept (limits a JSON Schema cannot state; the file says why).

CI size: 25 s per role. Full bar (RELIABILITY_SCALE=12): 300 s per role, as in
RELIABILITY.md. The JSON and JUnit reports land in
``test-artifacts/reliability/schemathesis/<role>/``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest

from dispatch.pod import PodInput, pod_create
from reliability.harness.results import RESULTS_DIR
from reliability.harness.sizing import scale, seed
from tests import factories
from tests.reliability import builders

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# CI runs 25 s per role; the full bar, 300 s.
MAX_TIME_SECONDS = int(min(300, 25 * scale()))
ST = str(Path(sys.executable).with_name("st"))
CONFIG = Path(__file__).with_name("schemathesis.toml")
ROLES = {
    # The driver's own surface; the dispatcher run covers the rest.
    "driver": ["--include-path-regex", r"^/api/v1/(driver|pods)/"],
    "dispatcher": ["--exclude-path-regex", r"^/api/v1/(driver|auth)/"],
}


@pytest.fixture
def principals(hubs):
    """Two drivers with a published route and a proof each, and a dispatcher."""
    monaco = hubs[1]
    found = {"dispatcher": factories.dispatcher_make()}
    for name in ("driver", "driver_b"):
        driver = factories.driver_make(monaco)
        route = builders.published_route(hub=monaco, driver=driver, stops=2)
        stop = builders.delivery_stops(route)[0]
        pod_create(
            stop_id=stop.pk, driver_id=driver.pk, data=PodInput(recipient_name="C. M.")
        )
        found[name] = driver.user
    return found


def _run(
    server_url: str,
    name: str,
    auth: list[str],
    filters: list[str],
    *,
    checks: str = "all",
    phases: str = "examples,coverage,fuzzing,stateful",
    max_time: int = MAX_TIME_SECONDS,
) -> dict:
    report_dir = RESULTS_DIR / "schemathesis" / name
    shutil.rmtree(report_dir, ignore_errors=True)  # one run's reports only
    report_dir.mkdir(parents=True)
    command = [
        ST,
        "--config-file",
        str(CONFIG),
        "run",
        f"{server_url}/api/schema/?format=json",
        "--url",
        server_url,
        *auth,
        "--checks",
        checks,
        "--phases",
        phases,
        "--max-time",
        str(max_time),
        "--seed",
        str(seed()),
        "--workers",
        "2",
        "--request-timeout",
        "20",
        "--report",
        "json,junit",
        "--report-dir",
        str(report_dir),
        *filters,
    ]
    started = time.monotonic()
    completed = subprocess.run(  # bounded by --max-time plus a margin
        command,
        # st keeps a crash cache (.schemathesis/) in its working directory: keep
        # it with the reports, out of the source tree.
        cwd=report_dir.parent,
        capture_output=True,
        text=True,
        timeout=max_time + 120,
        check=False,
    )
    (report_dir / "output.txt").write_text(completed.stdout + completed.stderr)
    return {
        "exit_code": completed.returncode,
        "seconds": time.monotonic() - started,
        "output": completed.stdout,
        "report_dir": report_dir,
    }


def _token(user) -> list[str]:
    return ["-H", f"Authorization: Token {user.auth_token.key}"]


def _report(run: dict) -> dict:
    reports = sorted(run["report_dir"].glob("json-*.json"))
    assert reports, run["output"][-2000:]
    return json.loads(reports[-1].read_text())


def _reproductions(report_dir: Path) -> dict[str, str]:
    """The first reproducing request (curl, auth filtered) per failure code."""
    found: dict[str, str] = {}
    for junit in report_dir.glob("junit-*.xml"):
        for case in ElementTree.parse(junit).getroot().iter("testcase"):
            for failure in case.iter("failure"):
                text = failure.text or ""
                for code in re.findall(r"- (ST\d{3}) ", text):
                    if code in found:
                        continue
                    curls = re.findall(r"^\s+(curl .+)$", text, flags=re.MULTILINE)
                    found[code] = (
                        f"{case.get('name')}: {curls[-1][:600] if curls else '?'}"
                    )
    return found


@pytest.mark.parametrize("role", list(ROLES))
def test_r19_schemathesis_finds_no_failure(live_server_url, principals, role, figure):
    run = _run(live_server_url.url, role, _token(principals[role]), ROLES[role])
    report = _report(run)
    by_code = {
        f"{f['code']} {f['title']}": {
            "count": f["count"],
            "operations": f["operations"],
        }
        for f in report["failures"]
    }
    unique = report["test_cases"]["unique_failures"]
    errors = len(report["errors"])
    figure(
        "R19",
        f"schemathesis failures as {role}",
        f"{unique} unique failures, {errors} errors "
        f"({report['test_cases']['generated']} cases, "
        f"{report['operations']['tested']} operations, {run['seconds']:.0f} s)",
        "0",
        unique == 0 and errors == 0,
        details={
            "version": report["schemathesis_version"],
            "by_check": by_code,
            "reproduce": _reproductions(run["report_dir"]),
            "phases": {k: v["status"] for k, v in report["phases"].items()},
        },
    )
    assert report["operations"]["tested"] > 0
    assert errors == 0, report["errors"][:3]
    assert unique == 0, json.dumps(by_code, indent=1)


def test_r13_schemathesis_finds_no_cross_driver_access(
    live_server_url, principals, figure
):
    """R13 with schemathesis: two drivers in a Web Fuzzing Commons auth file;
    ``object_level_authorization`` replays one driver's reads as the other
    (ST402) and ``ignored_auth`` drops the credentials. CI: 30 s; full: 150 s."""
    auth_file = RESULTS_DIR / "schemathesis" / "wfc-two-drivers.json"
    auth_file.parent.mkdir(parents=True, exist_ok=True)
    auth_file.write_text(
        json.dumps(
            {
                "auth": [
                    {
                        "name": name,
                        "fixedHeaders": [
                            {
                                "name": "Authorization",
                                "value": f"Token {principals[name].auth_token.key}",
                            }
                        ],
                    }
                    for name in ("driver", "driver_b")
                ]
            }
        )
    )
    run = _run(
        live_server_url.url,
        "two-drivers",
        ["--auth-wfc", str(auth_file)],
        ROLES["driver"],
        checks="object_level_authorization,ignored_auth",
        phases="examples,fuzzing,stateful",
        max_time=int(min(150, 30 * scale())),
    )
    auth_file.unlink()  # tokens do not outlive the run
    report = _report(run)
    by_code = {
        f"{f['code']} {f['title']}": {
            "count": f["count"],
            "operations": f["operations"],
        }
        for f in report["failures"]
    }
    unique = report["test_cases"]["unique_failures"]
    figure(
        "R13",
        "schemathesis ST402 / ignored_auth failures (two drivers)",
        f"{unique} ({report['test_cases']['generated']} cases, {run['seconds']:.0f} s)",
        "0",
        unique == 0,
        details={"by_check": by_code, "reproduce": _reproductions(run["report_dir"])},
    )
    assert report["operations"]["tested"] > 0
    assert unique == 0, json.dumps(by_code, indent=1)
