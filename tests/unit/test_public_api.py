"""The names users import, the error tree and the data classes."""

from __future__ import annotations

import subprocess
import sys

import pytest

import asyncflow
from asyncflow import errors
from asyncflow.data import InputFile, OutputFile


def test_all_is_pinned() -> None:
    assert sorted(asyncflow.__all__) == sorted(
        [
            "Backoff",
            "DependencyFailureError",
            "InputFile",
            "LocalExecutionBackend",
            "NoopExecutionBackend",
            "OutputFile",
            "ResourcePool",
            "TaskTimeoutError",
            "WorkflowEngine",
            "__version__",
            "current_slots",
            "define_event",
        ]
    )
    for name in asyncflow.__all__:
        assert hasattr(asyncflow, name)


def test_submodules_export_their_names() -> None:
    from asyncflow import backends, data

    assert set(data.__all__) == {"InputFile", "OutputFile"}
    assert {"LocalExecutionBackend", "NoopExecutionBackend"} <= set(backends.__all__)
    assert "DependencyFailureError" in errors.__all__


def test_import_stays_light() -> None:
    code = (
        "import sys, asyncflow; "
        "heavy = [m for m in ('dash', 'plotly', 'opentelemetry.sdk', 'rhapsody', 'distributed') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_rhapsody_backends_by_their_older_names_load_rhapsody_only_then() -> None:
    code = (
        "import sys, asyncflow; assert 'rhapsody' not in sys.modules; "
        "from asyncflow import ConcurrentExecutionBackend, DaskExecutionBackend; "
        "import rhapsody.backends as rb; "
        "print(ConcurrentExecutionBackend is rb.ConcurrentExecutionBackend, "
        "DaskExecutionBackend is rb.DaskExecutionBackend)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        asyncflow.Nope  # noqa: B018


def test_error_tree() -> None:
    assert issubclass(errors.DependencyFailureError, errors.AsyncFlowError)
    assert issubclass(errors.EngineShutdownError, RuntimeError)
    assert issubclass(errors.UnknownBackendError, ValueError)
    assert issubclass(errors.TaskDefinitionError, TypeError)


def test_dependency_failure_chain() -> None:
    root = ValueError("boom")
    inner = errors.DependencyFailureError.for_task("b", ["a"], root)
    outer = errors.DependencyFailureError.for_task("c", ["b"], inner)
    assert str(outer) == "Cannot execute 'c' due to dependency failure"
    assert outer.root_cause is inner and outer.__cause__ is inner
    assert outer.original_exception is root
    assert outer.chain == ["c", "b", "a"]


def test_executable_error_message() -> None:
    exc = errors.ExecutableError(3, "bad things\n", "", ["/bin/tool", "x y"])
    assert exc.exit_code == 3 and "exit code 3" in str(exc) and "bad things" in str(exc)


def test_data_files() -> None:
    assert InputFile("https://host/dir/data.csv").filename == "data.csv"
    assert InputFile("https://host/dir/data.csv").is_url
    assert not InputFile("/scratch/x.h5").is_url
    assert InputFile("/scratch/x.h5").filename == "x.h5"
    assert str(OutputFile("out.txt")) == "out.txt"
    with pytest.raises(ValueError, match="non-empty"):
        InputFile("")
    with pytest.raises(ValueError, match="non-empty"):
        OutputFile("  ")


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    from asyncflow.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert asyncflow.__version__ in capsys.readouterr().out
