"""Execution backends: where tasks run.

Built in: :class:`NoopExecutionBackend` (dry run) and
:class:`LocalExecutionBackend` (threads or processes on this machine). The
HPC backends of ``rhapsody-py`` (Dask, RADICAL-Pilot, Dragon) plug into the
engine unchanged: ``pip install '.[hpc]'`` in a clone, which also brings
``DaskBackend`` (this package's own thin backend on ``dask.distributed``,
loaded when first asked for).
"""

from typing import TYPE_CHECKING

from ._base import (
    SUBMITTED,
    TASK_STATES,
    Backend,
    BaseBackend,
    DataLinking,
    StateCallback,
    StopsTasks,
    Submitted,
    TaskDescription,
    TaskMetadata,
    Upstream,
)
from .local import LocalExecutionBackend
from .noop import NoopExecutionBackend

if TYPE_CHECKING:
    from .dask import DaskBackend as DaskBackend


def __getattr__(name: str) -> object:
    # DaskBackend needs dask.distributed (the [hpc] extra): loaded when asked for.
    if name == "DaskBackend":
        from .dask import DaskBackend

        return DaskBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SUBMITTED",
    "TASK_STATES",
    "Backend",
    "BaseBackend",
    "DataLinking",
    "LocalExecutionBackend",
    "NoopExecutionBackend",
    "StateCallback",
    "StopsTasks",
    "Submitted",
    "TaskDescription",
    "TaskMetadata",
    "Upstream",
]
