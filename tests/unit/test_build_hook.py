"""The build hook (hatch_build.py) compiles the C extensions, or leaves the wheel pure.

Run as hatchling runs it, with the real C compiler: a wheel build carries
the compiled module, an editable one puts it next to its source, and
without a compiler (or with ``ASYNCFLOW_NO_EXTENSION=1``) the build goes on
pure Python with a warning.
"""

from __future__ import annotations

import importlib.util
import shutil
import sysconfig
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = Path("asyncflow") / "dashboard" / "_scan.c"


def load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class App:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def display_warning(self, message: str) -> None:
        self.warnings.append(message)


def run_hook(root: Path, version: str) -> tuple[dict[str, Any], App]:
    hook_module = load(ROOT / "hatch_build.py", "asyncflow_hatch_build")
    app = App()
    hook = hook_module.ScannerBuildHook(
        str(root), {}, None, None, str(root / "dist"), "wheel", app=app
    )
    build_data: dict[str, Any] = {"force_include": {}}
    hook.initialize(version, build_data)
    return build_data, app


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A source tree holding just the scanner's source."""
    (tmp_path / SOURCE.parent).mkdir(parents=True)
    shutil.copy(ROOT / SOURCE, tmp_path / SOURCE)
    return tmp_path


def check_scanner(path: Path) -> None:
    scan = load(path, "_scan")
    scanner = scan.Scanner()
    header = b'{"section":"header","layout":2}'
    others = scanner.feed(header + b'\n{"section":"task","uid":"t","ended":5}\n')
    assert others == [header]
    assert scanner.finish()["rows"] == 1


def test_a_wheel_carries_the_compiled_scanner(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASYNCFLOW_NO_EXTENSION", raising=False)
    build_data, app = run_hook(tree, "standard")
    assert build_data["pure_python"] is False and build_data["infer_tag"] is True
    ((built, inside),) = build_data["force_include"].items()
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    assert inside == f"asyncflow/dashboard/_scan{suffix}" and not app.warnings
    check_scanner(Path(built))


def test_an_editable_install_builds_it_next_to_its_source(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ASYNCFLOW_NO_EXTENSION", raising=False)
    build_data, _ = run_hook(tree, "editable")
    assert build_data["pure_python"] is False and not build_data["force_include"]
    check_scanner(tree / SOURCE.parent / f"_scan{sysconfig.get_config_var('EXT_SUFFIX')}")


@pytest.mark.parametrize("why", ["no compiler", "a compiler that fails", "switched off"])
def test_without_a_compiler_the_build_goes_on_pure_python(
    tree: Path, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    monkeypatch.delenv("ASYNCFLOW_NO_EXTENSION", raising=False)
    if why == "no compiler":
        monkeypatch.setenv("CC", str(tree / "no-such-cc"))
    elif why == "a compiler that fails":
        monkeypatch.setenv("CC", "false")
    else:
        monkeypatch.setenv("ASYNCFLOW_NO_EXTENSION", "1")
    build_data, app = run_hook(tree, "standard")
    assert build_data == {"force_include": {}}
    if why == "switched off":
        assert not app.warnings
    else:
        (warning,) = app.warnings
        assert "not compiled" in warning and "Python instead" in warning


def test_a_failed_rebuild_leaves_no_module_from_an_older_source(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An editable install whose source changed and whose rebuild cannot compile
    must not leave the old module to be used."""
    monkeypatch.delenv("ASYNCFLOW_NO_EXTENSION", raising=False)
    run_hook(tree, "editable")
    module = tree / SOURCE.parent / f"_scan{sysconfig.get_config_var('EXT_SUFFIX')}"
    assert module.exists()
    (tree / SOURCE).write_text((tree / SOURCE).read_text() + "\n/* changed */\n")
    monkeypatch.setenv("CC", "false")
    build_data, app = run_hook(tree, "editable")
    assert build_data == {"force_include": {}} and app.warnings
    assert not module.exists()


def test_a_module_built_from_another_source_is_not_used(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncflow.dashboard import _finished

    monkeypatch.delenv("ASYNCFLOW_NO_EXTENSION", raising=False)
    run_hook(tree, "editable")
    path = tree / SOURCE.parent / f"_scan{sysconfig.get_config_var('EXT_SUFFIX')}"
    module = load(path, "_scan")
    assert _finished._current(module)  # its source beside it, unchanged
    (tree / SOURCE).write_text((tree / SOURCE).read_text() + "\n/* changed */\n")
    assert not _finished._current(module)


GRAPH = Path("asyncflow") / "engine" / "_cgraph.c"


@pytest.fixture
def graph_tree(tree: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A source tree holding the scanner's and the graph's sources."""
    monkeypatch.delenv("ASYNCFLOW_NO_EXTENSION", raising=False)
    (tree / GRAPH.parent).mkdir(parents=True)
    shutil.copy(ROOT / GRAPH, tree / GRAPH)
    return tree


def test_a_wheel_carries_the_compiled_graph_too(graph_tree: Path) -> None:
    from asyncflow.engine import _graph as g
    from asyncflow.engine import _native

    build_data, app = run_hook(graph_tree, "standard")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    inside = {v: Path(k) for k, v in build_data["force_include"].items()}
    assert set(inside) == {
        f"asyncflow/dashboard/_scan{suffix}",
        f"asyncflow/engine/_cgraph{suffix}",
    }
    assert not app.warnings
    module = load(inside[f"asyncflow/engine/_cgraph{suffix}"], "_cgraph")
    assert module.SOURCE == _native._cgraph.SOURCE  # the same source, the same hash
    _native.set_up(module)  # what the engine's own module gets before its first Graph
    graph = module.Graph()
    graph.add_ready("a")
    assert graph.add("b", ("a",), distinct=True) == []
    assert graph.finish("a", g.DONE) == [(g.RELEASE, "b", None)]


def test_a_graph_built_from_another_source_is_not_used(graph_tree: Path) -> None:
    from asyncflow.engine import _native

    tree = graph_tree
    run_hook(tree, "editable")
    module = load(
        tree / GRAPH.parent / f"_cgraph{sysconfig.get_config_var('EXT_SUFFIX')}", "_cgraph"
    )
    assert _native._current(module)  # its source beside it, unchanged
    (tree / GRAPH).write_text((tree / GRAPH).read_text() + "\n/* changed */\n")
    assert not _native._current(module)
