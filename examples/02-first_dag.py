"""A first DAG: function and executable tasks, values flowing along futures, a failure.

Calling a task returns a future at once; passing that future to another task
makes a dependency, and the dependent receives the value in its place. The
graph here is a diamond (``generate`` feeds ``square`` and ``total``), then an
executable whose command line is built from the upstream value. Last, failures:
a function that raises makes the tasks downstream of it fail with
``DependencyFailureError``, which names the failed dependency and keeps the
original exception; an executable that exits non-zero raises
``ExecutableError`` with its exit code and standard error.

Run it from a checkout::

    python examples/02-first_dag.py
"""

from __future__ import annotations

import asyncio
import shlex

from asyncflow import DependencyFailureError, WorkflowEngine
from asyncflow.errors import ExecutableError


async def main() -> None:
    # No backend given: a LocalExecutionBackend on threads.
    async with await WorkflowEngine.create() as engine:

        @engine.function_task
        async def generate(n: int) -> list[int]:
            return list(range(1, n + 1))

        @engine.function_task
        async def square(values: list[int]) -> list[int]:
            return [v * v for v in values]

        @engine.function_task
        async def total(values: list[int], squares: list[int]) -> dict[str, int]:
            return {"sum": sum(values), "sum_of_squares": sum(squares)}

        @engine.executable_task
        async def report(result: dict[str, int]) -> str:
            # Evaluated once 'total' is done: ``result`` is its value, not a future.
            words = [f"sum={result['sum']}", f"squares={result['sum_of_squares']}"]
            return shlex.join(["echo", *words])  # quoted: one argument per word, no shell

        numbers = generate(5)
        summary = total(numbers, square(numbers))  # 'numbers' is one dependency, used twice
        printed = report(summary)
        print(f"{printed.uid} is {printed.state}")
        print("report says:", (await printed).strip())
        print(f"{printed.uid} is {printed.state}; total returned {await summary}")

        @engine.function_task
        async def parse(text: str) -> float:
            return float(text)  # ValueError for anything but a number

        @engine.function_task
        async def calibrate(value: float) -> float:
            return value * 1.5

        @engine.function_task
        async def publish(value: float) -> str:
            return f"calibrated value: {value}"

        bad = parse("not a number")
        published = publish(calibrate(bad))  # two levels below the failure
        try:
            await published
        except DependencyFailureError as exc:
            print(f"{published.uid} {published.state}: {exc}")
            print(f"  failed dependencies: {exc.failed_dependencies}, chain: {exc.chain}")
            print(f"  the error that started it: {exc.original_exception!r}")
        print(f"{bad.uid} {bad.state}: {bad.exception()!r}")

        @engine.executable_task
        async def missing_input() -> str:
            return "ls /no/such/directory"

        try:
            await missing_input()
        except ExecutableError as exc:  # a non-zero exit: exit code and stderr kept
            print(f"ls failed with exit code {exc.exit_code}: {exc.stderr.strip()}")


if __name__ == "__main__":
    asyncio.run(main())
