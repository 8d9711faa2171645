"""How tasks reach a backend and how its reports come back: what a backend
declares next to its ``submit_tasks`` (``reports_inline``,
``reads_metadata``), the shortcuts the engine takes for it, and the batch
a report from a backend's thread releases."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from asyncflow import NoopExecutionBackend, WorkflowEngine
from asyncflow.backends import SUBMITTED, BaseBackend, Submitted, TaskDescription


def _dependency_uids(task: TaskDescription) -> list[str]:
    return [d["uid"] for d in task["metadata"]["dependencies"]]


async def test_components_show_the_metadata_a_built_in_backend_never_reads(
    engine: WorkflowEngine,
) -> None:
    @engine.function_task
    async def f(*deps: Any) -> None:
        return None

    first = f()
    second = f(first)
    third = f(first, second)
    await asyncio.gather(first, second, third)
    assert _dependency_uids(engine.components[second.uid]["description"]) == [first.uid]
    third_desc = engine.components[third.uid]["description"]
    assert _dependency_uids(third_desc) == [first.uid, second.uid]
    assert third_desc["metadata"]["input_files"] == ()
    assert engine.components[third.uid]["description"] is third_desc  # the same dict


async def test_an_override_of_submit_tasks_gets_the_metadata_at_hand_over(
    tmp_path: Path,
) -> None:
    class Reading(NoopExecutionBackend):
        """Reads the metadata when tasks arrive: it inherits no claim that it does not."""

        seen: dict[str, list[str]] = {}

        def submit_tasks(self, tasks: list[TaskDescription]) -> Submitted:
            for task in tasks:
                self.seen[task["uid"]] = _dependency_uids(task)
            return super().submit_tasks(tasks)

    engine = await WorkflowEngine.create(backend=Reading(), work_dir=tmp_path)
    try:

        @engine.function_task
        async def f(*deps: Any) -> None:
            return None

        first = f()
        second = f(first)
        await second
        assert Reading.seen == {first.uid: [], second.uid: [first.uid]}
    finally:
        await engine.shutdown()


async def test_an_override_of_submit_tasks_reporting_from_a_thread_is_heard(
    tmp_path: Path,
) -> None:
    class Threaded(NoopExecutionBackend):
        """Reports from a thread of its own: the engine must not take the
        no-op backend's inline reports for granted."""

        def submit_tasks(self, tasks: list[TaskDescription]) -> Submitted:
            def report() -> None:
                for task in tasks:
                    task["return_value"] = task["uid"]
                    self._callback(task, "DONE")

            threading.Thread(target=report).start()
            return SUBMITTED

    loop = asyncio.get_running_loop()
    debug = loop.get_debug()
    # Debug mode: a loop method called from another thread raises, so engine
    # code run on the reporting thread would fail the tasks, not race.
    loop.set_debug(True)
    engine = await WorkflowEngine.create(backend=Threaded(), work_dir=tmp_path)
    try:

        @engine.function_task
        async def f(*deps: Any) -> None:
            return None

        tasks = [f()]
        for _ in range(20):
            tasks.append(f(tasks[-1]))
        assert await asyncio.wait_for(asyncio.gather(*tasks), 30) == [t.uid for t in tasks]
    finally:
        await engine.shutdown()
        loop.set_debug(debug)


async def test_a_report_from_a_thread_hands_the_released_task_over_in_the_same_callback(
    tmp_path: Path,
) -> None:
    """The loop wakes for a report from a backend's thread; the task it
    releases reaches the backend before the callbacks queued behind that
    wake-up run, not on a later turn of the loop."""
    loop = asyncio.get_running_loop()
    order: list[str] = []
    loop_busy = threading.Event()
    reported = threading.Event()

    class Gated(BaseBackend):
        """Reports its first task while the loop is busy, then queues a mark."""

        def submit_tasks(self, tasks: list[TaskDescription]) -> Submitted:
            for task in tasks:
                order.append(task["uid"])
                task["return_value"] = None
                gated = len(order) == 1
                threading.Thread(target=self._report, args=(task, gated)).start()
            return SUBMITTED

        def _report(self, task: TaskDescription, gated: bool) -> None:
            if gated:
                loop_busy.wait(10)
            self._callback(task, "DONE")
            if gated:
                loop.call_soon_threadsafe(order.append, "mark")
                reported.set()

        async def cancel_task(self, uid: str) -> bool:
            return False

        async def shutdown(self) -> None:
            return None

    engine = await WorkflowEngine.create(backend=Gated(), work_dir=tmp_path)
    try:

        @engine.function_task
        async def f(*deps: Any) -> None:
            return None

        first = f()
        second = f(first)

        def hold_the_loop() -> None:
            # The report and the mark are queued while the loop runs this,
            # so its next turn finds the wake-up first, then the mark.
            loop_busy.set()
            reported.wait(10)

        await asyncio.sleep(0)  # the first task is handed over
        loop.call_soon(hold_the_loop)
        await asyncio.wait_for(asyncio.gather(first, second), 30)
        assert order[:3] == [first.uid, second.uid, "mark"], order
    finally:
        await engine.shutdown()


async def test_a_task_the_engine_fails_to_hand_over_fails_and_the_engine_serves_on(
    tmp_path: Path, caplog: Any
) -> None:
    """A fault of the engine itself while handing a batch over (here a graph
    transition that raises, as a late report once made one) fails that
    batch's tasks with a BackendError naming it: no task is left pending,
    dependents are told, and later tasks run."""
    from asyncflow.errors import BackendError, DependencyFailureError

    async with await WorkflowEngine.create(
        backend=NoopExecutionBackend(), work_dir=tmp_path
    ) as engine:
        broken: list[str] = []

        class Faulty:
            """The engine's graph, whose first ``submitted`` raises."""

            def __init__(self, graph: Any) -> None:
                self.graph = graph

            def __getattr__(self, name: str) -> Any:
                return getattr(self.graph, name)

            def submitted(self, key: Any) -> None:
                if not broken:
                    broken.append(key.uid)
                    raise RuntimeError("transition table corrupted")
                self.graph.submitted(key)

        engine._graph = Faulty(engine._graph)  # type: ignore[assignment]

        @engine.function_task
        async def f(*deps: Any) -> str:
            return "ok"

        first = f()
        after = f(first)
        results = await asyncio.wait_for(asyncio.gather(first, after, return_exceptions=True), 10)
        assert isinstance(results[0], BackendError)
        assert first.uid in str(results[0]) and "transition table corrupted" in str(results[0])
        assert isinstance(results[1], DependencyFailureError)
        assert await asyncio.wait_for(f(), 10) == "Dummy Output"  # the dry run's value
    assert broken == [first.uid]
    errors = [r for r in caplog.records if r.name == "asyncflow" and r.levelname == "ERROR"]
    assert len(errors) == 1 and "failed to hand 1 task(s)" in errors[0].getMessage()
