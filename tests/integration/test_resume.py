"""Resume: a campaign SIGKILLed half-way and run again redoes only what had
not finished; every stored result is a cache hit and never runs again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asyncflow.cache import ResultCache
from asyncflow.telemetry import names as n
from asyncflow.telemetry import read_checkpoint

WORKERS = 4  # the backend's concurrency
TASKS = 200
CHAINS = 10  # task i depends on task i - CHAINS

CAMPAIGN = f"""
import asyncio, json, sys
from concurrent.futures import ThreadPoolExecutor
from asyncflow import LocalExecutionBackend, WorkflowEngine

campaign, side_effects, out = sys.argv[1:4]

async def main():
    backend = await LocalExecutionBackend(ThreadPoolExecutor({WORKERS}))
    async with await WorkflowEngine.create(
        backend=backend, work_dir=campaign, resume=campaign
    ) as engine:
        await engine.start_telemetry(checkpoint_path=out + ".telemetry")

        @engine.function_task
        async def step(i, *deps):
            with open(side_effects, "a") as f:  # one line per run of a task
                f.write(f"{{i}}\\n")
            await asyncio.sleep(0.02)
            return i + sum(deps)

        futures = []
        for i in range({TASKS}):
            futures.append(step(i, *([futures[i - {CHAINS}]] if i >= {CHAINS} else [])))
        results = await asyncio.gather(*futures)
    with open(out, "w") as f:
        json.dump(results, f)

asyncio.run(main())
"""


def expected_results() -> list[int]:
    values: list[int] = []
    for i in range(TASKS):
        values.append(i + (values[i - CHAINS] if i >= CHAINS else 0))
    return values


def runs_per_task(path: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for line in path.read_text().splitlines():
        counts[int(line)] = counts.get(int(line), 0) + 1
    return counts


def hits_in(telemetry_dir: Path) -> dict[str, str]:
    """task uid -> its asyncflow.task.cache value, from the checkpoint file."""
    (checkpoint,) = telemetry_dir.glob(f"*{n.CHECKPOINT_SUFFIX}")
    out: dict[str, str] = {}
    for record in read_checkpoint(checkpoint, [n.SECTION_SPAN]):
        attrs = record.get("attributes") or {}
        if attrs.get(n.LEVEL) == n.LEVEL_TASK:
            out[attrs[n.TASK_UID]] = attrs.get(n.TASK_CACHE, "")
    return out


@pytest.mark.slow
def test_a_killed_campaign_resumes_with_what_it_had_finished(tmp_path: Path) -> None:
    script = tmp_path / "campaign.py"
    script.write_text(CAMPAIGN)
    campaign, side = tmp_path / "campaign", tmp_path / "side_effects"
    argv = [sys.executable, str(script), str(campaign), str(side)]
    first = subprocess.Popen([*argv, str(tmp_path / "first.json")])
    try:
        deadline = time.monotonic() + 90
        while not (side.exists() and len(side.read_text().splitlines()) >= TASKS // 2):
            assert first.poll() is None, "the campaign ended before it was killed"
            assert time.monotonic() < deadline, "the campaign made no progress"
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.kill()
        first.wait(30)
    assert not (tmp_path / "first.json").exists()
    before = runs_per_task(side)
    store = ResultCache.open(campaign, create=False)
    stored = {int(e.task.rsplit(".", 1)[1]) - 1 for e in store.entries()}  # task.000001 is i=0
    store.close()
    assert TASKS // 4 < len(stored) < TASKS
    assert stored <= set(before)
    in_flight = set(before) - stored  # started, result not stored: running at the kill

    second = subprocess.run(
        [*argv, str(tmp_path / "second.json")], capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 0, second.stderr
    assert json.loads((tmp_path / "second.json").read_text()) == expected_results()
    after = runs_per_task(side)
    assert set(after) == set(range(TASKS))
    twice = {i for i, k in after.items() if k > 1}
    assert all(after[i] == 1 for i in stored)  # no stored result ran again
    assert twice == in_flight  # only what was running at the kill ran twice...
    # ...at most what the backend's workers held: one task each, and one whose
    # result was on its way to the store when the process died.
    assert len(twice) <= 2 * WORKERS
    assert max(after.values()) == 2
    cache = hits_in(Path(str(tmp_path / "second.json") + ".telemetry"))
    hits = {int(uid.rsplit(".", 1)[1]) - 1 for uid, state in cache.items() if state == n.CACHE_HIT}
    assert hits == stored  # every task that had finished is a hit, and only those
    assert {uid for uid, state in cache.items() if state == n.CACHE_MISS} == {
        f"task.{i + 1:06d}" for i in range(TASKS) if i not in stored
    }
