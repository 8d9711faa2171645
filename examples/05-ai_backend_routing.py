"""Routing tasks between an HPC backend and an AI backend by name.

Two backends: a ``LocalExecutionBackend`` named ``"hpc"`` (the default, the
first in the list) runs the function tasks, and a ``NoopExecutionBackend``
named ``"ai"`` stands in for an AI/LLM inference backend. The prompt task is
routed to it with ``@engine.prompt_task(backend="ai")``; its body builds the
prompt from an upstream result, after that result exists. The no-op backend
answers every prompt with ``"Dummy Prompt Output"``; put a real inference
backend named ``"ai"`` in its place (any object with the engine's backend
interface that answers prompt tasks) and nothing else changes.

The end shows two mistakes and what they cost: a prompt sent to the local
backend, and a task routed to a name no backend has. Each fails its own
future with a clear message; the engine goes on.

Run it from a checkout::

    python examples/05-ai_backend_routing.py
"""

from __future__ import annotations

import asyncio

from asyncflow import LocalExecutionBackend, NoopExecutionBackend, WorkflowEngine


async def main() -> None:
    hpc = await LocalExecutionBackend(name="hpc")
    ai = NoopExecutionBackend(name="ai")
    async with await WorkflowEngine.create(backend=[hpc, ai]) as engine:

        @engine.function_task  # no backend= : the default, "hpc"
        async def simulate(temperature: float) -> dict[str, float]:
            return {"temperature": temperature, "energy": -1.5 * temperature}

        @engine.prompt_task(backend="ai")
        async def interpret(result: dict[str, float]) -> str:
            return (
                f"A run at {result['temperature']} K ended with energy {result['energy']}. "
                "Suggest the next temperature to try, as a number."
            )

        @engine.function_task(backend="hpc")
        async def record(result: dict[str, float], advice: str) -> str:
            return f"T={result['temperature']} E={result['energy']} advice={advice!r}"

        run = simulate(300.0)
        advice = interpret(run)
        line = record(run, advice)
        print(await line)
        for future in (run, advice, line):
            routed = engine.components[future.uid]["description"]["target_backend"]
            where = routed or f"{engine.backend.name} (the default)"
            print(f"{future.uid} {future.name:<9} ran on {where}")
        print("the prompt sent:", engine.components[advice.uid]["description"]["prompt"])

        @engine.prompt_task  # forgot backend="ai": goes to the default "hpc"
        async def unrouted() -> str:
            return "Summarise the campaign."

        @engine.function_task(backend="gpu")  # no backend has this name
        async def misrouted() -> None:
            return None

        for attempt in (unrouted(), misrouted()):
            try:
                await attempt
            except (NotImplementedError, ValueError) as exc:
                print(f"{attempt.name}: {type(exc).__name__}: {exc}")
        print("still serving:", await simulate(310.0))


if __name__ == "__main__":
    asyncio.run(main())
