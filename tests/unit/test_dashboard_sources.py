"""Span sources: a real recorded run tailed as it grows, OTLP/JSON files, Jaeger and Tempo.

Jaeger and Tempo are played by a local HTTP server answering with bodies
in the documented formats of their APIs (``tests/ui/data``); live servers
are exercised only by the stack smoke script.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncflow import WorkflowEngine
from asyncflow.dashboard import SourceError, figures, open_source, sources
from asyncflow.dashboard._board import Dashboard
from asyncflow.dashboard.sources import (
    CheckpointSource,
    JaegerSource,
    OtlpFileSource,
    TempoSource,
)
from asyncflow.telemetry import names as n

from ..ui import records as r
from ..ui.campaign import TYPES, record_campaign, task_count

DATA = Path(__file__).resolve().parents[1] / "ui" / "data"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A campaign run by the real engine: its checkpoint file and its OTLP/JSON export."""
    directory = tmp_path_factory.mktemp("run")
    otlp = directory / "run.otlp.json"
    checkpoint = asyncio.run(record_campaign(directory, otlp=otlp))
    return checkpoint, otlp


def test_a_recorded_run_reads_back_whole(recorded: tuple[Path, Path]) -> None:
    run = CheckpointSource(recorded[0]).poll()
    assert len(run.tasks) == task_count() and run.ended and not run.problems
    assert {t.workflow_type for t in run.tasks} == set(TYPES)
    assert [t.state for t in run.tasks].count("failed") == 1
    assert all(t.started is not None and t.finished is not None for t in run.tasks)
    assert {t.gpus for t in run.tasks} == {0, 1}
    assert run.samples  # ResourceUpdate events every 50 ms
    assert 0 <= min(t.created for t in run.tasks) - run.start < 5


def test_the_tail_reads_only_whole_lines(recorded: tuple[Path, Path], tmp_path: Path) -> None:
    data = recorded[0].read_bytes()
    spans_at = [i for i in range(len(data)) if data.startswith(b'{"section":"span"', i)]
    cut = spans_at[len(spans_at) // 2] + 40  # inside a span line
    live = tmp_path / recorded[0].name
    live.write_bytes(data[:cut])
    source = CheckpointSource(live)
    first = source.poll()
    assert 0 < len([t for t in first.tasks if t.finished]) < task_count()
    assert not first.ended
    assert any("incomplete" in p for p in first.problems)
    assert source.poll().version == first.version  # nothing new, nothing redone
    with live.open("ab") as f:
        f.write(data[cut:])
    second = source.poll()
    assert len(second.tasks) == task_count() and second.ended
    assert all(t.finished for t in second.tasks) and not second.problems
    assert second.version > first.version


def test_running_tasks_show_before_their_span(tmp_path: Path) -> None:
    live = tmp_path / f"run{n.CHECKPOINT_SUFFIX}"
    created = {
        "section": n.SECTION_EVENT,
        "name": n.EVENT_TASK_CREATED,
        "event_time": 100.0,
        "task_id": "task.000001",
        "backend": "local",
        "attributes": {n.WORKFLOW_ID: "wf-1"},
    }
    started = {**created, "name": n.EVENT_TASK_STARTED, "event_time": 101.0}
    live.write_text("".join(json.dumps(x) + "\n" for x in (created, started)))
    (task,) = CheckpointSource(live).poll().tasks
    assert (task.state, task.started, task.finished) == ("running", 101.0, None)


def test_a_replaced_file_is_read_again(recorded: tuple[Path, Path], tmp_path: Path) -> None:
    live = tmp_path / recorded[0].name
    live.write_bytes(recorded[0].read_bytes())
    source = CheckpointSource(live)
    assert len(source.poll().tasks) == task_count()
    live.write_text("")
    assert source.poll().tasks == ()


async def run_script(directory: Path, workflow: str) -> Path:
    """One run of a small script (three tasks in a workflow named ``workflow``); its file."""
    engine = await WorkflowEngine.create(work_dir=directory)
    await engine.start_telemetry(checkpoint_path=directory)

    @engine.function_task
    async def step(i: int) -> int:
        return i

    async with engine.workflow_scope(name=workflow):
        futures = [step(i) for i in range(3)]
    await asyncio.gather(*futures)
    await engine.shutdown()
    (path,) = directory.glob(f"*{n.CHECKPOINT_SUFFIX}")
    return path


def test_a_file_replaced_by_another_run_never_repeats_a_version(tmp_path: Path) -> None:
    """Two runs of one script reach the same number of records: the second, put in
    place of the first, must not be taken for it (the page caches figures by version)."""
    first = asyncio.run(run_script(tmp_path / "first", "first"))
    second = asyncio.run(run_script(tmp_path / "second", "second"))
    watched = tmp_path / f"latest{n.CHECKPOINT_SUFFIX}"
    watched.write_bytes(first.read_bytes())
    board = Dashboard(open_source(watched))
    old, _ = board.poll()
    assert old is not None and {t.workflow_type for t in old.tasks} == {"first"}
    assert "first" in board.draw(figures.summary_figure).to_json()
    staged = tmp_path / "staged"
    staged.write_bytes(second.read_bytes())
    os.replace(staged, watched)  # how a tool puts a new file in place: a new inode
    new, _ = board.poll()
    assert new is not None and {t.workflow_type for t in new.tasks} == {"second"}
    assert new.version > old.version
    drawn = board.draw(figures.summary_figure)
    assert drawn.to_json() == figures.summary_figure(new).to_json()


def test_empty_and_garbage_files(tmp_path: Path) -> None:
    empty = tmp_path / f"empty{n.CHECKPOINT_SUFFIX}"
    empty.write_text("")
    run = CheckpointSource(empty).poll()
    assert run.tasks == () and "is empty" in run.problems[0]
    garbage = tmp_path / f"garbage{n.CHECKPOINT_SUFFIX}"
    garbage.write_bytes(os.urandom(3000).replace(b"\n", b"x") + b"\nhello\n")
    with pytest.raises(SourceError, match="not an asyncflow checkpoint file"):
        CheckpointSource(garbage).poll()
    with pytest.raises(SourceError, match="does not exist"):
        CheckpointSource(tmp_path / "missing.jsonl").poll()


def _long_task_line(uid: str, size: int) -> bytes:
    """A task span line with a text attribute of ``size`` characters, and its newline."""
    span = r.task_span(uid, "wf-a", "simulate", 0, None, 1.0, 2.0)
    span["attributes"]["campaign.config"] = "x" * size
    return json.dumps(span, separators=(",", ":")).encode() + b"\n"


@pytest.mark.timeout(30)  # the tail used to re-read the same chunk for ever
def test_a_line_longer_than_a_read_is_parsed_whole(tmp_path: Path) -> None:
    live = tmp_path / f"run{n.CHECKPOINT_SUFFIX}"
    long = _long_task_line("task.000001", sources._CHUNK + 1024 * 1024)
    short = _long_task_line("task.000002", 10)
    assert b"\n" not in long[: sources._CHUNK]
    live.write_bytes(long + short)
    run = CheckpointSource(live).poll()
    assert sorted(t.uid for t in run.tasks) == ["task.000001", "task.000002"]
    assert not run.problems


@pytest.mark.timeout(30)
def test_a_long_line_still_being_written_waits_and_is_read_once(tmp_path: Path) -> None:
    live = tmp_path / f"run{n.CHECKPOINT_SUFFIX}"
    short = _long_task_line("task.000001", 10)
    long = _long_task_line("task.000002", sources._CHUNK + 1024 * 1024)
    cut = len(long) - 1000  # more than a chunk of the line, without its newline
    live.write_bytes(short + long[:cut])
    tail = sources._Tail(live)
    tail.read()
    first = tail.builder.snapshot()
    assert [t.uid for t in first.tasks] == ["task.000001"]
    assert any(f"incomplete ({cut} bytes)" in p for p in first.problems)
    assert (tail.offset, tail.torn) == (len(short) + cut, cut)  # kept, not read again
    tail.read()
    assert tail.builder.snapshot().version == first.version  # nothing new, nothing redone
    with live.open("ab") as f:
        f.write(long[cut:])
    tail.read()
    second = tail.builder.snapshot()
    assert [t.uid for t in second.tasks] == ["task.000001", "task.000002"]
    assert not second.problems and tail.torn == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("newline", [False, True], ids=["no-newline", "newline-after-5MB"])
def test_a_long_first_line_that_is_no_record_says_so(tmp_path: Path, newline: bool) -> None:
    garbage = tmp_path / f"garbage{n.CHECKPOINT_SUFFIX}"
    garbage.write_bytes(b"x" * (sources._CHUNK + 1024 * 1024) + (b"\n" if newline else b""))
    with pytest.raises(SourceError, match="not an asyncflow checkpoint file: none of its 1 line"):
        open_source(garbage).poll()


def test_a_short_unterminated_line_that_is_no_record_says_so(tmp_path: Path) -> None:
    garbage = tmp_path / f"hello{n.CHECKPOINT_SUFFIX}"
    garbage.write_bytes(b"hello")
    source = CheckpointSource(garbage)
    with pytest.raises(SourceError, match="first: 'hello'"):
        source.poll()
    with garbage.open("ab") as f:  # records after it are read; it stays one bad line
        f.write(b" world\n" + json.dumps(r.session_span()).encode() + b"\n")
    run = source.poll()
    assert run.ended and run.problems == (
        f"Skipped 1 line(s) of {garbage.name} that are not telemetry records (first: 'hello').",
    )


def test_a_directory_shows_its_newest_run(recorded: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="No checkpoint files"):
        CheckpointSource(tmp_path).poll()
    old = tmp_path / f"a.1{n.CHECKPOINT_SUFFIX}"
    old.write_bytes(recorded[0].read_bytes())
    new = tmp_path / f"b.2{n.CHECKPOINT_SUFFIX}"
    new.write_text("")
    os.utime(old, (1_000_000, 1_000_000))
    source = open_source(tmp_path)
    assert [label for _, label in source.runs()] == [new.name, old.name]
    assert source.poll().tasks == ()
    source.select(str(old))
    assert len(source.poll().tasks) == task_count()


GATED_RUN = """
import asyncio, sys
from pathlib import Path
from asyncflow import WorkflowEngine

async def main(directory: Path, gate: Path) -> None:
    engine = await WorkflowEngine.create(work_dir=directory / gate.name)
    await engine.start_telemetry(checkpoint_path=directory, resource_poll_interval=3600)

    @engine.function_task
    async def gated(i: int) -> int:
        while not gate.exists():
            await asyncio.sleep(0.01)
        return i

    await asyncio.gather(*(gated(i) for i in range(3)))
    await engine.shutdown()

asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
"""


def poll_until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something true, with a deadline."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.02)
    return found


def test_a_directory_shows_the_run_that_started_last_while_both_write(tmp_path: Path) -> None:
    """Two real runs write into one directory at once: the one started last is
    shown, even while the other is the one writing (it used to flip between them)."""
    runs = tmp_path / "runs"
    runs.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs: list[subprocess.Popen[bytes]] = []

    def start(gate: str) -> Path:
        """Start a run whose tasks wait for the file ``gate``; its checkpoint file."""
        before = set(runs.glob(f"*{n.CHECKPOINT_SUFFIX}"))
        args = [sys.executable, "-c", GATED_RUN, str(runs), str(tmp_path / gate)]
        procs.append(subprocess.Popen(args, env=env))

        def running() -> Path | None:
            # All three tasks started: the run writes nothing more until its gate opens.
            for path in set(runs.glob(f"*{n.CHECKPOINT_SUFFIX}")) - before:
                tasks = CheckpointSource(path).poll().tasks
                if len(tasks) == 3 and all(t.started is not None for t in tasks):
                    return path
            return None

        found: Path = poll_until(running, f"the run gated by {gate} started")
        return found

    try:
        first = start("first")
        second = start("second")
        source = CheckpointSource(runs)
        assert Path(source.poll().source) == second
        (tmp_path / "first").touch()  # the first run finishes: it writes last
        assert procs[0].wait(60) == 0
        assert first.stat().st_mtime_ns >= second.stat().st_mtime_ns
        shown = source.poll()
        assert Path(shown.source) == second and not shown.ended
        assert [Path(key) for key, _ in source.runs()] == [second, first]
        (tmp_path / "second").touch()
        assert procs[1].wait(60) == 0
        shown = source.poll()
        assert Path(shown.source) == second and shown.ended and len(shown.tasks) == 3
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_otlp_json_files(recorded: tuple[Path, Path], tmp_path: Path) -> None:
    source = open_source(recorded[1])
    assert isinstance(source, OtlpFileSource)
    run = source.poll()
    assert len(run.tasks) == task_count() and {t.workflow_type for t in run.tasks} == set(TYPES)
    # The collector's file exporter: one document per line, the last maybe torn.
    document = json.loads(recorded[1].read_text())
    lines = tmp_path / "collector.json"
    resource_spans = document["resourceSpans"][0]
    halves = [
        dict(
            resource_spans,
            scopeSpans=[dict(s, spans=s["spans"][i::2]) for s in resource_spans["scopeSpans"]],
        )
        for i in (0, 1)
    ]
    lines.write_text("\n".join(json.dumps({"resourceSpans": [h]}) for h in halves) + '\n{"res')
    assert len(OtlpFileSource(lines).poll().tasks) == task_count()
    bad = tmp_path / "bad.json"
    bad.write_text('{"something": "else"}')
    with pytest.raises(SourceError, match="not an OTLP/JSON trace file"):
        open_source(bad).poll()


# ---------------------------------------------------------------- Jaeger and Tempo
class _Api(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes]] = {}
    seen: list[tuple[str, dict[str, list[str]]]] = []

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        self.seen.append((url.path, urllib.parse.parse_qs(url.query)))
        status, body = self.routes.get(url.path, (404, b'{"error":{"message":"no route"}}'))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[tuple[str, type[_Api]]]:
    handler = type("Api", (_Api,), {"routes": {}, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def body(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_jaeger_newest_trace_of_the_service(api: tuple[str, type[_Api]]) -> None:
    url, handler = api
    handler.routes["/api/v3/traces"] = (200, body("jaeger_v3_traces.json"))
    run = JaegerSource(url + "/", service="md-campaign").poll()
    assert len(run.tasks) == 8 and len(run.workflows) == 8
    path, query = handler.seen[0]
    assert path == "/api/v3/traces"
    assert query["query.serviceName"] == query["query.service_name"] == ["md-campaign"]
    assert "query.startTimeMin" in query and "query.start_time_max" in query


def test_jaeger_one_trace_by_id(api: tuple[str, type[_Api]]) -> None:
    url, handler = api
    handler.routes["/api/v3/traces/abc123"] = (200, body("jaeger_v3_trace.json"))
    source = open_source(jaeger=url, trace_id="abc123")
    first = source.poll()
    assert len(first.tasks) == 8 and source.poll().version == first.version


def test_jaeger_without_traces_says_so(api: tuple[str, type[_Api]]) -> None:
    url, handler = api
    handler.routes["/api/v3/traces"] = (404, body("jaeger_v3_not_found.json"))
    with pytest.raises(SourceError, match="has no traces of service 'asyncflow'"):
        JaegerSource(url).poll()


def test_tempo_search_then_trace(api: tuple[str, type[_Api]]) -> None:
    url, handler = api
    newest = json.loads(body("tempo_search.json"))["traces"][1]["traceID"]
    handler.routes["/api/search"] = (200, body("tempo_search.json"))
    handler.routes[f"/api/traces/{newest}"] = (200, body("tempo_trace.json"))
    run = TempoSource(url).poll()
    assert len(run.tasks) == 8
    (search, query), (trace, _) = handler.seen
    assert search == "/api/search" and query["q"] == ['{ resource.service.name = "asyncflow" }']
    assert trace == f"/api/traces/{newest}"


def test_tempo_with_nothing_found(api: tuple[str, type[_Api]]) -> None:
    url, handler = api
    handler.routes["/api/search"] = (200, b'{"traces": []}')
    with pytest.raises(SourceError, match="has no traces"):
        TempoSource(url).poll()
    handler.routes["/api/search"] = (200, b"<html>proxy error</html>")
    with pytest.raises(SourceError, match="not JSON"):
        TempoSource(url).poll()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("kind", [JaegerSource, TempoSource])
def test_unreachable_servers_give_a_clear_message(kind: type[JaegerSource]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(SourceError, match=f"Cannot reach {kind.what} at {url}: .*refused"):
        kind(url, timeout=2).poll()


def test_open_source_needs_exactly_one_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        open_source()
    with pytest.raises(ValueError, match="exactly one"):
        open_source(tmp_path, jaeger="http://x")
