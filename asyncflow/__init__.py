"""asyncflow: an asyncio-native workflow engine for HPC and AI campaigns.

Decorated ``async def`` functions become tasks; calling one returns a future
at once, and passing a future to another task makes a dependency::

    import asyncio
    from asyncflow import WorkflowEngine

    async def main():
        async with await WorkflowEngine.create() as engine:
            @engine.function_task
            async def double(x):
                return 2 * x

            print(await double(double(1)))  # 4

    asyncio.run(main())
"""

from ._version import __version__
from .backends import LocalExecutionBackend, NoopExecutionBackend
from .data import InputFile, OutputFile
from .engine import Backoff, WorkflowEngine
from .errors import DependencyFailureError, TaskTimeoutError
from .resources import ResourcePool, current_slots
from .telemetry.events import define_event

__all__ = [
    "Backoff",
    "DependencyFailureError",
    "InputFile",
    "LocalExecutionBackend",
    "NoopExecutionBackend",
    "OutputFile",
    "ResourcePool",
    "TaskTimeoutError",
    "WorkflowEngine",
    "__version__",
    "current_slots",
    "define_event",
]

# Some releases of the older radical.asyncflow exported RHAPSODY's backends
# under their own names: ``from asyncflow import ConcurrentExecutionBackend``
# keeps working, loading ``rhapsody`` only when asked.
_RHAPSODY_BACKENDS = frozenset(
    {
        "ConcurrentExecutionBackend",
        "DaskExecutionBackend",
        "DragonExecutionBackend",
        "RadicalExecutionBackend",
    }
)


def __getattr__(name: str) -> object:
    if name not in _RHAPSODY_BACKENDS:
        raise AttributeError(f"module 'asyncflow' has no attribute {name!r}")
    try:
        import rhapsody.backends
    except ImportError as exc:
        raise ImportError(
            f"{name} comes from rhapsody-py: pip install 'asyncflow-otel[hpc]' ({exc})"
        ) from exc
    return getattr(rhapsody.backends, name)
