"""The result cache through the engine: hits, misses, stores shared by engines."""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from asyncflow import InputFile, LocalExecutionBackend, NoopExecutionBackend, WorkflowEngine
from asyncflow.cache import FILE_NAME, ResultCache
from asyncflow.cli import main as cli
from asyncflow.errors import CacheError
from asyncflow.telemetry import names as n


async def make_engine(work_dir: Path, **kwargs: Any) -> WorkflowEngine:
    return await WorkflowEngine.create(
        backend=await LocalExecutionBackend(), work_dir=work_dir, **kwargs
    )


def cache_attrs(tel: Any) -> dict[str, dict[str, Any]]:
    return {s["attributes"][n.TASK_UID]: s["attributes"] for s in tel.task_spans()}


async def test_identical_call_is_a_hit_and_never_runs(tmp_path: Path) -> None:
    runs: list[int] = []
    async with await make_engine(tmp_path) as engine:
        tel = await engine.start_telemetry()

        @engine.function_task(cache=True)
        async def square(x: int) -> int:
            runs.append(x)
            return x * x

        first = square(3)
        assert await first == 9
        second = square(3)
        assert await second == 9
        assert await square(4) == 16  # another argument: a miss
        assert runs == [3, 4]
        attrs = cache_attrs(tel)
        assert attrs[first.uid][n.TASK_CACHE] == n.CACHE_MISS
        hit = attrs[second.uid]
        assert hit[n.TASK_CACHE] == n.CACHE_HIT
        assert hit[n.CACHE_SOURCE_SESSION] == engine.uid
        assert hit[n.CACHE_SOURCE_TASK] == first.uid
        span = next(s for s in tel.task_spans() if s["attributes"][n.TASK_UID] == second.uid)
        assert "started" not in [e["name"] for e in span["events"]]  # it never ran
        lookups = {
            p["attributes"][n.TASK_CACHE]: p["value"]
            for p in tel.read_metrics()
            if p["name"] == n.METRIC_CACHE_LOOKUPS
        }
        assert lookups == {n.CACHE_HIT: 1, n.CACHE_MISS: 2}
        assert engine.task_counts().cached == 1
        # Hits after the kind ran: nothing is left counted pending or running
        # (the running count went to -3: a hit was taken off it).
        assert await asyncio.gather(*[square(3) for _ in range(3)]) == [9, 9, 9]
        active = {
            p["attributes"][n.TASK_STATE]: p["value"]
            for p in tel.read_metrics()
            if p["name"] == n.METRIC_TASKS_ACTIVE
        }
        assert active == {n.STATE_PENDING: 0, n.STATE_RUNNING: 0}
        assert tel.summary()["tasks"]["running"] == 0
    assert (tmp_path / FILE_NAME).exists()


async def test_a_later_session_hits_and_changed_code_misses(tmp_path: Path) -> None:
    runs: list[str] = []
    async with await make_engine(tmp_path) as engine:

        @engine.function_task(cache=True)
        async def model(x: int) -> int:
            runs.append("v1")
            return x + 1

        assert await model(1) == 2
    async with await make_engine(tmp_path) as engine:

        @engine.function_task(cache=True)
        async def model(x: int) -> int:  # the same code: a hit
            runs.append("v1")
            return x + 1

        assert await model(1) == 2
        assert runs == ["v1"]

        @engine.function_task(cache=True)
        async def model(x: int) -> int:  # type: ignore[no-redef] - changed code: a miss
            runs.append("v2")
            return x + 100

        assert await model(1) == 101
        assert runs == ["v1", "v2"]


async def test_input_file_content_change_is_a_miss(tmp_path: Path) -> None:
    data = tmp_path / "input.txt"
    data.write_text("one")
    runs: list[str] = []
    async with await make_engine(tmp_path, cache=True) as engine:  # engine-wide

        @engine.function_task
        async def read(path: InputFile) -> str:
            runs.append(Path(path).read_text())
            return Path(path).read_text().upper()

        assert await read(InputFile(data)) == "ONE"
        assert await read(InputFile(data)) == "ONE"
        data.write_text("two")
        assert await read(InputFile(data)) == "TWO"
        assert runs == ["one", "two"]


async def test_executables_are_keyed_by_their_command(tmp_path: Path) -> None:
    log = tmp_path / "log"

    def command(word: str) -> str:
        script = "import sys; open(sys.argv[1], 'a').write(sys.argv[2]); print(sys.argv[2])"
        return shlex.join([sys.executable, "-c", script, str(log), word])

    async with await make_engine(tmp_path) as engine:

        @engine.executable_task(cache=True)
        async def say(word: str) -> str:
            return command(word)

        @engine.function_task
        async def upstream(word: str) -> str:
            return word

        assert (await say("a")).strip() == "a"
        assert (await say("a")).strip() == "a"
        assert (await say("b")).strip() == "b"
        # Keyed by the resolved value of a dependency, not by its future.
        assert (await say(upstream("c"))).strip() == "c"
        assert (await say(upstream("c"))).strip() == "c"
    assert log.read_text() == "abc"


async def test_opt_out_uncacheable_arguments_and_dry_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[str] = []
    async with await make_engine(tmp_path, cache=True) as engine:

        @engine.function_task(cache=False)
        async def fresh() -> str:
            runs.append("fresh")
            return "x"

        @engine.function_task
        async def locked(lock: Any) -> str:
            runs.append("locked")
            return "y"

        await fresh()
        await fresh()
        with caplog.at_level(logging.WARNING, logger="asyncflow"):
            await locked(threading.Lock())
            await locked(threading.Lock())
        assert runs == ["fresh", "fresh", "locked", "locked"]
        warnings = [r for r in caplog.records if "runs without the result cache" in r.message]
        assert len(warnings) == 1 and "locked" in warnings[0].getMessage()
    async with await WorkflowEngine.create(
        backend=NoopExecutionBackend(), work_dir=tmp_path, cache=True
    ) as engine:

        @engine.function_task
        async def placeholder() -> str:
            return "never runs"

        assert await placeholder() == "Dummy Output"
    store = ResultCache.open(tmp_path)
    assert {e.name for e in store.entries()} == set()
    store.close()


async def test_two_engines_share_one_store(tmp_path: Path) -> None:
    runs: list[tuple[str, int]] = []

    async def campaign(tag: str, values: range) -> list[int]:
        async with await make_engine(tmp_path / tag, resume=tmp_path / "store") as engine:

            @engine.function_task
            async def double(x: int) -> int:
                runs.append((tag, x))
                await asyncio.sleep(0)
                return 2 * x

            return list(await asyncio.gather(*(double(i) for i in values)))

    a, b = await asyncio.gather(campaign("a", range(0, 150)), campaign("b", range(100, 250)))
    assert a == [2 * i for i in range(150)] and b == [2 * i for i in range(100, 250)]
    store = ResultCache.open(tmp_path / "store", create=False)
    assert len(store) == 250  # the 50 shared values are stored once
    store.close()
    runs.clear()
    assert await campaign("c", range(250)) == [2 * i for i in range(250)]
    assert runs == []  # everything came from the store


async def test_a_damaged_store_stops_create_with_a_clear_error(tmp_path: Path) -> None:
    store = ResultCache.open(tmp_path)
    store.put_many([(f"k{i}", "f", "v" * 4000, "s", f"t{i}") for i in range(100)])
    store.close()
    path = tmp_path / FILE_NAME
    path.write_bytes(path.read_bytes()[:9000])
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(CacheError, match="cut short"):
        await WorkflowEngine.create(backend=NoopExecutionBackend(), resume=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


async def test_resume_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(n.ENV_RESUME, str(tmp_path / "campaign"))
    async with await make_engine(tmp_path) as engine:

        @engine.function_task
        async def one() -> int:
            return 1

        assert await one() == 1
    assert (tmp_path / "campaign" / FILE_NAME).exists()


def test_cache_command_lists_counts_and_clears(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ResultCache.open(tmp_path)
    store.put_many(
        [("k1", "square", 9, "sess", "task.000001"), ("k2", "cube", 27, "sess", "task.000002")]
    )
    store.close()
    assert cli(["cache", "stats", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 result(s)" in out and "square: 1 result(s)" in out
    assert cli(["cache", "ls", str(tmp_path), "--task", "cube"]) == 0
    out = capsys.readouterr().out
    assert "cube" in out and "task.000002" in out and "square" not in out.splitlines()[0]
    assert cli(["cache", "clear", str(tmp_path), "--task", "cube"]) == 0
    assert "removed 1" in capsys.readouterr().out
    assert cli(["cache", "clear", str(tmp_path)]) == 0
    assert "removed 1" in capsys.readouterr().out
    assert cli(["cache", "ls", str(tmp_path / "none")]) == 1
    assert "no result cache" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / FILE_NAME).write_text(json.dumps({"not": "sqlite"}) * 20)
    assert cli(["cache", "stats", str(tmp_path / "bad")]) == 1
    assert "not an SQLite database" in capsys.readouterr().err


WRITER = """
import asyncio, sys
from asyncflow import WorkflowEngine

async def main(store, first, last):
    async with await WorkflowEngine.create(resume=store, work_dir=store) as engine:
        @engine.function_task
        async def triple(x):
            return 3 * x

        assert await asyncio.gather(*(triple(i) for i in range(first, last))) == [
            3 * i for i in range(first, last)
        ]

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def test_two_processes_write_one_store_at_once(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    store = tmp_path / "store"
    writers = [
        subprocess.Popen([sys.executable, str(script), str(store), str(lo), str(lo + 600)])
        for lo in (0, 400)
    ]
    assert [w.wait(120) for w in writers] == [0, 0]
    cache = ResultCache.open(store, create=False)
    assert len(cache) == 1000  # 0..999, the overlap stored once
    assert {e.name for e in cache.entries()} == {"triple"}
    cache.close()


OTHER_CONNECTION = """
import sys
from asyncflow.cache import ResultCache

store = ResultCache.open(sys.argv[1])
store.put_many([("k1", "f", 1, "other", "t1")])
print("open", flush=True)
sys.stdin.readline()  # the first process closes its connection meanwhile
store.put_many([("k2", "f", 2, "other", "t2")])
store.put_many([("k3", "f", 3, "other", "t3")])
store.close()
print("closed", flush=True)
"""


def test_closing_one_process_store_keeps_the_others_write_ahead_log(tmp_path: Path) -> None:
    """Opening a store never drops SQLite's locks on it: a process that
    closes its connection while another process's is open is not the last
    one, so it leaves the write-ahead log to the other, whose later commits
    all survive. (The store used to be opened under a lock taken on a
    second descriptor of its file: closing that descriptor dropped the
    connection's own locks, so the other process's close deleted the log
    under it, and a result written by one of two engines sharing a store
    could be lost.)"""
    first = ResultCache.open(tmp_path)
    first.put_many([("k0", "f", 0, "first", "t0")])
    with subprocess.Popen(
        [sys.executable, "-c", OTHER_CONNECTION, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as other:
        assert other.stdin is not None and other.stdout is not None
        try:
            assert other.stdout.readline().strip() == "open"
            first.close()
            wal = tmp_path / f"{FILE_NAME}-wal"
            assert wal.exists()  # the other connection still uses it
            other.stdin.write("go\n")
            other.stdin.flush()
            assert other.stdout.readline().strip() == "closed"
            assert other.wait(60) == 0
        finally:
            if other.poll() is None:
                other.kill()
    store = ResultCache.open(tmp_path, create=False)
    assert sorted(e.key for e in store.entries()) == ["k0", "k1", "k2", "k3"]
    store.close()


def test_a_store_open_in_this_process_is_not_read_behind_its_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second engine of this process opening the same store does not read
    its header through a descriptor of its own (closing that would drop the
    first connection's locks): the open connection vouches for the file."""
    from asyncflow.cache import _store

    first = ResultCache.open(tmp_path)
    key = str((tmp_path / FILE_NAME).resolve())
    assert _store._CONNECTED[key] == 1
    read: list[Path] = []
    real = _store._check_header

    def check_header(path: Path) -> None:
        read.append(path)
        real(path)

    monkeypatch.setattr(_store, "_check_header", check_header)
    second = ResultCache.open(tmp_path)
    assert read == [] and _store._CONNECTED[key] == 2
    second.close()
    second.close()  # idempotent: counted once
    assert _store._CONNECTED[key] == 1
    first.close()
    assert key not in _store._CONNECTED
    ResultCache.open(tmp_path).close()  # nobody holds it: the header is read
    assert read == [tmp_path / FILE_NAME]
