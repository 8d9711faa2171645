"""The collector's first threshold while engines run (``asyncflow.engine._gc``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncflow import WorkflowEngine
from asyncflow.engine import _gc


@pytest.fixture(autouse=True)
def python_defaults(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # No engine counted (an engine another test left running must not count).
    monkeypatch.setattr(_gc, "_engines", 0)
    monkeypatch.setattr(_gc, "_saved", None)
    monkeypatch.setattr(_gc, "_ours", None)
    monkeypatch.delenv(_gc.ENV, raising=False)
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


async def test_raised_while_engines_run_and_restored_after_the_last(tmp_path: Path) -> None:
    one = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    assert gc.get_threshold() == (_gc.DEFAULT_THRESHOLD, 10, 10)
    two = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    await one.shutdown()
    await one.shutdown()  # twice: counted once
    assert gc.get_threshold()[0] == _gc.DEFAULT_THRESHOLD  # `two` still runs
    await two.shutdown()
    assert gc.get_threshold() == (700, 10, 10)


async def test_environment_sets_or_turns_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_gc.ENV, "20000")
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    assert gc.get_threshold()[0] == 20000
    await engine.shutdown()
    monkeypatch.setenv(_gc.ENV, "0")
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    assert gc.get_threshold() == (700, 10, 10)
    await engine.shutdown()


async def test_a_user_setting_is_respected(tmp_path: Path) -> None:
    higher = _gc.DEFAULT_THRESHOLD * 2
    gc.set_threshold(higher, 10, 10)  # higher already: left alone
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    assert gc.get_threshold()[0] == higher
    await engine.shutdown()
    assert gc.get_threshold()[0] == higher
    gc.set_threshold(700, 10, 10)
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    gc.set_threshold(5_000, 10, 10)  # changed while the engine ran: not undone
    await engine.shutdown()
    assert gc.get_threshold()[0] == 5_000
