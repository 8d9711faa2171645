"""The workflow engine: task registration, dependencies, scheduling."""

from ._engine import WorkflowEngine
from ._future import TaskFuture
from ._policy import Backoff

__all__ = ["Backoff", "TaskFuture", "WorkflowEngine"]
