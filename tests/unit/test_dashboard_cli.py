"""``asyncflow dashboard`` and ``asyncflow report``: arguments, defaults, the report file."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

from asyncflow.cli import build_parser, main
from asyncflow.telemetry import names as n

from ..ui import records as r

pytest.importorskip("dash", reason="needs the dashboard extra")


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / f"run{n.CHECKPOINT_SUFFIX}"
    records = [r.session_span(), *r.campaign_spans(), r.metric_snapshot()]
    path.write_text("".join(json.dumps(x, separators=(",", ":")) + "\n" for x in records))
    return path


def test_dashboard_binds_to_localhost_by_default() -> None:
    args = build_parser().parse_args(["dashboard", "runs/"])
    assert (args.host, args.port, args.run) == ("127.0.0.1", 8050, "runs/")
    args = build_parser().parse_args(
        ["dashboard", "--jaeger", "http://j:16686", "--host", "0.0.0.0"]
    )
    assert (args.host, args.jaeger, args.run) == ("0.0.0.0", "http://j:16686", None)


def test_jaeger_and_tempo_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dashboard", "--jaeger", "a", "--tempo", "b"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_report_is_one_self_contained_file(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "report.html"
    assert main(["report", str(checkpoint), "-o", str(out), "--workflows", "2"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text()
    assert not re.search(r"<script[^>]+src=", text)  # plotly.js is inlined: opens offline
    assert "Plotly.newPlot" in text and len(text) > 1_000_000
    for div in ("campaign", "slots", "utilisation", "summary", "workflow-0", "workflow-1"):
        assert f'id="{div}"' in text
    assert "workflow-2" not in text
    assert "ValueError" in text and "evaluation set is empty" in text


def test_report_of_bad_input_fails_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / f"garbage{n.CHECKPOINT_SUFFIX}"
    garbage.write_text("no telemetry here\n")
    assert main(["report", str(garbage), "-o", str(tmp_path / "r.html")]) == 1
    assert "not an asyncflow checkpoint file" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no such file or directory"):
        main(["report", str(tmp_path / "missing"), "-o", str(tmp_path / "r.html")])
    with pytest.raises(SystemExit, match="exactly one"):
        main(["report", "-o", str(tmp_path / "r.html")])


def test_preload_reads_in_the_background(checkpoint: Path) -> None:
    """The server must not wait for the file: preload returns before the read ends."""
    from asyncflow.dashboard import open_source
    from asyncflow.dashboard.app import Dashboard, campaign, preload

    source = open_source(str(checkpoint))
    gate = threading.Event()
    read = source.poll

    def slow_poll() -> object:
        assert gate.wait(10)
        return read()

    source.poll = slow_poll  # type: ignore[method-assign]
    board = Dashboard(source)
    lines: list[str] = []
    thread = preload(board, lines.append)
    assert thread.is_alive() and lines == [] and board.run is None
    gate.set()
    thread.join(10)
    assert not thread.is_alive()
    assert board.run is not None
    assert re.fullmatch(rf".*: {len(board.run.tasks)} tasks read in \d+\.\d s", lines[0])
    # The timeline was drawn by the thread: the page's request gets that very figure.
    assert campaign(board) is campaign(board)
    assert len(board._figures) == 1
