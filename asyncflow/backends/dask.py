"""``DaskBackend``: tasks on a ``dask.distributed`` cluster, results in batches.

A thin backend on ``distributed`` itself (``pip install 'asyncflow-otel[hpc]'``
brings it), for when the cluster is where the time goes. Where RHAPSODY's
``DaskExecutionBackend`` awaits every Dask future on its own (one result
fetch per task), this one submits a batch with one ``Client.submit`` each
and collects finished futures through one ``as_completed`` stream, fetching
the results of everything that finished together in one ``Client.gather``:
the same number of scheduler messages as native Dask code.

Dask does not tell a client when a task starts on a worker: ``RUNNING`` is
reported when the task is handed to the scheduler, so a task's run segment
includes its wait in the cluster's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import subprocess
from collections.abc import Sequence
from functools import partial
from typing import Any

from ._base import (
    STATE_CANCELED,
    STATE_DONE,
    STATE_FAILED,
    STATE_RUNNING,
    BaseBackend,
    TaskDescription,
    Upstream,
)

__all__ = ["DaskBackend"]

logger = logging.getLogger("asyncflow.backends")

# Result fetches in flight at once.
_GATHERS = 4
# Seconds a finished future waits for the fetch in flight before one more
# fetch starts beside it: while fetches are quick, what finishes meanwhile
# joins the next one (fewer round trips to the scheduler and the workers);
# a slow one (a large result) holds the others back no longer than this.
_PATIENCE = 0.02
# Keys a task_description may carry that are not Client.submit's.
_ENGINE_KEYS = ("cpus", "gpus", "cwd", "env", "shell")


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - the [hpc] extra brings it
        raise ImportError(
            "DaskBackend needs dask.distributed: pip install 'asyncflow-otel[hpc]'"
        ) from exc
    return distributed


def run_command(
    argv: Sequence[str],
    cwd: str | None,
    env: dict[str, str] | None,
    stdio_prefix: str | None,
) -> tuple[str, str, int]:
    """Run one executable task on a worker: ``(stdout, stderr, exit code)``.

    With ``stdio_prefix``, the output is also written to ``<prefix>.stdout``
    and ``<prefix>.stderr`` (``capture_stdio=True``).
    """
    full_env = {**os.environ, **env} if env else None
    done = subprocess.run(
        list(argv),
        cwd=cwd,
        env=full_env,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        check=False,
    )
    out = done.stdout.decode(errors="replace")
    err = done.stderr.decode(errors="replace")
    if stdio_prefix is not None:
        with open(f"{stdio_prefix}.stdout", "w", encoding="utf-8") as f:
            f.write(out)
        with open(f"{stdio_prefix}.stderr", "w", encoding="utf-8") as f:
            f.write(err)
    return out, err, done.returncode


def argv_of(task: TaskDescription) -> list[str]:
    """The argv an executable task runs: its command through ``/bin/sh -c``, as
    written, unless ``task_description={"shell": False}`` asks for the split words."""
    options = task.get("task_backend_specific_kwargs") or {}
    command = task.get("command")
    if command is not None and options.get("shell", True) is True:
        return ["/bin/sh", "-c", command]
    return [str(task.get("executable")), *(str(a) for a in task.get("arguments") or ())]


class DaskBackend(BaseBackend):
    """Runs tasks on a ``dask.distributed`` cluster.

    ``backend = await DaskBackend(client=client)`` with an asynchronous
    ``Client`` you own (it stays open), or ``await DaskBackend(address)`` /
    ``await DaskBackend()`` to have the backend connect (or start a local
    cluster) and close what it made at shutdown.

    A task's ``task_description`` goes to ``Client.submit`` (``priority``,
    ``retries``, ``resources``, ``workers``...); ``gpus: n`` becomes Dask's
    worker resources ``{"GPU": n}`` and ``cpus`` is dropped (a worker's
    threads are its CPU slots). Executables run on a worker with their
    command through ``/bin/sh -c`` (``cwd``, ``env``, ``shell`` honoured).

    Args:
        address: a scheduler address to connect to (ignored with ``client``).
        name: the backend name.
        client: an asynchronous ``distributed.Client`` to use (not closed).
        client_kwargs: more arguments for the ``Client`` the backend makes
            (e.g. ``n_workers=2`` for a local cluster).
    """

    chains_dependencies = True
    """A function task whose dependencies run here is submitted at once, its
    unfinished dependencies wired as Dask futures (see ``Upstream``): a chain
    runs on the cluster without coming back to the client between links."""

    def __init__(
        self,
        address: str | None = None,
        name: str = "dask",
        *,
        client: Any = None,
        **client_kwargs: Any,
    ) -> None:
        super().__init__(name)
        if client is not None and not getattr(client, "asynchronous", False):
            raise ValueError(
                "DaskBackend needs an asynchronous Client: Client(..., asynchronous=True)"
            )
        self._distributed = _import_distributed()
        self._client: Any = client
        self._owns_client = client is None
        self._address = address
        self._client_kwargs = client_kwargs
        self._prefix = f"asyncflow-{secrets.token_hex(4)}-"  # keys unique per backend
        self._running: dict[Any, TaskDescription] = {}  # Dask future -> task
        self._futures: dict[str, Any] = {}  # uid -> Dask future
        self._stream: Any = None
        self._collector: asyncio.Task[None] | None = None
        self._more = asyncio.Event()  # set when futures join the stream
        self._closed = False

    def __await__(self) -> Any:
        return self._start().__await__()

    async def _start(self) -> DaskBackend:
        if self._client is None:
            self._client = await self._distributed.Client(
                self._address, asynchronous=True, **self._client_kwargs
            )
        return self

    async def __aenter__(self) -> DaskBackend:
        return await self._start()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` tasks are submitted with."""
        return self._client

    # ------------------------------------------------------------------ submission
    async def submit_tasks(self, tasks: list[TaskDescription]) -> None:
        """Hand the tasks to the scheduler; results come back in batches."""
        if self._client is None:
            await self._start()
        report = self._callback
        submitted = []
        wanted = {frozenset(r.items()) for task in tasks if (r := self._resources_of(task))}
        missing = await self._unsatisfiable(wanted) if wanted else set()
        for task in tasks:
            if self._closed:
                task["exception"] = RuntimeError(f"backend {self.name!r} is shut down")
                report(task, STATE_FAILED)
                continue
            resources = self._resources_of(task)
            if resources and frozenset(resources.items()) in missing:
                # Dask would keep it pending for ever: fail it now, saying why.
                task["exception"] = RuntimeError(
                    f"no worker of the Dask cluster has the resources {resources}: start "
                    f'workers with e.g. dask worker <scheduler> --resources "GPU=1"'
                )
                report(task, STATE_FAILED)
                continue
            try:
                future = self._submit(task)
            except Exception as exc:  # noqa: BLE001 - this task fails, the batch goes on
                task["exception"] = exc
                report(task, STATE_FAILED)
                continue
            self._running[future] = task
            self._futures[task["uid"]] = future
            report(task, STATE_RUNNING)
            submitted.append(future)
        if submitted:
            self._track(submitted)

    @staticmethod
    def _resources_of(task: TaskDescription) -> dict[str, Any] | None:
        """The Dask worker resources a task asks for (``gpus: n`` is ``{"GPU": n}``)."""
        options = task.get("task_backend_specific_kwargs") or {}
        resources = options.get("resources")
        if resources is None and options.get("gpus"):
            resources = {"GPU": options["gpus"]}
        return dict(resources) if resources else None

    async def _unsatisfiable(self, wanted: set[frozenset[Any]]) -> set[frozenset[Any]]:
        """The resource sets no connected worker offers."""
        identity = await self._client.scheduler.identity()
        offered = [w.get("resources") or {} for w in identity.get("workers", {}).values()]
        return {
            want
            for want in wanted
            if not any(all(have.get(k, 0) >= v for k, v in want) for have in offered)
        }

    def _submit(self, task: TaskDescription) -> Any:
        options = dict(task.get("task_backend_specific_kwargs") or {})
        resources = self._resources_of(task)
        for key in _ENGINE_KEYS:
            options.pop(key, None)
        if resources:
            options["resources"] = resources
        # A retried task comes again under its uid: a new key, or Dask would
        # hand back the failed future of the first attempt.
        attempt = task.get("attempt", 1)
        suffix = f".{attempt}" if attempt > 1 else ""
        options.setdefault("key", self._prefix + task["uid"] + suffix)
        options.setdefault("pure", False)
        submit = self._client.submit
        if task.get("executable") or task.get("command"):
            td = task.get("task_backend_specific_kwargs") or {}
            prefix = (
                os.path.join(self._work_dir, task["uid"]) if task.get("capture_stdio") else None
            )
            argv = argv_of(task)
            return submit(run_command, argv, td.get("cwd"), td.get("env"), prefix, **options)
        function = task.get("function")
        if function is None:
            raise TypeError(f"task {task['uid']} has neither a function nor a command")
        args = [self._wired(a, task) for a in task.get("args") or ()]
        kwargs = {k: self._wired(v, task) for k, v in (task.get("kwargs") or {}).items()}
        if kwargs:  # bound here: Client.submit keeps its own keyword names
            function = partial(function, **kwargs)
        return submit(function, *args, **options)

    def _wired(self, value: Any, task: TaskDescription) -> Any:
        """An ``Upstream`` dependency as its Dask future (Dask passes its result)."""
        if type(value) is not Upstream:
            return value
        future = self._futures.get(value.uid)
        if future is None:
            raise LookupError(
                f"dependency {value.uid} of {task['uid']} is not running on backend {self.name!r}"
            )
        return future

    def _track(self, futures: list[Any]) -> None:
        if self._stream is None:
            self._stream = self._distributed.as_completed()
        self._stream.update(futures)
        self._more.set()
        if self._collector is None or self._collector.done():
            self._collector = asyncio.get_running_loop().create_task(self._collect())

    async def _collect(self) -> None:
        """Report finished futures, everything finished together in one gather.

        One gather at a time while gathers are quick: the futures that finish
        while one is in flight go together in the next. A gather that takes
        longer than ``_PATIENCE`` gets company, up to ``_GATHERS`` in flight,
        so a large result does not hold the others back. A batch is reported
        when its results are in. Runs until nothing is left to wait for;
        ``_track`` starts it again.
        """
        stream = self._stream
        in_flight: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        try:
            while True:
                while not stream.is_empty():
                    try:
                        first = await stream.__anext__()
                    except StopAsyncIteration:
                        break
                    if in_flight:
                        await asyncio.wait(
                            in_flight, timeout=_PATIENCE, return_when=asyncio.FIRST_COMPLETED
                        )
                    batch = [first, *stream.next_batch(block=False)]
                    task = loop.create_task(self._report_batch(batch))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                    if len(in_flight) >= _GATHERS:
                        await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                if not in_flight:
                    return  # nothing left: checked with no await after it
                # Wait for a gather to end (its reports may submit more tasks:
                # a dependent released) or for futures submitted meanwhile,
                # which must not wait for a slow gather.
                self._more.clear()
                more = loop.create_task(self._more.wait())
                try:
                    await asyncio.wait({*in_flight, more}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    more.cancel()
        except Exception as exc:
            logger.exception("DaskBackend %r lost track of its tasks", self.name)
            for future, lost in list(self._running.items()):
                del self._running[future]
                self._futures.pop(lost["uid"], None)
                lost["exception"] = exc
                self._callback(lost, STATE_FAILED)

    async def _report_batch(self, batch: list[Any]) -> None:
        try:
            await self._report(batch)
        except Exception:
            logger.exception("DaskBackend %r failed to report %d task(s)", self.name, len(batch))

    async def _report(self, batch: list[Any]) -> None:
        finished = [f for f in batch if f.status == "finished"]
        values: list[Any] = []
        if finished:
            try:
                values = await self._client.gather(finished)
            except Exception:  # noqa: BLE001 - lost data: each is reported on its own
                values = []
                for future in finished:
                    try:
                        values.append(await future)
                    except Exception as exc:  # noqa: BLE001
                        values.append(_Lost(exc))
        results = dict(zip(finished, values, strict=True))
        for future in batch:
            task = self._running.pop(future, None)
            if task is None:
                continue
            self._futures.pop(task["uid"], None)
            if future in results:
                self._finished(task, results[future])
            elif future.status == "cancelled":
                self._callback(task, STATE_CANCELED)
            else:
                try:
                    error = await future.exception()
                except Exception as exc:  # noqa: BLE001 - the error itself is lost
                    error = exc
                task["exception"] = error
                self._callback(task, STATE_FAILED)

    def _finished(self, task: TaskDescription, value: Any) -> None:
        if isinstance(value, _Lost):
            task["exception"] = value.error
            self._callback(task, STATE_FAILED)
            return
        if task.get("executable") or task.get("command"):
            out, err, code = value
            task["stdout"], task["stderr"], task["exit_code"] = out, err, code
            task["return_value"] = out
            self._callback(task, STATE_DONE if code == 0 else STATE_FAILED)
            return
        task["return_value"] = value
        self._callback(task, STATE_DONE)

    # ------------------------------------------------------------------ cancellation, shutdown
    async def cancel_task(self, uid: str) -> bool:
        """Cancel the task on the cluster; it is reported ``CANCELED``."""
        future = self._futures.get(uid)
        if future is None:
            return False
        await future.cancel()
        return True

    async def shutdown(self) -> None:
        """Cancel what still runs and close the client the backend made."""
        if self._closed:
            return
        self._closed = True
        futures = list(self._running)
        if futures and self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.cancel(futures)
        if self._collector is not None:
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(self._collector), 5)
            self._collector.cancel()
        if self._owns_client and self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()


class _Lost:
    """A finished future whose result could not be fetched."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error
