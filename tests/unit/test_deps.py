"""Dependency discovery and substitution (no event loop needed)."""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict, namedtuple
from typing import Any

import pytest

from asyncflow.data import InputFile, OutputFile
from asyncflow.engine._deps import Found, find_dependencies, substitute


class FakeFuture:
    """Looks like an asyncio future to ``asyncio.isfuture`` (no loop needed)."""

    _asyncio_future_blocking = False

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


def found_in(*objs: Any) -> Found:
    found = Found()
    for obj in objs:
        find_dependencies(obj, found)
    return found


def test_futures_found_in_nested_containers_in_order_once() -> None:
    a, b, c, d = (FakeFuture(i) for i in range(4))
    found = found_in([a, (b, {"k": [c]})], {d}, a, frozenset([b]))
    assert found.futures == [a, b, c, d]
    assert asyncio.isfuture(a)


def test_files_are_collected() -> None:
    inp, out = InputFile("/data/in.csv"), OutputFile("out.h5")
    found = found_in([inp], {"o": out})
    assert found.input_files == [inp]
    assert found.output_files == [out]
    assert found.futures == []


def test_substitute_keeps_container_types() -> None:
    Point = namedtuple("Point", "x y")
    a, b = FakeFuture(1), FakeFuture(2)
    data = {
        "list": [a, 3],
        "tuple": (b,),
        "named": Point(a, b),
        "set": {a},
        "od": OrderedDict(z=b),
        "plain": "text",
    }
    out = substitute(data)
    assert out == {
        "list": [1, 3],
        "tuple": (2,),
        "named": Point(1, 2),
        "set": {1},
        "od": OrderedDict(z=2),
        "plain": "text",
    }
    assert type(out["named"]) is Point
    assert type(out["od"]) is OrderedDict


def test_new_container_type_needs_only_a_register() -> None:
    class Bag:
        def __init__(self, *items: Any) -> None:
            self.items = items

    @find_dependencies.register(Bag)
    def _(obj: Bag, found: Found) -> None:
        for item in obj.items:
            find_dependencies(item, found)

    a = FakeFuture(1)
    assert found_in(Bag(a, 5)).futures == [a]


def test_containers_without_futures_are_passed_as_they_are() -> None:
    # The same object, as when the task has no dependency at all: a list the
    # task appends to is the caller's list, and types that cannot be rebuilt
    # from their items (struct sequences, tuple subclasses) arrive intact.
    class Pair(tuple):  # type: ignore[type-arg]
        pass

    class Tags(list):  # type: ignore[type-arg]
        pass

    sink: list[int] = []
    stamp = time.gmtime(0)
    pair, tags, table = Pair((1, 2)), Tags(["a"]), {"k": [1]}
    args = (FakeFuture(7), sink, stamp, pair, tags, table, os.stat("."))
    out = substitute(args)
    assert out[0] == 7
    for given, got in zip(args[1:], out[1:], strict=True):
        assert got is given


def test_subclasses_holding_futures_keep_their_type() -> None:
    class Pair(tuple):  # type: ignore[type-arg]
        pass

    class Tags(list):  # type: ignore[type-arg]
        pass

    pair = substitute(Pair((FakeFuture(1), 2)))
    tags = substitute(Tags([FakeFuture("a")]))
    assert (type(pair), pair) == (Pair, (1, 2))
    assert (type(tags), tags) == (Tags, ["a"])


def test_a_container_that_cannot_be_rebuilt_names_itself() -> None:
    class Fixed(tuple):  # type: ignore[type-arg]
        def __new__(cls, a: Any, b: Any) -> Fixed:
            return super().__new__(cls, (a, b))

    with pytest.raises(TypeError, match=r"cannot rebuild a .*Fixed"):
        substitute(Fixed(FakeFuture(1), 2))
