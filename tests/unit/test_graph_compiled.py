"""The compiled graph (``_cgraph.c``) against the Python one, its reference.

Random sequences of every operation, valid and invalid, on both: the same
return values, the same exceptions, the same state after each step. And no
reference leaked or lost: a C refcount error shows up here as a count that
does not come back, long before it would crash an engine.
"""

from __future__ import annotations

import gc
import os
import random
import sys
import weakref
from typing import Any

import pytest

from asyncflow.engine import _graph as g
from asyncflow.engine import _native

pytestmark = pytest.mark.skipif(
    not _native.COMPILED and os.environ.get("CI") != "true",
    reason="the compiled graph was not built (no C compiler at install)",
)


def test_the_engine_uses_the_compiled_graph() -> None:
    # In CI the install must have compiled it (a failure here, never a skip).
    assert _native.COMPILED and _native.Graph is not g.Graph
    assert type(_native.Graph()).__module__ == "asyncflow.engine._cgraph"


def outcome(graph: Any, method: str, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """What ``graph.method(*args, **kwargs)`` returned or raised."""
    try:
        return "ok", getattr(graph, method)(*args, **kwargs)
    except Exception as exc:
        return "error", (type(exc).__name__, str(exc))


def both(graphs: tuple[Any, Any], method: str, *args: Any, **kwargs: Any) -> list[Any]:
    return [outcome(graph, method, *args, **kwargs) for graph in graphs]


class Key:
    """A key with a reference count of its own to watch."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def play(seed: int, steps: int = 150) -> None:
    rnd = random.Random(seed)
    validate = rnd.random() < 0.5
    graphs = (g.Graph(validate=validate), _native.Graph(validate=validate))
    keys: list[Key] = []
    unknown = Key("unknown")
    for step in range(steps):
        if not keys or rnd.random() < 0.35:
            key = Key(f"k{step}")
            if rnd.random() < 0.2:
                results = both(graphs, "add_ready", key)
            else:
                deps: Any = rnd.sample(keys, min(len(keys), rnd.randint(0, 3)))
                distinct = bool(deps) and rnd.random() < 0.6
                if distinct:
                    deps = tuple(deps)
                elif deps and rnd.random() < 0.3:
                    deps = [*deps, deps[0]]  # a repeat, counted once
                if rnd.random() < 0.05:
                    deps = (*deps, unknown)
                results = both(graphs, "add", key, deps, distinct=distinct)
            keys.append(key)
        else:
            key = rnd.choice(keys) if rnd.random() > 0.03 else unknown
            op = rnd.choice(
                ["submitted", "started", "finish", "finish", "finish", "retry", "push_down"]
            )
            if op == "finish":
                state = rnd.choice([g.DONE, g.DONE, g.FAILED, g.CANCELLED, g.RUNNING])
                results = both(graphs, "finish", key, state)
            else:
                results = both(graphs, op, key)
        assert results[0] == results[1], (seed, step)
        for key in (*keys, unknown):
            for query in ("state", "dependents", "is_pushed_down", "__contains__"):
                python, compiled = both(graphs, query, key)
                assert python == compiled, (seed, step, query, key)
        for query in ("unfinished", "counts", "__len__"):
            python, compiled = both(graphs, query)
            assert python == compiled, (seed, step, query)


@pytest.mark.parametrize("first", range(0, 240, 40))
def test_random_operations_agree_with_the_python_graph(first: int) -> None:
    for seed in range(first, first + 40):
        play(seed)


def test_no_reference_is_leaked_or_lost() -> None:
    keys = [Key(f"k{i}") for i in range(300)]
    before = [sys.getrefcount(k) for k in keys]
    for validate in (False, True):
        graph = _native.Graph(validate=validate)
        graph.add_ready(keys[0])
        for i in range(1, 300):
            deps = (keys[i - 1],) if i % 3 else (keys[i - 1], keys[i // 2])
            graph.add(keys[i], deps, distinct=i % 2 == 0)
        graph.add(Key("x"), [keys[5], keys[6], keys[5]])
        graph.dependents(keys[10])
        graph.counts()
        graph.unfinished()
        for i, key in enumerate(keys):
            if graph.state(key) == g.READY:
                graph.submitted(key)
                graph.started(key)
            graph.finish(key, (g.DONE, g.FAILED, g.DONE, g.CANCELLED)[i % 4])
        with pytest.raises(KeyError):
            graph.state(Key("nope"))
        del graph, deps, key
    gc.collect()
    assert [sys.getrefcount(k) for k in keys] == before


def test_a_graph_in_a_reference_cycle_is_collected() -> None:
    # The engine holds its graph, whose keys (the engine's futures) hold the
    # engine: the collector must see through the compiled graph.
    class Holder:
        graph: Any = None

    holder = Holder()
    holder.graph = _native.Graph()
    holder.graph.add_ready(holder)
    gone = weakref.ref(holder)
    del holder
    gc.collect()
    assert gone() is None


def test_setup_is_required_and_bad_arguments_are_named() -> None:
    graph = _native.Graph()
    with pytest.raises(TypeError):
        _native.Graph(True)  # type: ignore[misc] # validate is keyword-only
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        graph.add("a", (), nope=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unhashable"):
        graph.finish("a", [])  # type: ignore[arg-type]
    assert graph.add("b", deps=()) == [(g.RELEASE, "b", None)]


def test_validate_mode_checks_the_compiled_graph_s_dicts() -> None:
    """The full check (``_graph.check_graph``) runs on the compiled graph's own
    dicts: a counter out of step with the edges is caught."""
    graph = _native.Graph(validate=True)
    graph.add_ready("a")
    graph.add("b", ("a",), distinct=True)
    graph._waiting["b"] = 2  # only one unfinished dependency: a corrupted counter
    graph.add_ready("c")  # add_ready checks nothing, in either class
    with pytest.raises(g.InvalidTransition, match="waits on 2 but has 1"):
        graph.add("d", ("c",), distinct=True)
    quiet = _native.Graph()  # no validate mode: no check
    quiet.add_ready("a")
    quiet._waiting["a"] = 7
    quiet.add("b", ("a",), distinct=True)
