"""Execution backends: where tasks run.

Built in: :class:`NoopExecutionBackend` (dry run) and
:class:`LocalExecutionBackend` (threads or processes on this machine). The
HPC backends of ``rhapsody-py`` (Dask, RADICAL-Pilot, Dragon) plug into the
engine unchanged: ``pip install 'asyncflow-otel[hpc]'``.
"""

from ._base import (
    TASK_STATES,
    Backend,
    BaseBackend,
    DataLinking,
    StateCallback,
    TaskDescription,
    TaskMetadata,
)
from .local import LocalExecutionBackend
from .noop import NoopExecutionBackend

__all__ = [
    "TASK_STATES",
    "Backend",
    "BaseBackend",
    "DataLinking",
    "LocalExecutionBackend",
    "NoopExecutionBackend",
    "StateCallback",
    "TaskDescription",
    "TaskMetadata",
]
