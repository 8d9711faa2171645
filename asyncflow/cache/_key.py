"""Cache keys: the task's name, a hash of its code, a hash of its resolved arguments.

The argument hash is deterministic across processes and runs: numbers,
strings, bytes, ``None`` and booleans are hashed by value, lists, tuples,
dicts and sets by their items (dicts and sets in a sorted order, so neither
insertion order nor hash randomisation matters), an ``InputFile`` by the
SHA-256 of the file's contents (a URL by its text), an ``OutputFile`` by its
name. Any other object is hashed by its ``pickle``; one that cannot be
pickled makes the task uncacheable (:class:`Uncacheable`): the engine then
runs it without the cache and warns once per task name.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
from collections.abc import Callable
from pathlib import PurePath
from types import CodeType
from typing import Any

from ..data import InputFile, OutputFile

__all__ = ["Uncacheable", "code_digest", "file_digest", "task_key"]

# (path, size, mtime_ns, inode) -> digest: a file is read again only when it changed.
_FILE_DIGESTS: dict[tuple[str, int, int, int], bytes] = {}
_FILE_DIGESTS_MAX = 4096


class Uncacheable(ValueError):
    """A task's arguments or code cannot be hashed (the task runs uncached)."""


def file_digest(path: str) -> bytes:
    """SHA-256 of a file's contents (remembered while its size and mtime stay).

    Raises:
        Uncacheable: the file cannot be read.
    """
    try:
        st = os.stat(path)
        memo_key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)
        known = _FILE_DIGESTS.get(memo_key)
        if known is not None:
            return known
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise Uncacheable(f"input file {path!r} cannot be read for its hash: {exc}") from None
    digest = h.digest()
    if len(_FILE_DIGESTS) >= _FILE_DIGESTS_MAX:
        _FILE_DIGESTS.clear()
    _FILE_DIGESTS[memo_key] = digest
    return digest


def _length(h: Any, tag: bytes, n: int) -> None:
    h.update(tag + str(n).encode() + b":")


def _feed(h: Any, value: Any) -> None:
    """Feed ``value``'s canonical encoding into the hash ``h``."""
    t = type(value)
    if value is None:
        h.update(b"N")
    elif t is bool:
        h.update(b"T" if value else b"F")
    elif t is int:
        h.update(b"i" + str(value).encode() + b";")
    elif t is float:
        h.update(b"f" + value.hex().encode() + b";")
    elif t is str:
        data = value.encode("utf-8", "surrogatepass")
        _length(h, b"s", len(data))
        h.update(data)
    elif t is bytes or t is bytearray:
        _length(h, b"b", len(value))
        h.update(value)
    elif t is list or t is tuple:
        _length(h, b"l" if t is list else b"t", len(value))
        for item in value:
            _feed(h, item)
    elif t is dict:
        items = sorted((_digest(k), v) for k, v in value.items())
        _length(h, b"d", len(items))
        for key_digest, item in items:
            h.update(key_digest)
            _feed(h, item)
    elif t is set or t is frozenset:
        digests = sorted(_digest(item) for item in value)
        _length(h, b"e", len(digests))
        for d in digests:
            h.update(d)
    elif isinstance(value, InputFile):
        h.update(b"I")
        if value.is_url:
            _feed(h, value.path)
        else:
            h.update(file_digest(value.path))
    elif isinstance(value, OutputFile):
        h.update(b"O")
        _feed(h, value.filename)
    elif isinstance(value, PurePath):
        h.update(b"p")
        _feed(h, str(value))
    else:
        try:
            data = pickle.dumps(value, protocol=5)
        except Exception as exc:  # noqa: BLE001 - any pickling failure means "cannot hash"
            raise Uncacheable(
                f"an argument of type {t.__qualname__} can be neither hashed by value "
                f"nor pickled ({exc})"
            ) from None
        _feed(h, f"{t.__module__}.{t.__qualname__}")
        _length(h, b"P", len(data))
        h.update(data)


def _digest(value: Any) -> bytes:
    h = hashlib.sha256()
    _feed(h, value)
    return h.digest()


def _code(h: Any, code: CodeType) -> None:
    h.update(code.co_code)
    _feed(h, code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            h.update(b"C")
            _code(h, const)
        else:
            _feed(h, const)


@functools.lru_cache(maxsize=4096)
def code_digest(func: Callable[..., Any]) -> bytes:
    """A hash of a function's code: bytecode, constants, names, defaults.

    Remembered per function object (a task's function is hashed once).

    Closures and globals are not part of it (as in Parsl and Prefect): a
    task whose result depends on them must take them as arguments.

    Raises:
        Uncacheable: a default value cannot be hashed.
    """
    h = hashlib.sha256()
    code = getattr(func, "__code__", None)
    if isinstance(code, CodeType):
        _code(h, code)
    else:
        _feed(h, f"{type(func).__module__}.{getattr(func, '__qualname__', repr(func))}")
    _feed(h, getattr(func, "__defaults__", None))
    _feed(h, getattr(func, "__kwdefaults__", None))
    return h.digest()


def task_key(name: str, code: bytes, args: Any, kwargs: Any) -> str:
    """The cache key of one task call: hex SHA-256 of name, code hash and arguments.

    Raises:
        Uncacheable: an argument cannot be hashed.
    """
    h = hashlib.sha256()
    _feed(h, name)
    h.update(code)
    try:
        _feed(h, tuple(args) if args else ())
        _feed(h, dict(kwargs) if kwargs else {})
    except RecursionError:
        raise Uncacheable("the arguments are nested too deeply (or contain themselves)") from None
    return h.hexdigest()
