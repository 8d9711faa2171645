"""A Dask backend (the older AsyncFlow's ``04-dask_execution_backend.py``, with
the statistics in plain Python and the cluster kept on the loopback)."""

import asyncio
import logging
import random

from asyncflow import DaskExecutionBackend, WorkflowEngine
from asyncflow.logging import init_default_logger

logger = logging.getLogger(__name__)
init_default_logger(logging.INFO)


async def main():
    backend = await DaskExecutionBackend(
        {
            "n_workers": 2,
            "threads_per_worker": 2,
            "host": "127.0.0.1",
            "dashboard_address": "127.0.0.1:0",
        }
    )
    flow = await WorkflowEngine.create(backend=backend)

    @flow.function_task
    async def load_dataset(*args):
        rng = random.Random(7)
        return [rng.random() for _ in range(10000)]

    @flow.function_task
    async def analyze_first_batch(*args):
        dataset = args[0]
        return sum(dataset[:5000]) / 5000

    @flow.function_task
    async def analyze_second_batch(*args):
        dataset = args[0]
        return sum(dataset[5000:]) / 5000

    @flow.function_task
    async def compute_final_stats(*args):
        first_avg, second_avg = args[1], args[2]
        return (first_avg + second_avg) / 2

    @flow.executable_task
    async def count_words(*args):
        return "printf 'a b c\\n' | wc -w"

    shared_data = load_dataset()
    batch1_analysis = analyze_first_batch(shared_data)
    batch2_analysis = analyze_second_batch(shared_data)
    final_stats = compute_final_stats(shared_data, batch1_analysis, batch2_analysis)

    result = await final_stats
    rng = random.Random(7)
    expected = sum(rng.random() for _ in range(10000)) / 10000
    print(f"average matches: {abs(result - expected) < 1e-9}")
    print(f"words: {(await count_words()).strip()}")

    await flow.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
