"""Lint and types are part of the suite: ruff over the tree, mypy --strict over the rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_is_clean() -> None:
    result = _run("ruff", "check", "src", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_protocol_core_is_mypy_strict_clean() -> None:
    result = _run("mypy")  # files and strictness from pyproject.toml: src/derelayl/protocol
    assert result.returncode == 0, result.stdout + result.stderr
