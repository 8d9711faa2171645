"""The pure scheduling core: no event loop anywhere in this file."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncflow.engine import _graph as g
from asyncflow.engine import _native

# Every test here runs on the Python graph (the reference) and on the
# compiled one the engine uses (asyncflow/engine/_cgraph.c), when built.
IMPLEMENTATIONS = {"python": g.Graph}
if _native.COMPILED:
    IMPLEMENTATIONS["compiled"] = _native.Graph
_graph_class: type[g.Graph] = g.Graph


@pytest.fixture(scope="module", autouse=True, params=list(IMPLEMENTATIONS))
def implementation(request: pytest.FixtureRequest) -> str:
    global _graph_class
    _graph_class = IMPLEMENTATIONS[request.param]
    return str(request.param)


def make() -> g.Graph:
    return _graph_class(validate=True)


def test_node_without_deps_is_released_at_once() -> None:
    graph = make()
    assert graph.add("a") == [(g.RELEASE, "a", None)]
    assert graph.state("a") == g.READY


def test_dependent_waits_then_is_released_when_all_deps_done() -> None:
    graph = make()
    graph.add("a")
    graph.add("b")
    assert graph.add("c", ["a", "b"]) == []
    assert graph.state("c") == g.WAITING
    assert graph.finish("a", g.DONE) == []
    assert graph.finish("b", g.DONE) == [(g.RELEASE, "c", None)]
    assert graph.state("c") == g.READY


def test_same_dependency_twice_counts_once() -> None:
    graph = make()
    graph.add("a")
    graph.add("c", ["a", "a", "a"])
    assert graph.finish("a", g.DONE) == [(g.RELEASE, "c", None)]


def test_dependency_already_done_does_not_wait() -> None:
    graph = make()
    graph.add("a")
    graph.finish("a", g.DONE)
    assert graph.add("b", ["a"]) == [(g.RELEASE, "b", None)]


def test_dependency_already_failed_dooms_node_until_its_other_deps_end() -> None:
    graph = make()
    graph.add("ok")
    graph.add("bad")
    graph.finish("bad", g.FAILED)
    assert graph.add("c", ["ok", "bad"]) == []
    assert graph.state("c") == g.WAITING
    # It never runs: when "ok" ends, "c" fails because of "bad".
    assert graph.finish("ok", g.DONE) == [(g.FAIL, "c", "bad")]
    assert graph.state("c") == g.FAILED


def test_dependency_already_failed_and_nothing_unfinished_fails_at_once() -> None:
    graph = make()
    graph.add("ok")
    graph.add("bad")
    graph.finish("ok", g.DONE)
    graph.finish("bad", g.FAILED)
    assert graph.add("c", ["ok", "bad"]) == [(g.FAIL, "c", "bad")]
    assert graph.state("c") == g.FAILED


def test_failed_dependency_waits_for_the_others_then_fails_once() -> None:
    graph = make()
    for key in ("a", "b", "c"):
        graph.add(key)
    graph.add("d", ["a", "b", "c"])
    assert graph.finish("b", g.FAILED) == []
    assert graph.state("d") == g.WAITING
    assert graph.finish("a", g.FAILED) == []
    # The first failure seen stays the cause.
    assert graph.finish("c", g.DONE) == [(g.FAIL, "d", "b")]
    assert graph.unfinished() == []


def test_doomed_node_cancelled_by_another_dependency() -> None:
    graph = make()
    graph.add("a")
    graph.add("b")
    graph.add("c", ["a", "b"])
    assert graph.finish("a", g.FAILED) == []
    assert graph.finish("b", g.CANCELLED) == [(g.CANCEL, "c", "b")]
    assert graph.state("c") == g.CANCELLED


def test_doomed_node_cancelled_directly_is_forgotten() -> None:
    graph = make()
    graph.add("a")
    graph.add("b")
    graph.add("c", ["a", "b"])
    graph.finish("a", g.FAILED)
    assert graph.finish("c", g.CANCELLED) == []
    assert graph.finish("b", g.DONE) == []
    assert graph.unfinished() == []


def test_dependency_already_cancelled_cancels_at_once() -> None:
    graph = make()
    graph.add("a")
    graph.finish("a", g.CANCELLED)
    assert graph.add("b", ["a"]) == [(g.CANCEL, "b", "a")]


def test_failure_cascades_transitively_causes_first() -> None:
    graph = make()
    graph.add("a")
    graph.add("b", ["a"])
    graph.add("c", ["b"])
    graph.add("d", ["a", "c"])
    out = graph.finish("a", g.FAILED)
    # "d" also waits for "c", so it fails after it.
    assert [(k, n) for k, n, _ in out] == [(g.FAIL, "b"), (g.FAIL, "c"), (g.FAIL, "d")]
    causes = {n: c for _, n, c in out}
    assert causes == {"b": "a", "c": "b", "d": "a"}
    assert all(graph.state(n) == g.FAILED for n in "abcd")


def test_cancel_cascades() -> None:
    graph = make()
    graph.add("a")
    graph.add("b", ["a"])
    graph.add("c", ["b"])
    out = graph.finish("a", g.CANCELLED)
    assert [(k, n) for k, n, _ in out] == [(g.CANCEL, "b"), (g.CANCEL, "c")]


def test_lifecycle_transitions_and_duplicate_final_report_ignored() -> None:
    graph = make()
    graph.add("a")
    graph.submitted("a")
    assert graph.started("a") is True
    assert graph.started("a") is False
    graph.finish("a", g.DONE)
    assert graph.finish("a", g.FAILED) == []
    assert graph.started("a") is False
    assert graph.state("a") == g.DONE


def test_validate_mode_rejects_forbidden_transition() -> None:
    graph = make()
    graph.add("a")
    graph.add("b", ["a"])
    with pytest.raises(g.InvalidTransition):
        graph.submitted("b")  # WAITING -> SUBMITTED skips READY


def test_bad_inputs() -> None:
    graph = make()
    graph.add("a")
    with pytest.raises(ValueError, match="added twice"):
        graph.add("a")
    with pytest.raises(KeyError, match="not in the graph"):
        graph.add("b", ["nope"])
    with pytest.raises(ValueError, match="terminal"):
        graph.finish("a", g.RUNNING)


def test_transition_table_is_closed() -> None:
    for src, targets in g.TRANSITIONS.items():
        assert targets <= set(g.TRANSITIONS), src
    for terminal in g.TERMINAL:
        assert g.TRANSITIONS[terminal] == frozenset()


def test_unfinished_and_counts() -> None:
    graph = make()
    graph.add("a")
    graph.add("b", ["a"])
    graph.finish("a", g.DONE)
    assert graph.unfinished() == ["b"]
    assert graph.counts() == {g.DONE: 1, g.READY: 1}


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=1, max_value=80))
def test_random_dags_always_drain(seed: int, size: int) -> None:
    """Whatever the outcomes, every node ends terminal and never runs before its deps."""
    rng = random.Random(seed)
    graph = make()
    deps: dict[int, list[int]] = {}
    ready: list[int] = []
    for node in range(size):
        deps[node] = rng.sample(range(node), k=min(node, rng.randint(0, 3)))
        ready += [k for kind, k, _ in graph.add(node, deps[node]) if kind == g.RELEASE]
    finished: dict[int, str] = {}
    while ready:
        node = ready.pop(rng.randrange(len(ready)))
        assert all(finished.get(d) == g.DONE for d in deps[node])
        graph.submitted(node)
        graph.started(node)
        outcome = rng.choice([g.DONE, g.DONE, g.DONE, g.FAILED, g.CANCELLED])
        finished[node] = outcome
        for kind, key, cause in graph.finish(node, outcome):
            if kind == g.RELEASE:
                ready.append(key)
            else:
                assert cause in deps[key] or cause in finished
                finished[key] = g.FAILED if kind == g.FAIL else g.CANCELLED
    assert graph.unfinished() == []
    assert len(finished) == size


def test_pushed_down_node_is_submitted_before_its_dependencies_end() -> None:
    graph = make()
    graph.add("a")
    graph.submitted("a")
    assert graph.add("b", ["a"]) == []
    graph.push_down("b")
    assert graph.state("b") == g.SUBMITTED and graph.is_pushed_down("b")
    graph.submitted("b")  # the engine's flush: nothing changes
    assert graph.started("b") is True
    # Its dependency's end releases nothing: it runs already.
    assert graph.finish("a", g.DONE) == []
    assert not graph.is_pushed_down("b")
    assert graph.finish("b", g.DONE) == []
    with pytest.raises(g.InvalidTransition, match="only a WAITING node"):
        graph.push_down("b")


def test_pushed_down_node_is_brought_down_by_a_failed_dependency() -> None:
    graph = make()
    graph.add("a")
    graph.add("b", ["a"])
    graph.push_down("b")
    graph.add("c", ["b"])
    graph.push_down("c")
    graph.add("d", ["c"])  # waits the usual way
    out = graph.finish("a", g.FAILED)
    assert out == [(g.FAIL, "b", "a"), (g.FAIL, "c", "b"), (g.FAIL, "d", "c")]
    assert graph.finish("b", g.FAILED) == []  # the backend's own report comes late


def test_pushed_down_node_that_ends_first_is_left_alone() -> None:
    graph = make()
    graph.add("a")
    graph.add("x")
    graph.add("b", ["a", "x"])
    graph.push_down("b")
    graph.finish("a", g.DONE)
    graph.finish("b", g.CANCELLED)  # cancelled while "x" still runs
    assert graph.finish("x", g.DONE) == []
    assert graph.counts() == {g.DONE: 2, g.CANCELLED: 1}


def test_retry_returns_a_submitted_or_running_node_to_ready_and_dependents_keep_waiting() -> None:
    graph = make()
    graph.add("a")
    graph.add("b", ["a"])
    graph.submitted("a")
    graph.retry("a")  # failed before it started
    assert graph.state("a") == g.READY
    graph.submitted("a")
    assert graph.started("a") is True
    graph.retry("a")  # failed while running
    assert graph.state("a") == g.READY and graph.state("b") == g.WAITING
    graph.submitted("a")
    graph.started("a")
    assert graph.finish("a", g.DONE) == [(g.RELEASE, "b", None)]


def test_retry_of_a_waiting_or_finished_node_is_rejected() -> None:
    graph = make()
    graph.add("a")
    graph.add("b", ["a"])
    with pytest.raises(g.InvalidTransition):
        graph.retry("b")  # WAITING: it never ran
    graph.finish("a", g.DONE)
    with pytest.raises(g.InvalidTransition):
        graph.retry("a")  # DONE is final


def test_a_pushed_down_node_is_never_retried() -> None:
    graph = make()
    graph.add("a")
    graph.add("b", ["a"])
    graph.submitted("a")
    graph.push_down("b")
    with pytest.raises(g.InvalidTransition, match="retry from SUBMITTED"):
        graph.retry("b")  # its dependency has not ended: the backend wired it


def test_distinct_dependencies_skip_the_repeat_check_and_count_the_same() -> None:
    graph = make()
    graph.add("a")
    graph.add("b")
    assert graph.add("c", ["a", "b"], distinct=True) == []
    assert graph.finish("a", g.DONE) == []
    assert graph.finish("b", g.DONE) == [(g.RELEASE, "c", None)]


def test_done_dependency_releases_only_dependents_whose_last_dependency_it_was() -> None:
    graph = make()
    for key in "abx":
        graph.add(key)
    graph.add("c", ["a"])
    graph.add("d", ["a", "b"])
    graph.add("e", ["a", "x"])
    graph.finish("x", g.FAILED)
    # c: released; d: still waits on b; e: its last dependency ended, and x
    # had failed, so it fails now (with x as the cause), on the DONE path.
    assert graph.finish("a", g.DONE) == [(g.RELEASE, "c", None), (g.FAIL, "e", "x")]
    assert graph.state("d") == g.WAITING
    assert graph.finish("b", g.DONE) == [(g.RELEASE, "d", None)]
