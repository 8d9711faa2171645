"""How the engine's resource keys reach RHAPSODY's backends (pure functions)."""

from __future__ import annotations

from typing import Any

from asyncflow.engine._foreign import adapter_for, dask_kwargs, pilot_kwargs


def test_adapter_for_picks_by_rhapsody_backend_type() -> None:
    from rhapsody.backends.execution.concurrent import ConcurrentExecutionBackend
    from rhapsody.backends.execution.dask_parallel import DaskExecutionBackend
    from rhapsody.backends.execution.radical_pilot import RadicalExecutionBackend

    def bare(cls: type) -> Any:  # an instance without running its constructor
        return cls.__new__(cls)

    assert adapter_for(bare(DaskExecutionBackend)) is dask_kwargs
    assert adapter_for(bare(RadicalExecutionBackend)) is pilot_kwargs
    assert adapter_for(bare(type("MyDask", (DaskExecutionBackend,), {}))) is dask_kwargs
    assert adapter_for(bare(ConcurrentExecutionBackend)) is None
    # A user's own class that happens to share the name and module is left alone.
    impostor = type("DaskExecutionBackend", (), {"__module__": DaskExecutionBackend.__module__})
    assert adapter_for(impostor()) is None


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


def test_every_rhapsody_backend_gets_shell_lines_as_an_exact_argv() -> None:
    import rhapsody.backends.execution.radical_pilot as pilot
    from rhapsody.backends.execution.concurrent import ConcurrentExecutionBackend
    from rhapsody.backends.execution.dask_parallel import DaskExecutionBackend

    from asyncflow import NoopExecutionBackend
    from asyncflow.engine._foreign import exact_argv_task, runs_exact_argv

    for cls in (ConcurrentExecutionBackend, DaskExecutionBackend, pilot.RadicalExecutionBackend):
        assert runs_exact_argv(cls.__new__(cls)), cls
    assert not runs_exact_argv(NoopExecutionBackend())
    impostor = type("ConcurrentExecutionBackend", (), {"__module__": "rhapsody.backends.x"})
    assert not runs_exact_argv(impostor())
    # What RADICAL-Pilot (rp.TaskDescription.executable/arguments) receives.
    sent = exact_argv_task(
        {
            "uid": "task.000001",
            "executable": "sort",
            "arguments": ["data"],
            "command": "sort data | uniq -c > counts.txt",
            "shell": True,
            "task_backend_specific_kwargs": {},
        }
    )
    assert (sent["executable"], sent["arguments"]) == (
        "/bin/sh",
        ["-c", "sort data | uniq -c > counts.txt"],
    )
