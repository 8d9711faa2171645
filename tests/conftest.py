"""Suite-wide settings: asyncio debug mode on for every loop the tests create,
and no session directory left in the checkout."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Read by asyncio whenever a loop is created: slow callbacks are logged and
# non-thread-safe calls from foreign threads raise.
os.environ.setdefault("PYTHONASYNCIODEBUG", "1")

_CHECKOUT = Path(__file__).resolve().parents[1]


def _session_directories() -> set[Path]:
    return {*_CHECKOUT.glob("asyncflow.session.*"), *Path.cwd().glob("asyncflow.session.*")}


@pytest.fixture(scope="session", autouse=True)
def _no_session_directory_left_behind() -> Iterator[None]:
    """An engine made without ``work_dir`` makes its session directory in the
    current directory: a test's engines work in the test's own directory,
    never in the checkout (the suite fails at its end if one did)."""
    before = _session_directories()
    yield
    left = sorted(p.name for p in _session_directories() - before)
    assert not left, f"tests left session directories in the checkout: {left}"
