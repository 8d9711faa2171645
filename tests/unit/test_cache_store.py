"""Cache keys (deterministic, by value) and the SQLite result store."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from asyncflow import InputFile, OutputFile
from asyncflow.cache import FILE_NAME, ResultCache, Uncacheable, code_digest, task_key
from asyncflow.errors import CacheError


async def _square(x: int) -> int:
    return x * x


async def _cube(x: int) -> int:
    return x * x * x


CODE = code_digest(_square)


def test_identical_calls_share_a_key_and_any_change_makes_another() -> None:
    key = task_key("square", CODE, (3,), {"scale": 1.5})
    assert key == task_key("square", CODE, (3,), {"scale": 1.5})
    assert key != task_key("square", CODE, (4,), {"scale": 1.5})
    assert key != task_key("square", CODE, (3,), {"scale": 1.0})
    assert key != task_key("square", code_digest(_cube), (3,), {"scale": 1.5})
    assert key != task_key("cube", CODE, (3,), {"scale": 1.5})
    # Types count: 1, 1.0, True and "1" are different arguments.
    keys = {task_key("f", CODE, (v,), {}) for v in (1, 1.0, True, "1", b"1", [1], (1,))}
    assert len(keys) == 7


def test_dict_and_set_order_do_not_matter() -> None:
    a = task_key("f", CODE, ({"x": 1, "y": {2, 3}},), {})
    b = task_key("f", CODE, ({"y": {3, 2}, "x": 1},), {})
    assert a == b


def test_keys_are_the_same_in_another_process_with_another_hash_seed() -> None:
    code = (
        "from asyncflow.cache import task_key; "
        "print(task_key('f', b'c', ({'a', 'b', 'c', 'd'}, frozenset({'x', 'y'})), {'k': {'z'}}))"
    )
    keys = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in (1, 2, 3)
    }
    assert len(keys) == 1


def test_input_files_count_by_content(tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    data.write_text("a,b\n1,2\n")
    first = task_key("f", CODE, (InputFile(data),), {})
    assert first == task_key("f", CODE, (InputFile(str(data)),), {})
    data.write_text("a,b\n1,3\n")
    assert task_key("f", CODE, (InputFile(data),), {}) != first
    assert task_key("f", CODE, (OutputFile("x"),), {}) != task_key(
        "f", CODE, (OutputFile("y"),), {}
    )
    with pytest.raises(Uncacheable, match="cannot be read"):
        task_key("f", CODE, (InputFile(tmp_path / "missing"),), {})


def test_unpicklable_or_self_containing_arguments_are_uncacheable() -> None:
    with pytest.raises(Uncacheable, match="type lock can be neither hashed"):
        task_key("f", CODE, (threading.Lock(),), {})
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(Uncacheable, match="nested"):
        task_key("f", CODE, (loop,), {})


def test_store_round_trip_listing_stats_and_clear(tmp_path: Path) -> None:
    store = ResultCache.open(tmp_path / "run")
    assert store.get("k1") is None
    assert store.put_many([("k1", "square", {"v": [1, 2]}, "s1", "task.000001")]) == 1
    assert store.put_many([("k2", "cube", 8, "s1", "task.000002")]) == 1
    hit = store.get("k1")
    assert hit is not None and hit.value == {"v": [1, 2]}
    assert (hit.session, hit.task) == ("s1", "task.000001")
    assert {e.name for e in store.entries()} == {"square", "cube"}
    assert store.stats()["entries"] == 2
    assert store.clear("cube") == 1
    assert len(store) == 1
    store.close()
    again = ResultCache.open(tmp_path / "run", create=False)
    assert again.get("k1") is not None
    assert again.clear() == 1
    again.close()
    assert (tmp_path / "run" / FILE_NAME).exists()


def test_an_unpicklable_result_is_skipped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ResultCache.open(tmp_path)
    rows = [("a", "f", threading.Lock(), "s", "t1"), ("b", "f", threading.Lock(), "s", "t2")]
    assert store.put_many(rows) == 0
    assert sum("cannot be pickled" in r.message for r in caplog.records) == 1
    store.close()


def _listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_a_truncated_store_is_a_clear_error_and_nothing_is_written(tmp_path: Path) -> None:
    store = ResultCache.open(tmp_path)
    store.put_many([(f"k{i}", "f", "x" * 2000, "s", f"t{i}") for i in range(200)])
    store.close()
    path = tmp_path / FILE_NAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    before = _listing(tmp_path)
    with pytest.raises(CacheError, match=r"damaged.*cut short") as info:
        ResultCache.open(tmp_path)
    assert str(path) in str(info.value)
    assert _listing(tmp_path) == before  # no byte written, no file added


def test_a_foreign_database_or_file_is_a_clear_error(tmp_path: Path) -> None:
    foreign = tmp_path / "other"
    foreign.mkdir()
    conn = sqlite3.connect(foreign / FILE_NAME)
    conn.execute("CREATE TABLE accounts (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(CacheError, match="another program"):
        ResultCache.open(foreign)
    text = tmp_path / "text"
    text.mkdir()
    (text / FILE_NAME).write_text("hello, I am not a database at all" * 10)
    before = _listing(text)
    with pytest.raises(CacheError, match="not an SQLite database"):
        ResultCache.open(text)
    assert _listing(text) == before


def test_a_missing_store_is_not_created_when_asked_not_to(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="no result cache"):
        ResultCache.open(tmp_path / "nowhere", create=False)
    assert not (tmp_path / "nowhere").exists()


def test_engines_creating_one_store_at_once_all_open_it(tmp_path: Path) -> None:
    # Threads stand in for engines: each opens the same new store at the
    # same moment, as two campaigns resuming from one directory do.
    import threading

    for round_ in range(10):
        directory = tmp_path / f"store-{round_}"
        barrier = threading.Barrier(6)
        errors: list[BaseException] = []

        def open_it(
            directory: Path = directory,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            barrier.wait()
            try:
                ResultCache.open(directory).close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert len(ResultCache.open(directory, create=False)) == 0
