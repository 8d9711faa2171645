"""Several backends on one engine, routed by name (the older AsyncFlow's
``04-concurrent_backends.py``)."""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from asyncflow import LocalExecutionBackend, NoopExecutionBackend, WorkflowEngine
from asyncflow.logging import init_default_logger

logger = logging.getLogger(__name__)


async def main():
    init_default_logger(logging.DEBUG)

    ai_backend = NoopExecutionBackend(name="ai")
    compute_backend = await LocalExecutionBackend(ThreadPoolExecutor(), name="compute")
    flow = await WorkflowEngine.create(backend=[compute_backend, ai_backend])

    @flow.function_task(backend="compute")
    async def preprocess(raw_text):
        await asyncio.sleep(0.01)
        return raw_text.strip().lower()

    @flow.prompt_task(backend="ai")
    async def summarize(preprocessed):
        return f"Summarize the following text in one sentence:\n\n{preprocessed}"

    @flow.function_task(backend="compute")
    async def postprocess(summary):
        return f"[Result] {summary}"

    documents = ["  AsyncFlow IS async.  ", "RHAPSODY runs HPC tasks."]

    async def run_pipeline(doc_id, text):
        return await postprocess(summarize(preprocess(text)))

    results = await asyncio.gather(*[run_pipeline(i, d) for i, d in enumerate(documents)])
    print(f"results: {results}")
    print(f"default backend: {flow.backend.name}")
    await flow.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
