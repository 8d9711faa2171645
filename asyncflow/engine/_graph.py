"""The pure, synchronous core of the scheduler: dependency bookkeeping.

No asyncio and no I/O here. The engine feeds events in (a node was added, was
submitted, started, finished) and gets instructions out (which nodes became
ready, which must fail or be cancelled because of a dependency). Keys are
opaque hashable objects; the engine uses its task futures.

States and the transitions allowed between them::

    WAITING ──> READY ──> SUBMITTED ──> RUNNING ──> DONE | FAILED | CANCELLED
       │          │   ^       │           │
       │          │   └───────┴───────────┘  retry: an attempt failed, it runs again
       ├──────────┴───────────┴──> DONE | FAILED | CANCELLED
       └──(push_down)──> SUBMITTED

A node is WAITING while a dependency is unfinished and READY once all are
done. A node *pushed down* goes from WAITING straight to SUBMITTED: its
backend runs its dependencies and wires them to it itself (a Dask cluster
chaining futures). Its unfinished dependencies are still counted, so that a
failure or cancellation brings it down like a waiting node, and their end
releases nothing. A cancelled dependency cancels every node that
transitively depends on it at once. A failed dependency dooms a waiting
dependent: it fails when its last unfinished dependency ends, so the engine
can name every dependency that failed (as the older AsyncFlow did), and the
failure travels on the same way; a pushed-down dependent, already on its
backend, fails at once. The instructions come out in an order where each
cause precedes the nodes it brings down, so errors can be chained.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Hashable, Iterable
from typing import Final

__all__ = [
    "CANCELLED",
    "DONE",
    "FAILED",
    "READY",
    "RUNNING",
    "SUBMITTED",
    "TERMINAL",
    "TRANSITIONS",
    "WAITING",
    "Graph",
    "InvalidTransition",
    "check_graph",
]

WAITING: Final = "WAITING"
READY: Final = "READY"
SUBMITTED: Final = "SUBMITTED"
RUNNING: Final = "RUNNING"
DONE: Final = "DONE"
FAILED: Final = "FAILED"
CANCELLED: Final = "CANCELLED"

TERMINAL: Final = frozenset({DONE, FAILED, CANCELLED})

TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    WAITING: frozenset({READY, FAILED, CANCELLED}),  # and push_down() to SUBMITTED
    READY: frozenset({SUBMITTED, RUNNING, DONE, FAILED, CANCELLED}),
    SUBMITTED: frozenset({READY, RUNNING, DONE, FAILED, CANCELLED}),
    RUNNING: frozenset({READY, DONE, FAILED, CANCELLED}),
    DONE: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}

# Instruction kinds returned by ``add`` and ``finish``.
RELEASE: Final = "release"  # node is READY: submit it
FAIL: Final = "fail"  # node FAILED because ``cause`` failed
CANCEL: Final = "cancel"  # node CANCELLED because ``cause`` was cancelled

Instruction = tuple[str, Hashable, Hashable]

_NOT_DOOMED: Final = object()


class InvalidTransition(RuntimeError):
    """A state change the transition table forbids (raised in validate mode)."""


class Graph:
    """Dependency bookkeeping for one engine: the reference implementation.

    The engine uses the compiled one (``_cgraph.c``, the same algorithm on
    the same dicts, see ``_native``) when it was built; this one otherwise.

    Four dicts, no object per node: the state of every node, the count of
    unfinished dependencies of each WAITING node, the dependents of each
    node that has unfinished ones, and the first failed dependency of each
    waiting node that is doomed. An independent task costs one dict entry.

    Args:
        validate: check every transition against :data:`TRANSITIONS`, and
            the counters against the edges after a call (for tests; the full
            check is O(nodes), so on large graphs it runs after every
            ``len(graph) // 256``-th call, keeping its total cost linear).
    """

    def __init__(self, *, validate: bool = False) -> None:
        self._state: dict[Hashable, str] = {}
        self._waiting: dict[Hashable, int] = {}
        self._dependents: dict[Hashable, list[Hashable]] = {}
        self._doomed: dict[Hashable, Hashable] = {}  # waiting node -> first failed dependency
        self._validate = validate
        self._calls_unchecked = 0

    # ------------------------------------------------------------------ queries
    def __contains__(self, key: Hashable) -> bool:
        return key in self._state

    def __len__(self) -> int:
        return len(self._state)

    def state(self, key: Hashable) -> str:
        """The state of ``key``; ``KeyError`` if it was never added."""
        return self._state[key]

    def unfinished(self) -> list[Hashable]:
        """Keys of nodes not yet in a terminal state, in insertion order."""
        return [k for k, st in self._state.items() if st not in TERMINAL]

    def counts(self) -> dict[str, int]:
        """Number of nodes per state."""
        return dict(Counter(self._state.values()))

    def dependents(self, key: Hashable) -> list[Hashable]:
        """Nodes still waiting on ``key`` (a copy)."""
        return list(self._dependents.get(key, ()))

    # ------------------------------------------------------------------ events
    def add_ready(self, key: Hashable) -> None:
        """Add a node without dependencies: it is READY at once."""
        if key in self._state:
            raise ValueError(f"node {key!r} added twice")
        self._state[key] = READY

    def add(
        self, key: Hashable, deps: Iterable[Hashable] = (), *, distinct: bool = False
    ) -> list[Instruction]:
        """Add a node that depends on ``deps`` (each already added).

        Returns ``[(RELEASE, key, None)]`` when it is ready at once, one
        CANCEL instruction when a dependency was already cancelled, one FAIL
        instruction when a dependency already failed and none is unfinished,
        and ``[]`` when it must wait (doomed, if a dependency already failed).
        ``distinct=True`` says ``deps`` names each dependency once (no check
        for repeats).
        """
        states = self._state
        if key in states:
            raise ValueError(f"node {key!r} added twice")
        if not distinct:
            deps = dict.fromkeys(deps)  # each dependency once, in order
        elif type(deps) is tuple and deps:
            # Every dependency unfinished (a chain's link, a fan-out's
            # branch, a layer of a DAG): straight to WAITING, without the
            # general bookkeeping.
            if len(deps) == 1:
                dep = deps[0]
                if states.get(dep, DONE) not in TERMINAL:
                    edges = self._dependents.get(dep)
                    if edges is None:
                        self._dependents[dep] = [key]
                    else:
                        edges.append(key)
                    states[key] = WAITING
                    self._waiting[key] = 1
                    if self._validate:
                        self._check()
                    return []
            get = states.get
            for dep in deps:
                if get(dep, DONE) in TERMINAL:  # ended, or unknown: see below
                    break
            else:
                dependents = self._dependents
                for dep in deps:
                    edges = dependents.get(dep)
                    if edges is None:
                        dependents[dep] = [key]
                    else:
                        edges.append(key)
                states[key] = WAITING
                self._waiting[key] = len(deps)
                if self._validate:
                    self._check()
                return []
        # First look, then link: a cancelled dependency leaves no edge behind.
        unfinished: list[Hashable] = []
        failed: Hashable = _NOT_DOOMED
        for dep in deps:
            dep_state = states.get(dep)
            if dep_state is None:
                raise KeyError(f"dependency {dep!r} of {key!r} is not in the graph")
            if dep_state == DONE:
                continue
            if dep_state == FAILED:
                if failed is _NOT_DOOMED:
                    failed = dep
                continue
            if dep_state == CANCELLED:
                states[key] = CANCELLED
                self._check()
                return [(CANCEL, key, dep)]
            unfinished.append(dep)
        if not unfinished:
            if failed is not _NOT_DOOMED:
                states[key] = FAILED
                self._check()
                return [(FAIL, key, failed)]
            states[key] = READY
            self._check()
            return [(RELEASE, key, None)]
        dependents = self._dependents
        for dep in unfinished:
            edges = dependents.get(dep)
            if edges is None:
                dependents[dep] = [key]
            else:
                edges.append(key)
        states[key] = WAITING
        self._waiting[key] = len(unfinished)
        if failed is not _NOT_DOOMED:
            self._doomed[key] = failed
        if self._validate:
            self._check()
        return []

    def submitted(self, key: Hashable) -> None:
        """The engine handed the node to a backend."""
        state = self._state[key]
        if state != SUBMITTED:  # a pushed-down node is submitted already
            if self._validate and SUBMITTED not in TRANSITIONS[state]:
                raise InvalidTransition(f"{key!r}: {state} -> {SUBMITTED}")
            self._state[key] = SUBMITTED

    def push_down(self, key: Hashable) -> None:
        """Submit a WAITING node before its dependencies end (see the module doc)."""
        if self._state[key] != WAITING:
            raise InvalidTransition(f"{key!r}: only a WAITING node is pushed down")
        self._state[key] = SUBMITTED
        self._check()

    def is_pushed_down(self, key: Hashable) -> bool:
        """True for a submitted node whose dependencies have not all ended."""
        return key in self._waiting and self._state[key] != WAITING

    def started(self, key: Hashable) -> bool:
        """The backend reports the node running. False if it already ended."""
        st = self._state[key]
        if st in TERMINAL or st == RUNNING:
            return False
        self._move(key, RUNNING)
        return True

    def retry(self, key: Hashable) -> None:
        """An attempt of the submitted node failed and it will be submitted again.

        It is READY again; its dependents keep waiting. Only a SUBMITTED or
        RUNNING node whose dependencies all ended (never a pushed-down one)
        can be retried (:class:`InvalidTransition` otherwise).
        """
        state = self._state[key]
        if (state != SUBMITTED and state != RUNNING) or key in self._waiting:
            raise InvalidTransition(
                f"{key!r}: retry from {state} (only a submitted node runs again)"
            )
        self._move(key, READY)

    def finish(self, key: Hashable, state: str) -> list[Instruction]:
        """The node ended in ``state`` (DONE, FAILED or CANCELLED).

        Returns the instructions for its dependents: RELEASE for those now
        ready, FAIL/CANCEL (with their cause) for everything brought down,
        transitively, causes first. A failure brings a waiting dependent down
        once its last unfinished dependency ended (a pushed-down one at
        once); a cancellation at once. A second report for a node that
        already ended is ignored and returns ``[]``.
        """
        if state not in TERMINAL:
            raise ValueError(f"finish() needs a terminal state, not {state!r}")
        states = self._state
        current = states[key]
        if current in TERMINAL:
            return []
        if self._validate and state not in TRANSITIONS[current]:
            raise InvalidTransition(f"{key!r}: {current} -> {state}")
        states[key] = state
        if key in self._waiting:
            del self._waiting[key]
            self._doomed.pop(key, None)
        below = self._dependents.pop(key, None)
        if not below:
            return []
        if state == DONE:  # the common case, without the queue a failure needs
            out: list[Instruction] = []
            waiting, doomed = self._waiting, self._doomed
            for dep_key in below:
                left = waiting.get(dep_key)
                if left is None:  # it ended already
                    continue
                if left > 1:
                    waiting[dep_key] = left - 1
                elif doomed and dep_key in doomed:  # its last dependency: it fails now
                    out.extend(self._count_down(key, DONE, [dep_key]))
                else:
                    del waiting[dep_key]
                    if states[dep_key] == WAITING:  # else pushed down: submitted already
                        states[dep_key] = READY
                        out.append((RELEASE, dep_key, None))
        elif state == CANCELLED:
            out = self._cancel_below(key, below)
        else:
            out = self._count_down(key, state, below)
        if self._validate:
            self._check()
        return out

    def _count_down(self, key: Hashable, state: str, below: list[Hashable]) -> list[Instruction]:
        """``key`` ended DONE or FAILED: one dependency less for each of ``below``."""
        out: list[Instruction] = []
        states, waiting, doomed = self._state, self._waiting, self._doomed
        queue: deque[tuple[Hashable, Hashable, str]] = deque((d, key, state) for d in below)
        while queue:
            dep_key, cause, cause_state = queue.popleft()
            if dep_key not in waiting:  # it ended already
                continue
            if cause_state == FAILED:
                if states[dep_key] != WAITING:  # pushed down: on its backend already
                    self._fail(dep_key, cause, out, queue)
                    continue
                doomed.setdefault(dep_key, cause)
            left = waiting[dep_key] - 1
            if left:
                waiting[dep_key] = left
                continue
            first_failed = doomed.pop(dep_key, _NOT_DOOMED)
            if first_failed is not _NOT_DOOMED:
                self._fail(dep_key, first_failed, out, queue)
                continue
            del waiting[dep_key]
            if states[dep_key] == WAITING:  # else pushed down: submitted already
                states[dep_key] = READY
                out.append((RELEASE, dep_key, None))
        return out

    def _fail(
        self,
        key: Hashable,
        cause: Hashable,
        out: list[Instruction],
        queue: deque[tuple[Hashable, Hashable, str]],
    ) -> None:
        """``key`` fails because of ``cause``; its dependents count it as failed."""
        self._state[key] = FAILED
        del self._waiting[key]
        self._doomed.pop(key, None)
        out.append((FAIL, key, cause))
        more = self._dependents.pop(key, None)
        if more:
            queue.extend((b, key, FAILED) for b in more)

    def _cancel_below(self, key: Hashable, below: list[Hashable]) -> list[Instruction]:
        """``key`` was cancelled: everything waiting on it, transitively, is too."""
        out: list[Instruction] = []
        states, waiting, dependents = self._state, self._waiting, self._dependents
        queue: deque[tuple[Hashable, Hashable]] = deque((d, key) for d in below)
        while queue:
            dep_key, cause = queue.popleft()
            if dep_key not in waiting:  # it ended already
                continue
            states[dep_key] = CANCELLED
            del waiting[dep_key]
            self._doomed.pop(dep_key, None)
            out.append((CANCEL, dep_key, cause))
            more = dependents.pop(dep_key, None)
            if more:
                queue.extend((b, dep_key) for b in more)
        return out

    # ------------------------------------------------------------------ internals
    def _move(self, key: Hashable, new: str) -> None:
        if self._validate and new not in TRANSITIONS[self._state[key]]:
            raise InvalidTransition(f"{key!r}: {self._state[key]} -> {new}")
        self._state[key] = new

    @property
    def validating(self) -> bool:
        """True in validate mode."""
        return self._validate

    def _check(self) -> None:
        if not self._validate:
            return
        self._calls_unchecked += 1
        if self._calls_unchecked <= len(self._state) >> 8:
            return
        self._calls_unchecked = 0
        check_graph(self._state, self._waiting, self._dependents, self._doomed)


def check_graph(
    state: dict[Hashable, str],
    waiting: dict[Hashable, int],
    dependents: dict[Hashable, list[Hashable]],
    doomed: dict[Hashable, Hashable],
) -> None:
    """Validate mode's full check of a graph's four dicts (both implementations).

    Raises :class:`InvalidTransition` when the counters disagree with the edges.
    """
    pending_edges: dict[Hashable, int] = {}
    for src, lst in dependents.items():
        if state[src] in TERMINAL:
            raise InvalidTransition(f"{src!r} ended but still lists dependents")
        for dep in lst:
            if dep in waiting:
                pending_edges[dep] = pending_edges.get(dep, 0) + 1
    for key, st in state.items():
        if st == WAITING and key not in waiting:
            raise InvalidTransition(f"{key!r} is WAITING on nothing")
    for key, count in waiting.items():
        st = state[key]
        if st not in (WAITING, SUBMITTED, RUNNING):
            raise InvalidTransition(f"{key!r} is {st} but still counted as waiting")
        if count <= 0 or count != pending_edges.get(key, 0):
            raise InvalidTransition(
                f"{key!r} waits on {count} but has "
                f"{pending_edges.get(key, 0)} unfinished dependencies"
            )
    for key in doomed:
        if key not in waiting:
            raise InvalidTransition(f"{key!r} is {state[key]} but still doomed")
