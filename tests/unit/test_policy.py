"""Retry, timeout and cache options: validation, the backoff, what is retried."""

from __future__ import annotations

import asyncio

import pytest

from asyncflow import Backoff, DependencyFailureError, TaskTimeoutError
from asyncflow.engine._policy import TaskPolicy, policy_from
from asyncflow.errors import AsyncFlowError


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    b = Backoff(1.0, factor=2.0, cap=5.0, jitter=0.0)
    assert [b.delay(k, 0.0) for k in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert Backoff(1.0).delay(10_000, 0.0) == 60.0  # no overflow, the default cap


def test_backoff_jitter_takes_off_at_most_its_fraction() -> None:
    b = Backoff(4.0, jitter=0.5, cap=100.0)
    assert b.delay(1, 0.0) == 4.0
    assert b.delay(1, 0.999999) == pytest.approx(2.0, abs=1e-5)
    assert b.delay(2, 0.5) == 6.0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"base": -1}, ValueError),
        ({"base": True}, TypeError),
        ({"base": "1"}, TypeError),
        ({"base": float("nan")}, ValueError),
        ({"base": 1, "factor": 0.5}, ValueError),
        ({"base": 1, "jitter": 1.5}, ValueError),
    ],
)
def test_backoff_rejects_bad_values(kwargs: dict[str, object], error: type[Exception]) -> None:
    base = kwargs.pop("base")
    with pytest.raises(error):
        Backoff(base, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"retries": True}, TypeError, "retries must be an int"),
        ({"retries": 1.0}, TypeError, "retries must be an int"),
        ({"retries": -1}, ValueError, "retries must be >= 0"),
        ({"timeout": 0}, ValueError, "more than 0"),
        ({"timeout": -2}, ValueError, "timeout"),
        ({"timeout": "5"}, TypeError, "timeout"),
        ({"cache": 1}, TypeError, "cache must be True, False or None"),
        ({"retry_on": ValueError()}, TypeError, "retry_on takes Exception subclasses"),
        ({"retry_on": asyncio.CancelledError}, TypeError, "cancellation is never retried"),
        ({"retry_on": ()}, ValueError, "at least one"),
        ({"retry_delay": -1}, ValueError, "retry_delay"),
        ({"nonsense": 1}, TypeError, "unknown option"),
    ],
)
def test_bad_options_name_the_problem(
    options: dict[str, object], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        policy_from(options, "task 'f'")


def test_a_policy_that_asks_nothing_is_none() -> None:
    assert policy_from({}, "f") is None
    assert policy_from({"retries": 0, "retry_delay": 3}, "f") is None
    assert policy_from({"cache": False}, "f") is not None  # an opt-out is a choice


def test_what_is_retried() -> None:
    p = policy_from({"retries": 2}, "f")
    assert p is not None
    assert p.should_retry(ValueError("x"), 1) and p.should_retry(ValueError("x"), 2)
    assert not p.should_retry(ValueError("x"), 3)  # no attempts left
    assert not p.should_retry(asyncio.CancelledError(), 1)
    assert not p.should_retry(DependencyFailureError("upstream"), 1)
    assert not p.should_retry(TaskTimeoutError("f", 1.0), 1)  # not unless asked
    only = policy_from({"retries": 2, "retry_on": (KeyError, TimeoutError)}, "f")
    assert only is not None
    assert only.should_retry(KeyError("k"), 1)
    assert not only.should_retry(ValueError("v"), 1)
    assert only.should_retry(TaskTimeoutError("f", 1.0), 1)


def test_call_options_override_the_decorator() -> None:
    p = TaskPolicy(retries=3, timeout=5.0)
    q = p.with_options({"retries": 0}, "f")
    assert (q.retries, q.timeout) == (0, 5.0)
    assert p.retries == 3  # shared policies never change


def test_timeout_error_is_both_kinds_and_pickles() -> None:
    import pickle

    err = TaskTimeoutError("simulate", 0.5)
    assert isinstance(err, TimeoutError) and isinstance(err, AsyncFlowError)
    assert str(err) == "task 'simulate' timed out after 0.5 s"
    back = pickle.loads(pickle.dumps(err))
    assert (type(back), str(back), back.task_name, back.timeout) == (
        TaskTimeoutError,
        str(err),
        "simulate",
        0.5,
    )
