"""The architecture, held by tests: the import rules of the house style.

Every module of the package is parsed (never imported) and each import is
resolved to the absolute module it names, with where it stands: at module
level, under ``if TYPE_CHECKING:`` (types only), or inside a function (lazy).

- The engine may use backends and telemetry, but at module level only their
  declared seams (``backends._base``, ``telemetry.names``,
  ``telemetry.observer``); everything else of theirs lazily.
- Backends and telemetry never import the engine or each other.
- The dashboard imports nothing of the package but ``telemetry.names`` and
  ``errors`` (it reads records, never a live engine).
- Pure modules import no asyncio and do no I/O.
- ``import asyncflow`` loads no dash, plotly or OpenTelemetry SDK.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "asyncflow"

# Modules that must stay pure: no asyncio, no I/O.
PURE = (
    "asyncflow.engine._graph",
    "asyncflow.engine._command",
    "asyncflow.engine._reports",
    "asyncflow.engine._policy",
    "asyncflow.telemetry.names",
    "asyncflow.telemetry._records",
    "asyncflow.telemetry._render",
    "asyncflow.telemetry._spans",
    "asyncflow.telemetry.observer",
    "asyncflow.telemetry._aggregate",
    "asyncflow.dashboard.model",
    "asyncflow.dashboard.compute",
    "asyncflow.dashboard._plot",
    "asyncflow.dashboard._timeline",
    "asyncflow.dashboard._panels",
    "asyncflow.dashboard.figures",
    "asyncflow.dashboard._attempts",
)
# Standard-library modules that mean concurrency or I/O.
IMPURE = frozenset(
    {
        "asyncio",
        "concurrent",
        "io",
        "os",
        "pathlib",
        "select",
        "shutil",
        "socket",
        "subprocess",
        "tempfile",
        "threading",
        "urllib",
    }
)
IO_CALLS = frozenset({"open", "print", "input"})

ENGINE_SEAMS = frozenset(
    {"asyncflow.backends._base", "asyncflow.telemetry.names", "asyncflow.telemetry.observer"}
)
DASHBOARD_ALLOWED = frozenset({"asyncflow.telemetry.names", "asyncflow.errors"})


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the absolute module imported (a submodule when one is named)
    where: str  # "top", "types" (under TYPE_CHECKING) or "lazy" (inside a function)
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imports_of(path: Path) -> list[Import]:
    name = module_name(path)
    package = name if _is_package(path) else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[Import] = []

    def resolve(node: ast.ImportFrom) -> str:
        if node.level == 0:
            return node.module or ""
        base = package.split(".")
        if node.level > 1:
            base = base[: -(node.level - 1)]
        return ".".join([*base, node.module] if node.module else base)

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, "lazy")
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), "types")
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), where)
            elif isinstance(child, ast.Import):
                found.extend(Import(name, a.name, where, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = resolve(child)
                for alias in child.names:
                    # "from pkg import sub": the submodule when it is one.
                    candidate = f"{base}.{alias.name}"
                    is_module = candidate.startswith("asyncflow.") and (
                        (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").exists()
                        or (PACKAGE.parent / Path(*candidate.split("."))).is_dir()
                    )
                    target = candidate if is_module else base
                    found.append(Import(name, target, where, child.lineno))
            else:
                visit(child, where)

    visit(tree, "top")
    return found


def all_imports() -> list[Import]:
    return [imp for path in sorted(PACKAGE.rglob("*.py")) for imp in imports_of(path)]


def _in(module: str, area: str) -> bool:
    return module == area or module.startswith(area + ".")


def violations(imports: list[Import]) -> list[str]:
    """Every broken import rule, as ``module:line imports target (where)``."""
    out: list[str] = []

    def bad(imp: Import, rule: str) -> None:
        out.append(f"{imp.module}:{imp.line} imports {imp.target} ({imp.where}): {rule}")

    engine, backends = "asyncflow.engine", "asyncflow.backends"
    telemetry, dashboard = "asyncflow.telemetry", "asyncflow.dashboard"
    for imp in imports:
        src, dst = imp.module, imp.target
        if not _in(dst, "asyncflow"):
            if src in PURE and imp.where != "types" and dst.split(".")[0] in IMPURE:
                bad(imp, "a pure module imports no asyncio and does no I/O")
            continue
        if (
            _in(src, engine)
            and imp.where == "top"
            and (_in(dst, backends) or _in(dst, telemetry))
            and dst not in ENGINE_SEAMS
        ):
            bad(imp, "the engine imports backends/telemetry lazily, but for their seams")
        if _in(src, backends) and (_in(dst, engine) or _in(dst, telemetry)):
            bad(imp, "backends never import the engine or telemetry")
        if _in(src, telemetry) and (_in(dst, engine) or _in(dst, backends)):
            bad(imp, "telemetry never imports the engine or backends")
        if (
            _in(src, dashboard)
            and not _in(dst, dashboard)
            and dst not in DASHBOARD_ALLOWED
            and dst != "asyncflow.telemetry"  # the package itself, for "import names"
        ):
            bad(imp, "the dashboard imports only telemetry.names and errors")
    return out


def io_calls(module: str) -> list[str]:
    path = PACKAGE.parent / Path(*module.split("."))
    path = path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{module}:{node.lineno} calls {node.func.id}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in IO_CALLS
    ]


def test_every_import_follows_the_layer_rules() -> None:
    imports = all_imports()
    assert len({imp.module for imp in imports}) > 40  # the walk saw the package
    assert violations(imports) == []


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_do_no_io(module: str) -> None:
    assert io_calls(module) == []


def test_the_rules_catch_what_they_forbid() -> None:
    # The checker itself, on imports made up to break each rule.
    broken = [
        Import("asyncflow.engine._engine", "asyncflow.telemetry.manager", "top", 1),
        Import("asyncflow.engine._engine", "asyncflow.backends.local", "top", 2),
        Import("asyncflow.backends.local", "asyncflow.engine._engine", "lazy", 3),
        Import("asyncflow.backends.local", "asyncflow.telemetry.names", "top", 4),
        Import("asyncflow.telemetry._recorder", "asyncflow.backends._base", "types", 5),
        Import("asyncflow.dashboard.app", "asyncflow.telemetry.checkpoint", "top", 6),
        Import("asyncflow.engine._graph", "asyncio", "top", 7),
    ]
    assert [v.split(":")[1].split()[0] for v in violations(broken)] == list("1234567")
    allowed = [
        Import("asyncflow.engine._engine", "asyncflow.telemetry.manager", "lazy", 1),
        Import("asyncflow.engine._engine", "asyncflow.telemetry.manager", "types", 2),
        Import("asyncflow.engine._engine", "asyncflow.backends._base", "top", 3),
        Import("asyncflow.dashboard.app", "asyncflow.telemetry.names", "top", 4),
        Import("asyncflow.engine._graph", "asyncio", "types", 5),
    ]
    assert violations(allowed) == []
    assert imports_of(PACKAGE / "engine" / "_engine.py")  # the walker resolves relative imports


def test_import_asyncflow_loads_no_dash_plotly_or_otel_sdk() -> None:
    probe = (
        "import sys, asyncflow\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('dash', 'plotly')"
        " or m.startswith('opentelemetry.sdk'))\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"
