"""Which live engine each backend object serves: one at a time.

A backend keeps one callback (``register_callback`` replaces the last), and
every engine numbers its tasks from ``task.000001``: two engines on one
backend object would take each other's reports (one engine's task hangs,
the other's gets its result). So a backend object serves one engine at a
time. An engine claims its backends when it is created and hands them on
when it has shut down; with ``shutdown(skip_execution_backend=True)`` a task
it cancelled may still be running on a backend (a thread in plain code
cannot be interrupted), and that backend is handed on only once the last
such task has reported its end, so its late report cannot reach the next
engine's task of the same uid.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any

from ..backends._base import FINAL_STATES, Backend
from ._reports import report_uid

__all__ = ["claim", "hand_on", "release"]

# By id(backend): the engine holds its backends, so while an entry's engine
# lives, no other object has that id. An engine collected without a
# shutdown frees its backends with it.
_serving: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
_left: dict[int, set[str]] = {}  # the uids a backend still runs for a shut-down engine
_lock = threading.Lock()  # engines may be created on several threads' loops


def claim(engine: Any, backends: list[Backend]) -> None:
    """Mark ``backends`` as serving ``engine``.

    Raises:
        ValueError: one serves another engine still; nothing is claimed then.
    """
    with _lock:
        for be in backends:
            other = _serving.get(id(be))
            if other is not None and other is not engine:
                raise ValueError(_in_use(be, other))
        for be in backends:
            _serving[id(be)] = engine
            _left.pop(id(be), None)  # of an engine collected meanwhile: its backend is gone


def release(engine: Any, backends: list[Backend]) -> None:
    """``engine`` is done with ``backends``: another engine may take them."""
    with _lock:
        for be in backends:
            if _serving.get(id(be)) is engine:
                del _serving[id(be)]
                _left.pop(id(be), None)


def hand_on(
    engine: Any,
    backends: Mapping[str, Backend],
    running: Mapping[str, set[str]],
    reports: list[Any],
) -> None:
    """``engine`` has shut down: free its ``backends`` for another engine.

    A backend named in ``running`` may still run those tasks of the engine
    (by uid): it is freed once it has reported the end of each. Their
    reports now go to a callback that only counts them down. ``reports``
    are ``(task, state)`` pairs that reached the engine's own callback after
    it stopped handling them.
    """
    for name, backend in backends.items():
        left = running.get(name)
        if left:
            _count_down(engine, backend, set(left), reports)
        else:
            release(engine, [backend])


def _count_down(engine: Any, backend: Backend, uids: set[str], reports: list[Any]) -> None:
    key = id(backend)
    with _lock:
        if _serving.get(key) is not engine:
            return
        _left[key] = uids

    def counted(task: Any, state: str) -> None:
        if state not in FINAL_STATES:
            return
        uid = report_uid(task)
        with _lock:
            if uid is not None:
                uids.discard(uid)
            if not uids and _serving.get(key) is engine:
                del _serving[key]
                _left.pop(key, None)

    # ``counted`` keeps the engine alive (and so its claim) for as long as
    # the backend holds it.
    backend.register_callback(counted)
    for task, state in reports:
        counted(task, state)


def _in_use(backend: Backend, other: Any) -> str:
    left = _left.get(id(backend))
    if left:
        why = (
            f"engine {other.uid!r} shut down with skip_execution_backend=True while "
            f"{len(left)} of its tasks ran there ({', '.join(sorted(left)[:3])}"
            f"{', ...' if len(left) > 3 else ''}), cancelled but not stopped: the backend "
            "serves another engine once they have ended (await tasks before such a shutdown)"
        )
    elif getattr(other, "_closed", False):
        why = (
            f"it serves engine {other.uid!r}, which is shutting down: await its "
            "shutdown() first (with skip_execution_backend=True to keep the backend running)"
        )
    else:
        why = (
            f"it serves engine {other.uid!r}, which has not shut down: give this engine "
            "a backend of its own, or first shut that engine down "
            "(with skip_execution_backend=True to keep the backend running)"
        )
    return (
        f"backend {backend.name!r} ({type(backend).__name__}) cannot serve two engines "
        f"at once (it has one callback, and both engines number their tasks from "
        f"task.000001): {why}"
    )
