"""Static gates (R14, R18): bandit, committed-secret scan, serializer field rules,
migrations in step with models."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ["config", "shipments", "routing", "dispatch", "tracking", "notifications", "demo"]
BIN = Path(sys.executable).parent


def _python_sources():
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" not in path.parts:
                yield path


def test_bandit_finds_no_medium_or_high_issue():
    result = subprocess.run(
        [str(BIN / "bandit"), "-r", *APPS, "-ll", "-ii", "-q", "-x", "*/migrations/*"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_new_secret_is_committed():
    """Every hit of detect-secrets is in the audited baseline (test and demo passwords)."""
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    files = [f for f in files if not f.startswith(("bench/instances/", "static/vendor/"))]
    result = subprocess.run(
        [str(BIN / "detect-secrets-hook"), "--baseline", ".secrets.baseline", *files],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_serializer_exposes_all_fields_or_uses_exclude():
    offenders = []
    for path in _python_sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == "Meta":
                for statement in node.body:
                    if not isinstance(statement, ast.Assign):
                        continue
                    names = [t.id for t in statement.targets if isinstance(t, ast.Name)]
                    is_all = isinstance(statement.value, ast.Constant) and statement.value.value == "__all__"
                    if ("fields" in names and is_all) or "exclude" in names:
                        offenders.append(f"{path.relative_to(ROOT)}:{statement.lineno}")
    assert not offenders, offenders


def test_migrations_are_in_step_with_models():
    result = subprocess.run(
        [sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
