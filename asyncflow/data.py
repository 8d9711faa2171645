"""File dependencies: ``InputFile`` and ``OutputFile`` task arguments.

A task argument of either type declares a file the task reads or writes. The
engine records them in the task's ``metadata`` and, for backends that declare
``supports_explicit_data_linking``, calls ``link_explicit_data_deps`` so the
backend can stage the file (RADICAL-Pilot does; the local backend shares one
file system and needs nothing). The task receives the object itself, whose
``str()`` is the path, so ``open(infile)`` works.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

__all__ = ["InputFile", "OutputFile"]


class InputFile:
    """A file a task reads: a local path or a URL.

    Args:
        path: a path (relative paths are kept as given) or a URL such as
            ``https://host/data.csv`` or ``file:///scratch/x.h5``.

    Attributes:
        path: the path or URL as given.
        filename: the last path component, the name a backend stages it as.
    """

    __slots__ = ("filename", "path")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        text = os.fspath(path)
        if not isinstance(text, str) or not text.strip():
            raise ValueError("InputFile needs a non-empty path or URL")
        self.path = text
        parsed = urlparse(text)
        name_source = parsed.path if parsed.scheme and parsed.netloc else text
        self.filename = os.path.basename(name_source.rstrip("/")) or name_source

    @property
    def is_url(self) -> bool:
        """True when the path has a URL scheme other than ``file``."""
        scheme = urlparse(self.path).scheme
        return len(scheme) > 1 and scheme != "file"

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"InputFile({self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InputFile) and other.path == self.path

    def __hash__(self) -> int:
        return hash(("InputFile", self.path))


class OutputFile:
    """A file a task writes, by name; a later task can read it with ``InputFile``.

    Args:
        filename: the file name (or relative path) the task produces.
    """

    __slots__ = ("filename",)

    def __init__(self, filename: str | os.PathLike[str]) -> None:
        text = os.fspath(filename)
        if not isinstance(text, str) or not text.strip():
            raise ValueError("OutputFile needs a non-empty file name")
        self.filename = text

    @property
    def path(self) -> str:
        """The file name, for symmetry with :class:`InputFile`."""
        return self.filename

    def __fspath__(self) -> str:
        return self.filename

    def __str__(self) -> str:
        return self.filename

    def __repr__(self) -> str:
        return f"OutputFile({self.filename!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutputFile) and other.filename == self.filename

    def __hash__(self) -> int:
        return hash(("OutputFile", self.filename))
