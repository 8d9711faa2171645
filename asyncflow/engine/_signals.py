"""SIGINT/SIGTERM/SIGHUP shut down every engine of the loop that received them.

Handlers are installed only when the loop runs in the main thread (the only
place ``loop.add_signal_handler`` works); elsewhere a warning is logged and
none is installed. One handler per loop serves all its engines, so engines
created and shut down in any order never remove each other's handler.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import weakref
from typing import Any

__all__ = ["install_signal_handlers", "remove_signal_handlers"]

logger = logging.getLogger("asyncflow")

SIGNALS = tuple(
    s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None
)

_engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.WeakSet[Any]] = (
    weakref.WeakKeyDictionary()
)


def _on_signal(loop: asyncio.AbstractEventLoop, signum: int) -> None:
    engines = list(_engines.get(loop, ()))
    logger.warning(
        "received %s: shutting down %d engine(s)", signal.Signals(signum).name, len(engines)
    )
    for engine in engines:
        loop.create_task(engine.shutdown())


def install_signal_handlers(engine: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Make the shutdown signals shut ``engine`` (running on ``loop``) down."""
    if threading.current_thread() is not threading.main_thread():
        logger.warning(
            "engine %s runs outside the main thread: no signal handlers installed; "
            "call 'await engine.shutdown()' yourself",
            engine.uid,
        )
        return
    live = _engines.get(loop)
    if live is None:
        live = _engines[loop] = weakref.WeakSet()
    if not live:
        try:
            for sig in SIGNALS:
                loop.add_signal_handler(sig, _on_signal, loop, sig)
        except (NotImplementedError, RuntimeError) as exc:  # e.g. Windows loops
            logger.warning("no signal handlers installed: %s", exc)
            return
    live.add(engine)


def remove_signal_handlers(engine: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Forget ``engine``; the last engine of ``loop`` restores the default handlers."""
    live = _engines.get(loop)
    if live is None or engine not in live:
        return
    live.discard(engine)
    if not live and not loop.is_closed():
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
