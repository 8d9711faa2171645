"""The dependency graph the engine uses: compiled (``_cgraph.c``) when built.

``_cgraph.Graph`` is :class:`~asyncflow.engine._graph.Graph` in C, the same
algorithm on the same dicts: in Python the graph was about a fifth of
a no-op task's time in the engine, compiled about a tenth. The build hook
compiles it at install; without a C compiler (or with
``ASYNCFLOW_NO_EXTENSION=1``) the package works the same with the Python
class. A module built from another source than the ``_cgraph.c`` beside it
is not used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import ModuleType

from . import _graph as g

__all__ = ["COMPILED", "Graph"]

try:
    from . import _cgraph
except ImportError:  # pragma: no cover - built at install
    _cgraph = None  # type: ignore[assignment]


def _current(module: ModuleType) -> bool:
    """``module`` was built from the ``_cgraph.c`` beside it, at this version."""
    source = Path(str(module.__file__)).with_name("_cgraph.c")
    try:
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
    except OSError:  # installed without its source: its version says enough
        digest = module.SOURCE
    return bool(module.VERSION == 1 and digest == module.SOURCE)


def set_up(module: ModuleType) -> None:
    """Hand a compiled graph module what ``_graph`` defines (before its first Graph)."""
    module.setup(
        g.WAITING,
        g.READY,
        g.SUBMITTED,
        g.RUNNING,
        g.DONE,
        g.FAILED,
        g.CANCELLED,
        g.RELEASE,
        g.FAIL,
        g.CANCEL,
        dict(g.TRANSITIONS),
        g.InvalidTransition,
        g.check_graph,
    )


def _compiled() -> type[g.Graph] | None:
    if _cgraph is None or not _current(_cgraph):
        return None
    set_up(_cgraph)
    return _cgraph.Graph  # type: ignore[return-value] # the same methods, in C


_COMPILED = _compiled()
COMPILED: bool = _COMPILED is not None
"""True when the engine uses the compiled graph."""

Graph: type[g.Graph] = _COMPILED or g.Graph
"""The graph class engines use: the compiled one, else the Python one."""
