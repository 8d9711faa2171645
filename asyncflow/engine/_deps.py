"""Dependency discovery in task arguments.

Futures and ``InputFile``/``OutputFile`` objects are found anywhere in the
arguments: positional, keyword, and nested in lists, tuples (named tuples
too), sets and dict values. Discovery and substitution are
``functools.singledispatch`` functions, so supporting another container is a
``register`` call, not a change to the engine::

    @find_dependencies.register(MyBag)
    def _(obj, found):
        for item in obj.items:
            find_dependencies(item, found)

No asyncio loop is needed here: futures are recognised with
``asyncio.isfuture``, which only looks at attributes.
"""

from __future__ import annotations

import asyncio
from functools import singledispatch
from typing import Any

from ..data import InputFile, OutputFile
from ._future import TaskFuture

__all__ = ["Found", "find_dependencies", "substitute"]

# Types that can hold nothing: skipped without a dispatch.
ATOMIC: frozenset[type] = frozenset({int, float, str, bytes, bool, type(None), complex})


class Found:
    """What discovery collected: futures (deduplicated, in order) and files."""

    __slots__ = ("_seen", "futures", "input_files", "output_files")

    def __init__(self) -> None:
        self.futures: list[Any] = []
        self._seen: set[int] = set()
        self.input_files: list[InputFile] = []
        self.output_files: list[OutputFile] = []

    def add_future(self, fut: Any) -> None:
        key = id(fut)
        if key not in self._seen:
            self._seen.add(key)
            self.futures.append(fut)


@singledispatch
def find_dependencies(obj: object, found: Found) -> None:
    """Record the futures and files inside ``obj`` into ``found``."""
    if asyncio.isfuture(obj):
        found.add_future(obj)


@find_dependencies.register(list)
@find_dependencies.register(tuple)
@find_dependencies.register(set)
@find_dependencies.register(frozenset)
def _find_in_iterable(obj: list[Any] | tuple[Any, ...] | set[Any], found: Found) -> None:
    for item in obj:
        kind = type(item)
        if kind is TaskFuture:  # the common case, without a dispatch
            found.add_future(item)
        elif kind not in ATOMIC:
            find_dependencies(item, found)


@find_dependencies.register(dict)
def _find_in_dict(obj: dict[Any, Any], found: Found) -> None:
    _find_in_iterable(obj.values(), found)  # type: ignore[arg-type]


@find_dependencies.register(InputFile)
def _find_input(obj: InputFile, found: Found) -> None:
    found.input_files.append(obj)


@find_dependencies.register(OutputFile)
def _find_output(obj: OutputFile, found: Found) -> None:
    found.output_files.append(obj)


@singledispatch
def substitute(obj: Any) -> Any:
    """Return ``obj`` with every (finished) future replaced by its result.

    A container holding no future is returned as it is (the same object, so
    in-place changes by the task are seen by the caller, as without any
    dependency); one holding futures is rebuilt as the same type.
    """
    if asyncio.isfuture(obj):
        return obj.result()
    return obj


def _value(item: Any) -> Any:
    kind = type(item)
    if kind is TaskFuture:
        return item.result()
    return item if kind in ATOMIC else substitute(item)


def _changed(items: Any) -> list[Any] | None:
    """The substituted items, or None when every one is unchanged."""
    out = [_value(item) for item in items]
    for new, old in zip(out, items, strict=True):
        if new is not old:
            return out
    return None


def _rebuild(obj: Any, items: list[Any]) -> Any:
    try:
        return type(obj)(items)
    except Exception as exc:
        raise TypeError(
            f"cannot rebuild a {type(obj).__qualname__} with its futures replaced by their "
            f"results ({exc}); pass the futures in a plain list, tuple, set or dict"
        ) from exc


@substitute.register(list)
def _sub_list(obj: list[Any]) -> list[Any]:
    items = _changed(obj)
    if items is None:
        return obj
    return items if type(obj) is list else _rebuild(obj, items)


@substitute.register(tuple)
def _sub_tuple(obj: tuple[Any, ...]) -> tuple[Any, ...]:
    if type(obj) is tuple:  # immutable: a new one is as good (and the common case)
        return tuple([_value(item) for item in obj])
    items = _changed(obj)
    if items is None:
        return obj
    make = getattr(obj, "_make", None)
    if make is not None:  # a named tuple takes its fields positionally
        return make(items)  # type: ignore[no-any-return]
    return _rebuild(obj, items)  # type: ignore[no-any-return]


@substitute.register(set)
@substitute.register(frozenset)
def _sub_set(obj: set[Any] | frozenset[Any]) -> set[Any] | frozenset[Any]:
    listed = list(obj)
    items = _changed(listed)
    if items is None:
        return obj
    if type(obj) is set:
        return set(items)
    if type(obj) is frozenset:
        return frozenset(items)
    return _rebuild(obj, items)  # type: ignore[no-any-return]


@substitute.register(dict)
def _sub_dict(obj: dict[Any, Any]) -> dict[Any, Any]:
    values = list(obj.values())
    items = _changed(values)
    if items is None:
        return obj
    out = dict(zip(obj.keys(), items, strict=True))
    if type(obj) is dict:
        return out
    clone = obj.copy()  # keep OrderedDict / defaultdict behaviour
    clone.update(out)
    return clone
