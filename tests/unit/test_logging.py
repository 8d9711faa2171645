"""``asyncflow.logging.init_default_logger``, the older AsyncFlow's signature."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncflow.logging import init_default_logger


@pytest.fixture
def name(request: pytest.FixtureRequest) -> Iterator[str]:
    logger_name = f"asyncflow-test.{request.node.name}"
    yield logger_name
    logger = logging.getLogger(logger_name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logging.captureWarnings(False)


def test_console_lines_twice_configured_are_not_doubled(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = init_default_logger(logging.INFO, logger_name=name)
    assert logger is logging.getLogger(name)
    init_default_logger(logging.INFO, logger_name=name)
    assert len(logger.handlers) == 1
    logger.info("hello %s", "there")
    logger.debug("not shown")
    out = capsys.readouterr().out
    assert out.count("hello there") == 1
    assert "not shown" not in out
    assert "INFO" in out and f"[{name.rsplit('.', 1)[-1]}]" in out
    assert "\033[" not in out  # not a terminal: no colours


def test_colours_only_on_a_terminal(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    controller, terminal = os.openpty()
    with os.fdopen(terminal, "w", buffering=1) as tty:
        monkeypatch.setattr(sys, "stdout", tty)
        init_default_logger("WARNING", logger_name=name).warning("careful")
        tty.flush()
        coloured = os.read(controller, 4096).decode()
        init_default_logger("WARNING", logger_name=name, use_colors=False).warning("plain")
        tty.flush()
        plain = os.read(controller, 4096).decode()
    os.close(controller)
    assert "careful" in coloured and "\033[93mWARNING\033[0m" in coloured
    assert "plain" in plain and "\033[" not in plain


def test_files_levels_details_and_structured_lines(name: str, tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "run.log"
    root_level = logging.getLogger().level  # the root logger: restored for later tests
    logger = init_default_logger(
        logging.WARNING,
        output_file=log_file,
        file_log_level="DEBUG",
        show_details=True,
        style="core",
        structured_logging=True,
    )
    assert logger is logging.getLogger()  # no logger_name: the root logger
    try:
        child = logging.getLogger(name)
        child.debug("detail", extra={"stage": "ingest"})
        try:
            raise KeyError("boom")
        except KeyError:
            child.exception("failed")
        for handler in logger.handlers:
            handler.flush()
        text = log_file.read_text()
        assert "detail" in text and "PID:" in text and "TID:" in text
        assert "KeyError: 'boom'" in text
        lines = (tmp_path / "logs" / "run.json").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        assert records[0]["message"] == "detail" and records[0]["stage"] == "ingest"
        assert records[1]["level"] == "ERROR" and "KeyError" in records[1]["exception"]
    finally:
        for handler in list(logger.handlers):
            if getattr(handler, "_asyncflow_handler", False):
                logger.removeHandler(handler)
                handler.close()
        logging.captureWarnings(False)
        logger.setLevel(root_level)


def test_clear_handlers_and_minimal_style(name: str) -> None:
    logger = logging.getLogger(name)
    foreign = logging.StreamHandler(io.StringIO())
    logger.addHandler(foreign)
    init_default_logger(logging.INFO, logger_name=name)
    assert foreign in logger.handlers  # kept unless asked
    init_default_logger(logging.INFO, logger_name=name, clear_handlers=True, style="minimal")
    assert foreign not in logger.handlers and len(logger.handlers) == 1
    record = logging.LogRecord(name, logging.INFO, __file__, 1, "short", None, None)
    assert logger.handlers[0].format(record) == "INFO │ short"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"use_colors": "no"}, TypeError, "use_colors must be True or False"),
        ({"structured_logging": 1}, TypeError, "structured_logging must be True or False"),
        ({"style": "fancy"}, ValueError, "style must be one of"),
        ({"file_log_level": "LOUD"}, ValueError, "'LOUD' is not a logging level name"),
    ],
)
def test_bad_arguments_are_named(
    name: str, kwargs: dict[str, object], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        init_default_logger(logging.INFO, logger_name=name, **kwargs)  # type: ignore[arg-type]


def test_older_programs_first_lines_run_unchanged(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import logging
        from asyncflow.logging import init_default_logger

        init_default_logger(logging.INFO)
        init_default_logger(logging.INFO)
        logging.getLogger(__name__).info("ready")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.stdout.count("ready") == 1
    assert "[main]" in done.stdout
