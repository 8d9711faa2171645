"""Programs written the older AsyncFlow's way, run as a user runs them.

Each script in this folder re-creates documented usage of ``radical.asyncflow``
(its examples and its docs' snippets) with only the import lines changed; it
imports nothing but ``asyncflow``, ``rhapsody`` and the standard library. The
test runs it as a subprocess in a fresh directory and checks what it prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent

EXPECTED: dict[str, list[str]] = {
    "function_dag": [
        "workflows: 1000",
        "failed dependencies: ['left', 'right']",
        "root cause: RuntimeError('left')",
    ],
    "blocks": [
        "results: ['task2 after task1 result', 'task2 after task1 result']",
        "blocks run: 8, block1 before block2 each time: True",
    ],
    "concurrent_backends": [
        "results: ['[Result] Dummy Prompt Output', '[Result] Dummy Prompt Output']",
        "default backend: compute",
    ],
    "shell_commands": [
        "started: ['started', 'second command']",
        "home is HOME: True",
        "out.txt: saved",
    ],
    "telemetry_events": [
        "counts: [133]",
        "Tasks — {'submitted': 15, 'completed': 15, 'failed': 0, 'canceled': 0, 'running': 0}",
        "mean and max known: True",
        "stage timers seen: 5 ['workflow_total']",
        "stage timer lines in the checkpoint: 5",
    ],
    "telemetry_subscriber": [
        "6 tasks completed",
        "durations seen: 6, all positive: True",
        "resolved: 6",
        "results: [('exp-0', -1), ('exp-1', -1), ('exp-2', -1)]",
        "per-node samples: True",
    ],
    "dask_backend": ["average matches: True", "words: 3"],
}


def _script(name: str) -> object:
    marks = [pytest.mark.dask] if name.startswith("dask") else []
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", [_script(n) for n in EXPECTED])
def test_older_program_runs_unchanged(name: str, tmp_path: Path) -> None:
    script = HERE / f"{name}.py"
    imports = {
        line.split()[1].split(".")[0]
        for line in script.read_text().splitlines()
        if line.startswith(("import ", "from "))
    }
    assert imports <= {"asyncflow", "rhapsody", *sys.stdlib_module_names}, imports
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    for expected in EXPECTED[name]:
        assert expected in lines, (expected, done.stdout[-3000:])
