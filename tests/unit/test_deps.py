"""Dependency discovery and substitution (no event loop needed)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, namedtuple
from typing import Any

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
