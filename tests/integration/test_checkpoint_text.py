"""User values on their way to the checkpoint file and OTLP.

A file name that is not UTF-8 reaches Python as a string with lone
surrogates (PEP 383), and from there an error message, an event field or a
span attribute. Encoding one strictly raised: the writer process died and
the rest of the run never reached the file (the thread writer stopped
writing for good). Each such character is now written as its escape.

A numpy number in a span attribute went to the writer process as its raw
bytes (``marshal`` writes any object with a memory buffer that way): the
file held ``"b'\\x00...'"``. Attribute values are now made plain first.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from asyncflow import WorkflowEngine, define_event
from asyncflow.dashboard import open_source
from asyncflow.telemetry import _pipe_writer, checkpoint, names, read_checkpoint
from asyncflow.telemetry._otlp_proto import encode_value
from asyncflow.telemetry._spans import plain_attributes, plain_value
from asyncflow.telemetry._unencodable import LINE_ERRORS, TEXT_ERRORS

# What os.listdir() gives for the file name b"data-\xff.csv".
NAME = b"data-\xff.csv".decode("utf-8", "surrogateescape")
FileSeen = define_event("test.FileSeen", path="")


@pytest.mark.parametrize("writer", ["process", "thread"])
async def test_a_name_that_is_not_utf8_is_written_escaped_and_the_run_goes_on(
    writer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if writer == "thread":

        def cannot(*args: Any, **kwargs: Any) -> Any:
            raise _pipe_writer.NoWriterProcess("the thread writer, for this test")

        monkeypatch.setattr(checkpoint, "ProcessCheckpointWriter", cannot)
    engine = await WorkflowEngine.create(work_dir=tmp_path)
    try:
        tel = await engine.start_telemetry(checkpoint_path=tmp_path / "tel")

        @engine.function_task
        async def read(name: str) -> None:
            raise FileNotFoundError(f"no such file: {name}")

        @engine.function_task
        async def ok(x: int) -> int:
            return x

        assert await asyncio.gather(*[ok(i) for i in range(3)]) == [0, 1, 2]
        bad = read(NAME)
        with pytest.raises(FileNotFoundError):
            await bad
        tel.emit(FileSeen(path=NAME))
        async with engine.workflow_scope(name=f"scan {NAME}"):
            after = [ok(i) for i in range(3)]
        assert await asyncio.gather(*after) == [0, 1, 2]
    finally:
        await engine.shutdown()
    file = next((tmp_path / "tel").glob("*.jsonl"))
    file.read_bytes().decode("utf-8")  # valid UTF-8 from end to end
    run = open_source(file).poll()
    assert run.ended
    states = {t.uid: t.state for t in run.tasks}
    assert len(states) == 7
    assert states.pop(bad.uid) == "failed"
    assert set(states.values()) == {"completed"}
    failed = next(t for t in run.tasks if t.uid == bad.uid)
    assert failed.message == "no such file: data-\\xff.csv"
    assert "data-\\xff.csv" in failed.failure
    events = [e for e in read_checkpoint(file, ["event"]) if e.get("name") == "test.FileSeen"]
    assert [e["path"] for e in events] == ["data-\\xff.csv"]
    workflows = {t.workflow_type for t in run.tasks if t.uid in {f.uid for f in after}}
    assert workflows == {"scan data-\\xff.csv"}


def test_unencodable_text_is_escaped_for_json_lines_and_for_otlp() -> None:
    import orjson

    text = NAME + "\ud800"  # a surrogateescape byte, and any other lone surrogate
    assert text.encode("utf-8", TEXT_ERRORS) == b"data-\\xff.csv\\ud800"
    line = orjson.dumps({"m": "x"}).replace(b"x", text.encode("utf-8", LINE_ERRORS))
    assert orjson.loads(line) == {"m": "data-\\xff.csv\\ud800"}
    # An OTLP string attribute is valid UTF-8 too (a collector rejects any other).
    body = encode_value(text)
    assert body is not None and b"data-\\xff.csv\\ud800" in body
    body.decode("utf-8")
    # Text UTF-8 encodes is encoded as ever.
    assert "é\u2603".encode("utf-8", LINE_ERRORS) == "é\u2603".encode()


async def test_numpy_values_in_span_attributes_keep_their_values(tmp_path: Path) -> None:
    import enum

    import numpy as np

    class Level(enum.IntEnum):
        HIGH = 2

    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    try:
        tel = await engine.start_telemetry(checkpoint_path=tmp_path / "tel")
        tel.register_span_enricher(
            lambda task, attrs: {
                "test.score": np.float64(0.5),
                "test.n": np.int64(3),
                "test.shape": np.array([2, 3]),
                "test.label": np.str_("best"),
                "test.level": Level.HIGH,
            }
        )

        @engine.function_task
        async def train(x: int) -> int:
            return x

        with tel.span_scope("prepare", {"test.rows": np.int64(1000)}):
            pass
        async with engine.workflow_scope(name=np.str_("simulate")):  # type: ignore[arg-type]
            await train(1)
    finally:
        await engine.shutdown()
    file = next((tmp_path / "tel").glob("*.jsonl"))
    spans = {s["name"]: s["attributes"] for s in read_checkpoint(file, ["span"])}
    assert spans["span prepare"]["test.rows"] == 1000
    task = spans["task train"]
    assert task["test.score"] == 0.5 and task["test.n"] == 3
    assert task["test.shape"] == [2, 3]
    assert task["test.label"] == "best" and task["test.level"] == 2
    assert task[names.WORKFLOW_NAME] == "simulate"
    assert [t.workflow_type for t in open_source(file).poll().tasks] == ["simulate"]


@pytest.mark.parametrize("scanner", [True, False])
async def test_a_float_that_is_not_finite_leaves_the_line_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scanner: bool
) -> None:
    """NaN and infinities from a span enricher are written as text: NaN is no
    JSON, and a task whose last line no reader takes would show as running."""
    from asyncflow.dashboard import _finished

    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    try:
        tel = await engine.start_telemetry(checkpoint_path=tmp_path / "tel")
        tel.register_span_enricher(
            lambda task, attrs: {
                "test.nan": float("nan"),
                "test.inf": float("inf"),
                "test.list": [1.5, float("-inf")],
            }
        )

        @engine.function_task
        async def train(x: int) -> int:
            return x

        with tel.span_scope("prepare", {"test.nan": float("nan")}):
            pass
        await train(1)
    finally:
        await engine.shutdown()
    file = next((tmp_path / "tel").glob("*.jsonl"))
    constants: list[str] = []  # NaN, Infinity: what json reads but JSON has not
    for line in file.read_text().splitlines():
        json.loads(line, parse_constant=constants.append)
    assert not constants
    spans = {s["name"]: s["attributes"] for s in read_checkpoint(file, ["span"])}
    assert spans["task train"]["test.nan"] == "nan" and spans["task train"]["test.inf"] == "inf"
    assert spans["task train"]["test.list"] == [1.5, "-inf"]
    assert spans["span prepare"]["test.nan"] == "nan"
    if not scanner:
        monkeypatch.setattr(_finished, "SCANNER", None)
    (task,) = open_source(file).poll().tasks
    assert task.state == "completed" and dict(task.extra)["test.nan"] == "nan"


def test_plain_values() -> None:
    import numpy as np

    assert plain_value(np.float64(0.25)) == 0.25 and type(plain_value(np.float64(1))) is float
    assert plain_value(np.int32(7)) == 7 and type(plain_value(np.int32(7))) is int
    assert plain_value(np.bool_(True)) is True
    assert plain_value(np.array([[1, 2], [3, 4]])) == [[1, 2], [3, 4]]
    assert plain_value((1, "a", np.int64(2))) == [1, "a", 2]
    assert plain_value(b"ok\xff") == "ok\\xff"
    assert plain_value({"a": 1}) == "{'a': 1}"
    assert plain_value(None) is None
    plain = {"a": 1, "b": "x", "c": 0.5, "d": False}
    assert plain_attributes(plain) is plain  # nothing to do: the same dict
    assert plain_attributes({"a": np.int64(1)}) == {"a": 1}
