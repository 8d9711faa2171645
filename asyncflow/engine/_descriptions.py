"""The task descriptions a backend gets, and the data linking they carry."""

from __future__ import annotations

import logging
import os
from typing import Any, cast

from ..backends._base import Backend, DataLinking, TaskDescription, TaskMetadata, Upstream
from ._finishing import Finishing
from ._foreign import Adapter, exact_argv_task
from ._future import KIND_EXECUTABLE, TaskFuture
from ._registry import DependencyList
from ._tasks import NO_KWARGS, NO_METADATA, NO_TASK_DESCRIPTION

__all__ = ["Descriptions"]

logger = logging.getLogger("asyncflow")

# The metadata of a description handed to a backend that never reads it,
# until ``engine.components`` reads it (see WorkflowEngine._describe).
_METADATA_LATER: TaskMetadata = {
    "dependencies": (),
    "input_files": (),
    "output_files": (),
    "workflow_name": None,
}


class Descriptions(Finishing):
    """The task descriptions a backend gets, and the data linking they carry."""

    # ------------------------------------------------------------------ descriptions
    def _describe(
        self, fut: TaskFuture[Any], args: Any, kwargs: Any, metadata: bool = True
    ) -> TaskDescription:
        """The dict the backend gets (kept as the task's description).

        ``metadata=False`` (a backend that never reads it, see
        ``_metadata_unread``): the metadata of a task with dependencies,
        files or a workflow type is made when ``engine.components`` reads
        the description, not for every task.
        """
        # The template holds the shared values (no keyword arguments, no
        # workflow, the shared metadata): only what differs is stored.
        desc: TaskDescription = fut._spec.template.copy()  # type: ignore[assignment]
        desc["uid"] = fut.uid
        desc["args"] = args
        if kwargs is not NO_KWARGS:
            desc["kwargs"] = kwargs
        if fut.task_description is not NO_TASK_DESCRIPTION:
            desc["task_backend_specific_kwargs"] = fut.task_description
        if fut.workflow_id is not None:
            desc["workflow_id"] = fut.workflow_id
        if fut._deps or fut._files is not None or fut.workflow_name is not None:
            desc["metadata"] = self._metadata(fut) if metadata else _METADATA_LATER
        fut._desc = desc
        return desc

    @staticmethod
    def _metadata(fut: TaskFuture[Any]) -> TaskMetadata:
        """The metadata of a task with dependencies, files or a workflow type."""
        deps = fut._deps
        files = fut._files
        if files is None:
            if fut.workflow_name is None:
                meta = NO_METADATA.copy()  # a copy costs less than a literal
                meta["dependencies"] = DependencyList(deps)
                return meta
            return {
                "dependencies": DependencyList(deps) if deps else (),
                "input_files": (),
                "output_files": (),
                "workflow_name": fut.workflow_name,
            }
        return {
            "dependencies": DependencyList(deps) if deps else (),
            "input_files": tuple(f.path for f in files[0]),
            "output_files": tuple(f.filename for f in files[1]),
            "workflow_name": fut.workflow_name,
        }

    def _description_of(self, fut: TaskFuture[Any]) -> TaskDescription:
        """``engine.components[uid]["description"]``: what the backend got, or
        would get now (arguments still holding unresolved futures)."""
        desc = fut._desc
        if desc is None:
            return self._describe(fut, fut.args, fut.kwargs)
        if desc.get("metadata") is _METADATA_LATER:
            desc["metadata"] = self._metadata(fut)
        return desc

    def _prepare(
        self,
        name: str,
        backend: Backend,
        fut: TaskFuture[Any],
        desc: TaskDescription,
        adapt: Adapter | None,
        implicit: bool,
        explicit: bool,
    ) -> TaskDescription:
        """What a task needs beyond its description on its way to ``backend``."""
        if fut._pushed:  # dependencies not ended yet are Upstream markers
            desc["args"] = tuple([_upstream_or_value(a) for a in fut.args])
        if adapt is not None:  # a RHAPSODY backend that would misread engine keys
            run = fut._run
            # Each attempt is a new task to the backend (Dask keys by it).
            attempt_uid = fut.uid if run is None else f"{fut.uid}.{run.attempt}"
            desc["task_backend_specific_kwargs"] = adapt(
                self.uid,
                attempt_uid,
                fut.task_description or {},  # not the shared empty one
            )
        if (implicit and fut._deps) or (explicit and fut._files):
            # It declared supports_*_data_linking: it has the hooks.
            linker = cast("DataLinking", backend)
            self._link_data(name, linker, fut, desc, implicit, explicit)
        if fut.kind == KIND_EXECUTABLE and name in self._argv_only:
            desc = exact_argv_task(desc)
        return desc

    def _link_data(
        self,
        name: str,
        backend: DataLinking,
        fut: TaskFuture[Any],
        desc: TaskDescription,
        implicit: bool,
        explicit: bool,
    ) -> None:
        inputs, _ = fut._files or ((), ())
        produced: dict[str, TaskFuture[Any]] = {}
        for dep in fut._deps:
            if type(dep) is TaskFuture and dep._files:
                for out in dep._files[1]:
                    produced[os.path.basename(out.filename)] = dep
        linked_explicitly: set[int] = set()
        try:
            if explicit:
                for inp in inputs:
                    src = produced.get(inp.filename)
                    if src is not None:
                        linked_explicitly.add(id(src))
                        backend.link_explicit_data_deps(
                            src_task=src._desc, dst_task=desc, file_name=inp.filename
                        )
                    else:
                        backend.link_explicit_data_deps(
                            src_task=None, dst_task=desc, file_name=inp.filename, file_path=inp.path
                        )
            if implicit:
                for dep in fut._deps:
                    if type(dep) is TaskFuture and id(dep) not in linked_explicitly and dep._desc:
                        backend.link_implicit_data_deps(dep._desc, desc)
        except Exception:
            logger.exception("backend %r failed to link the data of %s", name, fut.uid)


def _upstream_or_value(arg: Any) -> Any:
    if type(arg) is not TaskFuture:
        return arg
    return arg.result() if arg.done() else Upstream(arg.uid)
