"""The "write your own backend" example of docs/backends.md runs, and
satisfies the ``Backend`` protocol under ``mypy --strict``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "backends.md"


@pytest.fixture
def example(tmp_path: Path) -> Path:
    section = DOC.read_text(encoding="utf-8").split("## Write your own backend", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    backend_lines = code.split("class InlineBackend", 1)[1].split("\n\n\nasync def main")[0]
    assert backend_lines.count("\n") <= 45  # the docs promise a short example
    script = tmp_path / "inline_backend.py"
    script.write_text(code, encoding="utf-8")
    return script


def test_the_example_backend_runs_a_workflow(example: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(example)],
        cwd=example.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "14"


def mypy_strict(script: Path) -> subprocess.CompletedProcess[str]:
    cache = script.parent / ".mypy_cache"
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache), str(script)],
        cwd=ROOT,
        env={**os.environ, "MYPYPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_example_backend_satisfies_the_protocol(example: Path) -> None:
    result = mypy_strict(example)
    assert result.returncode == 0, result.stdout + result.stderr
    # The check has teeth: a backend missing a member is rejected.
    code = example.read_text(encoding="utf-8")
    example.write_text(code.replace("async def cancel_task", "async def cancel"), encoding="utf-8")
    result = mypy_strict(example)
    assert result.returncode != 0 and "cancel_task" in result.stdout, result.stdout
