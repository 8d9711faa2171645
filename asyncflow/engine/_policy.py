"""What a task asks for beyond running once: retries, a timeout, the result cache.

A :class:`TaskPolicy` is fixed by the decorator's options and may be
overridden per call (``retries=``, ``retry_delay=``, ``retry_on=``,
``timeout=``, ``cache=``). Tasks that ask for none of it carry no policy at
all, so the engine's hot path pays one ``is None`` test.

Pure: no asyncio, no I/O (the delay's randomness is passed in).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from ..errors import DependencyFailureError, TaskTimeoutError

__all__ = ["POLICY_KWARGS", "Backoff", "RunState", "TaskPolicy", "policy_from"]

# Call keyword arguments that set a task's policy (never passed to the function).
POLICY_KWARGS: Final = frozenset({"retries", "retry_delay", "retry_on", "timeout", "cache"})


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number of seconds >= 0, not {value!r}")
    return float(value)


class Backoff:
    """Exponential retry delay with jitter and a cap.

    The delay before retry ``k`` (1 for the first) is
    ``min(cap, base * factor ** (k - 1))``, shortened by a random fraction of
    up to ``jitter`` of itself (so many tasks failing together do not retry
    in lockstep).

    Args:
        base: seconds before the first retry.
        factor: growth per retry (>= 1).
        cap: the longest delay, in seconds.
        jitter: the largest fraction taken off at random (0 to 1).
    """

    __slots__ = ("base", "cap", "factor", "jitter")

    def __init__(
        self, base: float, *, factor: float = 2.0, cap: float = 60.0, jitter: float = 0.5
    ) -> None:
        self.base = _number(base, "Backoff base")
        self.factor = _number(factor, "Backoff factor")
        self.cap = _number(cap, "Backoff cap")
        self.jitter = _number(jitter, "Backoff jitter")
        if self.factor < 1:
            raise ValueError(f"Backoff factor must be at least 1, not {factor!r}")
        if self.jitter > 1:
            raise ValueError(f"Backoff jitter must be between 0 and 1, not {jitter!r}")

    def delay(self, retry: int, rand: float) -> float:
        """Seconds to wait before retry number ``retry`` (1-based); ``rand`` in [0, 1)."""
        exponent = max(0, retry - 1)
        try:
            raw = self.base * self.factor**exponent
        except OverflowError:
            raw = self.cap
        full = min(self.cap, raw)
        return full * (1.0 - self.jitter * rand)

    def __repr__(self) -> str:
        return (
            f"Backoff({self.base!r}, factor={self.factor!r}, cap={self.cap!r}, "
            f"jitter={self.jitter!r})"
        )


_NO_DELAY = Backoff(0.0)


def _retry_on(value: Any) -> tuple[type[BaseException], ...]:
    types = value if isinstance(value, tuple) else (value,)
    if not types:
        raise ValueError("retry_on needs at least one exception type")
    for t in types:
        if not (isinstance(t, type) and issubclass(t, Exception)):
            raise TypeError(
                f"retry_on takes Exception subclasses (or a tuple of them), not {t!r}; "
                "a cancellation is never retried"
            )
    return types


class TaskPolicy:
    """Retries, timeout and caching of one task (immutable, shared by calls).

    Attributes:
        retries: how many times a failed attempt is tried again.
        backoff: the delay between attempts.
        retry_on: the exception types that are retried.
        timeout: seconds from the task's start, or None.
        cache: True/False per task; None follows the engine's default.
    """

    __slots__ = ("backoff", "cache", "retries", "retry_on", "retry_timeouts", "timeout")

    def __init__(
        self,
        retries: int = 0,
        backoff: Backoff = _NO_DELAY,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
        cache: bool | None = None,
    ) -> None:
        self.retries = retries
        self.backoff = backoff
        self.retry_on = retry_on
        self.timeout = timeout
        self.cache = cache
        # A timeout is retried only when asked by name (TimeoutError or a subclass).
        self.retry_timeouts = any(issubclass(t, TimeoutError) for t in retry_on)

    def should_retry(self, error: BaseException, attempts: int) -> bool:
        """Whether a task that failed with ``error`` after ``attempts`` attempts runs again.

        Never a cancellation or a dependency failure; a timeout only when
        ``retry_on`` names ``TimeoutError`` (or ``TaskTimeoutError``).
        """
        if attempts > self.retries or not isinstance(error, Exception):
            return False
        if isinstance(error, DependencyFailureError):
            return False
        if isinstance(error, TaskTimeoutError):
            return self.retry_timeouts
        return isinstance(error, self.retry_on)

    def uses_cache(self, engine_default: bool) -> bool:
        """Whether results are cached, given the engine's default."""
        return engine_default if self.cache is None else self.cache

    def with_options(self, options: Mapping[str, Any], where: str) -> TaskPolicy:
        """A copy with ``options`` (validated, see :func:`policy_from`) applied."""
        base = {
            "retries": self.retries,
            "retry_delay": self.backoff,
            "retry_on": self.retry_on,
            "timeout": self.timeout,
            "cache": self.cache,
        }
        base.update(options)
        policy = policy_from(base, where)
        return policy if policy is not None else TaskPolicy()

    @property
    def is_default(self) -> bool:
        """True when it asks for nothing (the task needs no policy)."""
        return not self.retries and self.timeout is None and self.cache is None


def policy_from(options: Mapping[str, Any], where: str) -> TaskPolicy | None:
    """The policy of ``options`` (keys of :data:`POLICY_KWARGS`), or None if it asks nothing.

    Args:
        options: ``retries``, ``retry_delay``, ``retry_on``, ``timeout``, ``cache``.
        where: the task name, for error messages.

    Raises:
        TypeError: a value of the wrong type (a flag that is not a bool, a
            count that is not an int).
        ValueError: a negative count, a negative or non-finite number of seconds.
    """
    unknown = set(options) - POLICY_KWARGS
    if unknown:
        raise TypeError(f"{where}: unknown option(s) {sorted(unknown)}")
    retries = options.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise TypeError(f"{where}: retries must be an int, not {type(retries).__name__}")
    if retries < 0:
        raise ValueError(f"{where}: retries must be >= 0, not {retries}")
    delay = options.get("retry_delay", _NO_DELAY)
    if delay is None:
        delay = _NO_DELAY
    elif not isinstance(delay, Backoff):
        delay = Backoff(_number(delay, f"{where}: retry_delay"))
    retry_on = _retry_on(options.get("retry_on", (Exception,)))
    timeout = options.get("timeout")
    if timeout is not None:
        timeout = _number(timeout, f"{where}: timeout")
        if timeout == 0:
            raise ValueError(f"{where}: timeout must be more than 0 seconds (None: no timeout)")
    cache = options.get("cache")
    if cache is not None and not isinstance(cache, bool):
        raise TypeError(f"{where}: cache must be True, False or None, not {cache!r}")
    policy = TaskPolicy(retries, delay, retry_on, timeout, cache)
    return None if policy.is_default else policy


class RunState:
    """The moving parts of one task with a policy, while it lives.

    Attributes:
        attempt: the attempt running or about to run (1-based).
        started_ns: when the current attempt started (0: not yet).
        timer: the timeout or retry-delay timer (anything with ``cancel()``).
        timed_out: the current attempt ran past the timeout.
        cache_key: the result's key when the task is cached.
    """

    __slots__ = ("arguments", "attempt", "cache_key", "started_ns", "timed_out", "timer")

    def __init__(self) -> None:
        self.arguments: tuple[Any, Any] | None = None  # an executable's resolved (args, kwargs)
        self.attempt = 1
        self.started_ns = 0
        self.timer: Any = None
        self.timed_out = False
        self.cache_key: str | None = None

    def cancel_timer(self) -> None:
        """Stop the pending timer, if any."""
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()
