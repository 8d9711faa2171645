"""How the engine's resource keys reach RHAPSODY's backends (pure functions)."""

from __future__ import annotations

from typing import Any

from asyncflow.engine._foreign import adapter_for, dask_kwargs, pilot_kwargs


def backend_class(module: str, name: str) -> Any:
    return type(name, (), {"__module__": module})()


def test_adapter_for_picks_by_rhapsody_backend_class() -> None:
    module = "rhapsody.backends.execution"
    assert adapter_for(backend_class(module + ".dask_parallel", "DaskExecutionBackend")) is (
        dask_kwargs
    )
    assert adapter_for(backend_class(module + ".radical_pilot", "RadicalExecutionBackend")) is (
        pilot_kwargs
    )
    for name in ("ConcurrentExecutionBackend", "DragonExecutionBackend"):
        assert adapter_for(backend_class(module, name)) is None
    # A user's own class that happens to be called the same is left alone.
    assert adapter_for(backend_class("mysite.backends", "DaskExecutionBackend")) is None


def test_dask_kwargs() -> None:
    given = {"gpus": 2, "cpus": 4, "priority": 3, "retries": 1}
    sent = dask_kwargs("session.1", "task.000007", given)
    assert sent == {
        "key": "session.1.task.000007",
        "resources": {"GPU": 2},
        "priority": 3,
        "retries": 1,
    }
    assert given == {"gpus": 2, "cpus": 4, "priority": 3, "retries": 1}  # a copy
    # The user's own Dask terms win; no GPU asked for means no resources.
    own = {"gpus": 1, "resources": {"GPU": 1, "MEM": 8}, "key": "mine"}
    assert dask_kwargs("s", "t", own) == {"resources": {"GPU": 1, "MEM": 8}, "key": "mine"}
    assert dask_kwargs("s", "t", {"gpus": 0, "cpus": 1}) == {"key": "s.t"}


def test_pilot_kwargs() -> None:
    given = {"cpus": 4, "gpus": 1, "ranks": 2}
    assert pilot_kwargs("s", "t", given) == {"cores_per_rank": 4, "gpus_per_rank": 1, "ranks": 2}
    assert given == {"cpus": 4, "gpus": 1, "ranks": 2}
    assert pilot_kwargs("s", "t", {"gpus": 1, "gpus_per_rank": 2}) == {"gpus_per_rank": 2}
    plain = {"ranks": 4}
    assert pilot_kwargs("s", "t", plain) is plain  # nothing to translate, nothing copied
