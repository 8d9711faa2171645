"""The workflow engine: task registration, dependencies, scheduling."""

from ._engine import WorkflowEngine
from ._future import TaskFuture

__all__ = ["TaskFuture", "WorkflowEngine"]
