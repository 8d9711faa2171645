"""A subscriber reading RHAPSODY's event fields, workflow_scope() and
summary()["tasks"] (the older AsyncFlow's telemetry docs and
``01-workflow_grouping.py``, shorter)."""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from rhapsody.backends import ConcurrentExecutionBackend
from rhapsody.telemetry import define_event
from rhapsody.telemetry.events import make_event

from asyncflow import WorkflowEngine
from asyncflow.logging import init_default_logger

ExperimentResult = define_event(
    "experiment.Result",
    experiment_id=str,
    loss=float,
    step=(int, -1),
)


class PipelineMonitor:
    def __init__(self, telemetry):
        self.completed_ms = []
        self.resolved = set()
        self.per_node = 0
        self.results = []
        telemetry.subscribe(self._on_event)

    def _on_event(self, event):
        if event.event_type == "TaskCompleted":
            self.completed_ms.append(event.duration_seconds * 1000)
        elif event.event_type == "asyncflow.TaskResolved":
            self.resolved.add(event.task_id)
        elif event.event_type == "ResourceUpdate" and event.resource_scope == "per_node":
            if event.cpu_percent is not None and event.gpu_id is None:
                self.per_node += 1
        elif event.event_type == "experiment.Result":
            self.results.append((event.experiment_id, event.step))


async def main():
    init_default_logger(logging.INFO)

    backend = await ConcurrentExecutionBackend(ThreadPoolExecutor(max_workers=4))
    flow = await WorkflowEngine.create(backend)
    telemetry = await flow.start_telemetry(resource_poll_interval=0.1)
    monitor = PipelineMonitor(telemetry)

    @flow.function_task
    async def load_data(experiment_id: str, size: int) -> dict:
        await asyncio.sleep(0.02)
        return {"experiment_id": experiment_id, "size": size}

    @flow.function_task
    async def train(data: dict, lr: float) -> dict:
        await asyncio.sleep(0.05)
        return {**data, "loss": 0.5 / (1.0 + data["size"] * lr)}

    async def run_experiment(i: int, size: int, lr: float) -> dict:
        exp_id = f"exp-{i}"
        async with flow.workflow_scope(exp_id) as wid:
            result = await train(load_data(exp_id, size), lr)
        telemetry.emit(
            make_event(
                ExperimentResult,
                session_id=telemetry.session_id,
                backend="pipeline",
                task_id=wid,
                experiment_id=exp_id,
                loss=result["loss"],
            )
        )
        return result

    await asyncio.gather(*(run_experiment(i, 100 * (i + 1), 0.01) for i in range(3)))
    while monitor.per_node < 2:
        await asyncio.sleep(0.05)

    summary = telemetry.summary()
    print(f"{summary['tasks']['completed']} tasks completed")
    print(
        f"durations seen: {len(monitor.completed_ms)}, all positive: "
        f"{all(ms > 0 for ms in monitor.completed_ms)}"
    )
    print(f"resolved: {len(monitor.resolved)}")
    print(f"results: {sorted(monitor.results)}")
    print(f"per-node samples: {monitor.per_node >= 2}")

    await flow.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
