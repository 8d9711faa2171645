"""``LocalExecutionBackend``: tasks on this machine, on threads or processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import subprocess
import threading
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from typing import Any, ClassVar

from .. import _check
from ..resources import (
    ResourcePool,
    reset_current_slots,
    set_current_slots,
    slot_indices,
)
from ._base import SUBMITTED, BaseBackend, Submitted, TaskDescription
from ._exec import kill_group, run_executable
from ._reaper import Reaper
from ._runners import CancelHandles, run_coroutine_function, run_pickled

__all__ = ["LocalExecutionBackend"]

logger = logging.getLogger("asyncflow.backends")

# Seconds shutdown waits for the threads of killed executables: their
# processes got SIGKILL, so they end within the output grace of ``_exec``.
EXEC_THREADS_DEADLINE = 5.0

# Times a task lost with a crashed process pool is sent to the new pool.
MAX_RESUBMITS = 3

_PROMPT_HELP = (
    "LocalExecutionBackend cannot answer prompts: register an AI backend and route "
    'prompt tasks to it with @engine.prompt_task(backend="<name>")'
)


class LocalExecutionBackend(BaseBackend):
    """Runs function tasks on a pool and executables as subprocesses.

    ``await LocalExecutionBackend()`` or ``async with LocalExecutionBackend()
    as backend:``. Reports ``RUNNING`` when a task really starts (a pool
    worker picked it up, or its process was spawned), then ``DONE``,
    ``FAILED`` or ``CANCELED``.

    Args:
        executor: a ``ThreadPoolExecutor`` (the default, one is created) or a
            ``ProcessPoolExecutor`` (functions, arguments and results travel
            with cloudpickle, so closures work). Given executors are shut
            down with the backend.
        name: the backend name.
        max_executables: executables running at once (default: CPU count);
            the rest wait in order.
        kill_grace: seconds between SIGTERM and SIGKILL when a running
            executable is cancelled.
    """

    reads_metadata: ClassVar[bool] = False
    """A task's ``metadata`` is never read (declared for this class's
    ``submit_tasks``; a subclass that overrides it does not inherit this):
    the engine makes it when ``engine.components`` reads the description."""

    def __init__(
        self,
        executor: Executor | None = None,
        name: str = "default",
        *,
        max_executables: int | None = None,
        kill_grace: float = 3.0,
        cpus: int | None = None,
        gpus: int | None = None,
    ) -> None:
        super().__init__(name)
        if max_executables is not None:
            _check.count("max_executables", max_executables, minimum=1)
        kill_grace = _check.seconds("kill_grace", kill_grace)
        if cpus is not None:
            _check.count("cpus", cpus)
        if gpus is not None:
            _check.count("gpus", gpus)
        if executor is not None and not isinstance(executor, Executor):
            raise TypeError(
                f"executor must be a concurrent.futures Executor, not {type(executor).__name__}"
            )
        self.resource_pool: ResourcePool | None = None
        workers: int | None = None
        if cpus is not None or gpus is not None:
            self.resource_pool = ResourcePool(
                cpus=cpus if cpus is not None else (os.cpu_count() or 1),
                gpus=gpus or 0,
                name=name,
            )
            # Every task holds a slot: as many workers as slots can all run.
            workers = max(sum(self.resource_pool.capacity.values()), 1)
        default_limit = workers or os.cpu_count() or 1
        limit = max_executables if max_executables is not None else default_limit
        fd_limit = _executables_the_fd_limit_allows()
        if limit > fd_limit:
            # More would fail with EMFILE; these many run, the rest wait.
            logger.info(
                "backend %r: max_executables=%d is more than the open-file limit allows; "
                "running %d at once",
                name,
                limit,
                fd_limit,
            )
            limit = fd_limit
        self._executor: Executor = executor or ThreadPoolExecutor(
            max_workers=max(workers, min(32, (os.cpu_count() or 1) + 4)) if workers else None,
            thread_name_prefix=f"asyncflow-{name}",
        )
        self._processes = isinstance(self._executor, ProcessPoolExecutor)
        self._exec_pool = ThreadPoolExecutor(limit, thread_name_prefix=f"asyncflow-{name}-exec")
        self.max_executables = limit
        self.kill_grace = kill_grace
        # uid -> [concurrent future or None while submitting, task dict]
        self._queued: dict[str, list[Any]] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._exec_futures: set[Future[Any]] = set()  # executables queued or running
        self._handles: CancelHandles = {}
        self._cancelled: set[str] = set()
        # Tasks submitted and not yet reported ended: a cancel of any other
        # uid (one that ended meanwhile) leaves no mark that could cancel a
        # later task of the same uid (the next engine given this backend).
        self._live: set[str] = set()
        self._tasks_by_uid: dict[str, TaskDescription] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._manager: Any = None
        self._started_queue: Any = None
        self._started_ref: bytes | None = None  # the queue's proxy, pickled
        self._started_reader: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._acquiring: dict[str, asyncio.Task[None]] = {}
        self._held: dict[str, list[str]] = {}  # uid -> slots not yet given back
        # Process functions: the worker running each, the pool each was sent
        # to, and the pools broken on purpose by stopping a worker.
        self._pids: dict[str, int] = {}
        self._pool_of: dict[str, Executor] = {}
        self._broken_on_purpose: list[Executor] = []
        self._reaper: Reaper | None = None
        self._resubmits: dict[str, int] = {}
        self._pool_lock = threading.Lock()
        self._crashed: dict[int, dict[int, int]] = {}  # id(broken pool) -> {pid: exit code}

    # ------------------------------------------------------------------ lifecycle
    def __await__(self) -> Any:
        async def _ready() -> LocalExecutionBackend:
            return self

        return _ready().__await__()

    async def __aenter__(self) -> LocalExecutionBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    @property
    def executor(self) -> Executor:
        """The pool function tasks run on."""
        return self._executor

    # ------------------------------------------------------------------ submission
    def submit_tasks(self, tasks: list[TaskDescription]) -> Submitted:
        """Start the tasks (each waits for its slots, then for a free worker).

        Called on the event loop. On a backend that is shut down every task
        fails with a ``RuntimeError`` saying so: its pools are gone, and a
        new engine needs a new backend.
        """
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        pool = self.resource_pool
        live = self._live
        for task in tasks:
            live.add(task["uid"])
            if self._closed:
                task["exception"] = RuntimeError(
                    f"LocalExecutionBackend {self.name!r} is shut down; "
                    "create a new backend for a new engine"
                )
                self._finish(task, "FAILED")
                continue
            if task.get("prompt") is not None:
                task["exception"] = NotImplementedError(_PROMPT_HELP)
                self._finish(task, "FAILED")
            elif pool is not None:
                self._with_slots(pool, task)
            else:
                self._dispatch(task)
        return SUBMITTED

    def _dispatch(self, task: TaskDescription) -> None:
        if task.get("executable"):
            cf = self._submit(self._exec_pool, task, self._run_executable_task, task)
            self._exec_futures.add(cf)
            cf.add_done_callback(self._exec_futures.discard)
        elif self._processes:
            self._submit_to_process(task)
        else:
            self._submit(self._executor, task, self._run_function_task, task)

    # ------------------------------------------------------------------ slots
    def _with_slots(self, pool: ResourcePool, task: TaskDescription) -> None:
        """Dispatch ``task`` once its slots are free; they are freed when it ends."""
        opts = task.get("task_backend_specific_kwargs") or {}
        try:
            cpus = _check.count("cpus", opts.get("cpus", 1))
            gpus = _check.count("gpus", opts.get("gpus", 0))
            priority = _check.count("priority", opts.get("priority", 0), minimum=-(2**63))
            slots = pool.try_acquire(cpus, gpus)
        except (TypeError, ValueError) as exc:  # bad counts, or more than the pool has
            task["exception"] = ValueError(f"task {task['uid']}: {exc}")
            self._finish(task, "FAILED")
            return
        if slots is not None:
            task["slots"] = self._held[task["uid"]] = slots
            self._dispatch(task)
            return
        uid = task["uid"]
        waiter = asyncio.get_running_loop().create_task(
            self._wait_for_slots(pool, task, cpus, gpus, priority)
        )
        self._acquiring[uid] = waiter
        waiter.add_done_callback(lambda _: self._acquiring.pop(uid, None))

    async def _wait_for_slots(
        self, pool: ResourcePool, task: TaskDescription, cpus: int, gpus: int, priority: int
    ) -> None:
        try:
            slots = await pool.acquire_slots(cpus, gpus, priority)
            task["slots"] = self._held[task["uid"]] = slots
        except asyncio.CancelledError:
            self._finish(task, "CANCELED")
            return
        if self._closed or task["uid"] in self._cancelled:
            self._release(task)
            self._finish(task, "CANCELED")
            return
        self._dispatch(task)

    def _release(self, task: TaskDescription) -> None:
        """Free a finished task's slots, on the loop (from any thread)."""
        slots = self._held.pop(task["uid"], None)
        pool = self.resource_pool
        if not slots or pool is None:
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if _on_loop(loop):
            pool.release(slots)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(pool.release, slots)

    def slot_environment(self, task: TaskDescription) -> dict[str, str]:
        """``CUDA_VISIBLE_DEVICES`` for an executable on a GPU-aware backend."""
        if self.resource_pool is None or not self.resource_pool.capacity["gpu"]:
            return {}
        gpus = slot_indices(task.get("slots") or (), "gpu")
        return {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in gpus)}

    def _submit(self, pool: Executor, task: TaskDescription, fn: Any, arg: Any) -> Future[Any]:
        # Registered before submitting: the worker may start (and unregister)
        # before ``submit`` even returns.
        entry: list[Any] = [None, task]
        self._queued[task["uid"]] = entry
        cf = entry[0] = pool.submit(fn, arg)
        return cf

    def _finish(self, task: TaskDescription, state: str) -> None:
        uid = task["uid"]
        if state != "RUNNING":
            self._live.discard(uid)  # before the cancel mark: see cancel_task
            self._queued.pop(uid, None)
            if uid in self._cancelled:
                self._cancelled.discard(uid)
                state = "CANCELED"
        if state == "RUNNING" or self.resource_pool is None:
            self._callback(task, state)
            return
        # The final report and the release of the slots run in one loop
        # callback: whoever awaits the task then finds its slots free, and
        # whoever gets them next is seen to start after this task was seen
        # to end.
        loop = self._loop
        if loop is not None and not loop.is_closed() and not _on_loop(loop):
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._report_and_release, task, state)
                return
        self._report_and_release(task, state)

    def _report_and_release(self, task: TaskDescription, state: str) -> None:
        self._callback(task, state)
        self._release(task)

    def _start(self, task: TaskDescription) -> bool:
        """A worker picked ``task`` up: report RUNNING unless it was cancelled."""
        uid = task["uid"]
        self._queued.pop(uid, None)
        if uid in self._cancelled or self._closed:
            self._finish(task, "CANCELED")
            return False
        self._callback(task, "RUNNING")
        return True

    def _run_function_task(self, task: TaskDescription) -> None:
        if not self._start(task):
            return
        slots = task.get("slots")
        # Without slots the worker's context already says none (every task
        # that set some reset them): nothing to set.
        token = set_current_slots(slots) if slots else None
        try:
            func = task["function"]
            if func is None:
                raise TypeError(f"function task {task['uid']} was sent without a function")
            value = run_coroutine_function(
                func, task.get("args"), task.get("kwargs"), task["uid"], self._handles
            )
        except asyncio.CancelledError:
            self._finish(task, "CANCELED")
        except BaseException as exc:  # noqa: BLE001 - reported as the task's failure
            task["exception"] = exc
            task["return_value"] = None
            self._finish(task, "FAILED")
        else:
            task["return_value"] = value
            self._finish(task, "DONE")
        finally:
            if token is not None:
                reset_current_slots(token)

    def _run_executable_task(self, task: TaskDescription) -> None:
        uid = task["uid"]
        self._queued.pop(uid, None)
        if uid in self._cancelled or self._closed:
            self._finish(task, "CANCELED")
            return
        try:
            code, out, err = run_executable(
                task,
                self._work_dir,
                self._procs,
                lambda: self._callback(task, "RUNNING"),
                self.slot_environment(task),
            )
        except BaseException as exc:  # noqa: BLE001 - e.g. program not found
            task["exception"] = exc
            task["exit_code"] = None
            task["stdout"], task["stderr"] = "", str(exc)
            self._finish(task, "FAILED")
            return
        task["exit_code"] = code
        task["stdout"] = out
        task["stderr"] = err
        task["return_value"] = out
        self._finish(task, "DONE" if code == 0 else "FAILED")

    def _submit_to_process(self, task: TaskDescription) -> None:
        import cloudpickle

        uid = task["uid"]
        try:
            payload = cloudpickle.dumps((task["function"], task.get("args"), task.get("kwargs")))
        except Exception as exc:  # noqa: BLE001 - unpicklable function or arguments
            task["exception"] = TypeError(f"cannot send task {uid} to a process: {exc}")
            self._finish(task, "FAILED")
            return
        self._ensure_started_queue()
        self._tasks_by_uid[uid] = task
        entry: list[Any] = [None, task]
        self._queued[uid] = entry
        pool = self._executor
        self._pool_of[uid] = pool
        slots = task.get("slots") or ()
        try:
            cf = pool.submit(run_pickled, payload, uid, self._started_ref, slots)
        except BrokenProcessPool:  # broke a moment ago; its tasks are not back yet
            with self._pool_lock:
                if self._executor is pool:
                    self._executor = _fresh_pool(pool)
            pool = self._pool_of[uid] = self._executor
            cf = pool.submit(run_pickled, payload, uid, self._started_ref, slots)
        entry[0] = cf
        self._watch_workers(pool)
        cf.add_done_callback(lambda f: self._process_done(task, f, pool))

    def _watch_workers(self, pool: Executor) -> None:
        """Have the reaper end this pool's workers if the engine's process dies."""
        if self._reaper is None:
            return
        # The pool starts workers inside submit(); its table is the only place
        # that names them.
        self._reaper.watch(set(getattr(pool, "_processes", None) or ()))

    def _process_done(
        self, task: TaskDescription, cf: Future[tuple[bool, bytes]], pool: Executor
    ) -> None:
        import cloudpickle

        uid = task["uid"]
        self._pool_of.pop(uid, None)
        exc = None if cf.cancelled() else cf.exception()
        broken = isinstance(exc, BrokenProcessPool) and not self._closed
        if broken and exc is not None and not any(pool is p for p in self._broken_on_purpose):
            self._pool_broke(task, pool, exc)  # a worker crashed
            return
        self._tasks_by_uid.pop(uid, None)
        self._pids.pop(uid, None)
        if cf.cancelled():
            self._finish(task, "CANCELED")
            return
        if broken and uid not in self._cancelled:
            # Another task's worker was stopped, which ends its whole pool:
            # this one runs again on the new pool (at least once, never lost).
            self._submit_to_process(task)
            return
        if exc is not None:  # pickling failed, the task was stopped, or shutdown
            task["exception"] = exc
            self._finish(task, "FAILED")
            return
        ok, blob = cf.result()
        try:
            outcome = cloudpickle.loads(blob)
        except Exception as load_exc:  # noqa: BLE001
            ok, outcome = False, load_exc
        if ok:
            task["return_value"] = outcome
            self._finish(task, "DONE")
        elif isinstance(outcome, asyncio.CancelledError):  # as on a thread
            self._finish(task, "CANCELED")
        else:
            task["exception"] = outcome
            task["return_value"] = None
            self._finish(task, "FAILED")

    def _pool_broke(self, task: TaskDescription, pool: Executor, exc: BaseException) -> None:
        """A worker of ``pool`` died: fail the task it ran, resubmit the others.

        Runs on the pool's management thread, once per task the pool held,
        before it ends the surviving workers.
        """
        uid = task["uid"]
        with self._pool_lock:
            dead = self._crashed.get(id(pool))
            if dead is None:
                dead = self._crashed[id(pool)] = _dead_workers(pool)
                self._take_start_reports()  # who ran what, up to the crash
                if pool is self._executor:
                    self._executor = _fresh_pool(pool)
                    logger.warning(
                        "backend %r: a process-pool worker died (%s); the pool was recreated",
                        self.name,
                        ", ".join(_death(code) for code in dead.values()) or "unknown cause",
                    )
        # Read after the start reports: the worker it was reported running on.
        pid = self._pids.pop(uid, None)
        self._tasks_by_uid.pop(uid, None)
        attempts = self._resubmits.get(uid, 0)
        if pid in dead or attempts >= MAX_RESUBMITS:
            why = _death(dead[pid]) if pid in dead else "its pool broke too often"
            crashed = BrokenProcessPool(
                f"task {uid}: the worker process running it {why}; "
                "the process pool was recreated for the other tasks"
            )
            crashed.__cause__ = exc
            task["exception"] = crashed
            task["return_value"] = None
            self._finish(task, "FAILED")
            return
        self._resubmits[uid] = attempts + 1
        loop = self._loop
        try:
            assert loop is not None
            loop.call_soon_threadsafe(self._resubmit, task)
        except (AssertionError, RuntimeError):  # no loop any more
            self._finish(task, "CANCELED")

    def _resubmit(self, task: TaskDescription) -> None:
        if self._closed or task["uid"] in self._cancelled:
            self._finish(task, "CANCELED")
        else:
            self._submit_to_process(task)

    def _ensure_started_queue(self) -> None:
        if self._started_queue is not None:
            return
        import multiprocessing

        # Helper processes block on pipes they hold themselves: only the
        # reaper ends them if this process is killed.
        try:
            self._reaper = Reaper()
        except OSError as exc:
            logger.warning("no reaper process (%s): a killed engine may leave workers", exc)
        # A manager queue can travel inside a submitted call, so any process
        # pool, even one the user built, can tell us when a task starts.
        self._manager = multiprocessing.Manager()
        if self._reaper is not None:
            self._reaper.watch({self._manager._process.pid})
        self._started_queue = self._manager.Queue()
        # Sent pickled, so a worker opens it inside ``run_pickled``, where a
        # manager already shut down means "cancelled", not a traceback.
        self._started_ref = pickle.dumps(self._started_queue)
        self._started_reader = threading.Thread(
            target=self._read_started, name=f"asyncflow-{self.name}-started", daemon=True
        )
        self._started_reader.start()

    def _read_started(self) -> None:
        queue = self._started_queue
        while True:
            try:
                report = queue.get()
            except (EOFError, OSError):
                return
            if report is None:
                return
            self._started(report)

    def _started(self, report: tuple[str, int]) -> None:
        uid, pid = report
        task = self._tasks_by_uid.get(uid)
        if task is not None:
            self._pids[uid] = pid
            self._queued.pop(uid, None)
            self._callback(task, "RUNNING")

    def _take_start_reports(self) -> None:
        """Read the start reports already sent (the reader thread may lag)."""
        queue = self._started_queue
        while queue is not None:
            try:
                report = queue.get_nowait()
            except Exception:  # noqa: BLE001 - empty, or the manager is gone
                return
            if report is None:  # the reader's stop signal: give it back
                with contextlib.suppress(Exception):
                    queue.put(None)
                return
            self._started(report)

    # ------------------------------------------------------------------ cancellation
    async def cancel_task(self, uid: str) -> bool:
        """Cancel a queued or running task.

        A queued task never starts. A running executable's process group gets
        SIGTERM, then SIGKILL after ``kill_grace`` seconds. A running thread
        function is cancelled at its next ``await``. A function already
        running in a process is left to finish (it is reported CANCELED);
        :meth:`stop_task` stops it with its worker. Returns True when the
        task will not complete normally.
        """
        self._cancelled.add(uid)
        if uid not in self._live:
            # Ended already (or never here): no mark left behind. (Marked
            # first: a task ending on a worker thread now takes the mark off
            # after this test, or is seen ended by it.)
            self._cancelled.discard(uid)
            return False
        waiter = self._acquiring.get(uid)
        if waiter is not None:  # still waiting for its slots
            waiter.cancel()
            return True
        queued = self._queued.get(uid)
        if queued is not None and queued[0] is not None and queued[0].cancel():
            if not (self._processes and not queued[1].get("executable")):
                # The wrapper will never run; process futures report through
                # their done callback instead.
                self._finish(queued[1], "CANCELED")
            return True
        proc = self._procs.get(uid)
        if proc is not None:
            kill_group(proc, signal.SIGTERM)
            loop = asyncio.get_running_loop()
            loop.call_later(self.kill_grace, kill_group, proc, signal.SIGKILL)
            return True
        handle = self._handles.get(uid)
        if handle is not None:
            worker_loop, task = handle
            try:
                worker_loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                return False
            return True
        return False

    async def stop_task(self, uid: str) -> bool:
        """Stop a task by force (the engine's timeouts use it).

        As :meth:`cancel_task`, except that a function running in a process
        pool is stopped with its worker process (SIGKILL). That ends the
        whole pool: a new pool of the same shape takes over, and the
        functions the old one still held are sent to it again (they run at
        least once).
        """
        pid = self._pids.get(uid)
        if pid is not None and uid in self._tasks_by_uid and not self._closed:
            self._cancelled.add(uid)
            self._stop_worker(pid)
            return True
        return await self.cancel_task(uid)

    def _stop_worker(self, pid: int) -> None:
        """Kill a process-pool worker; new tasks go to a fresh pool of the same shape."""
        with self._pool_lock:
            old = self._executor
            if not any(old is p for p in self._broken_on_purpose):
                self._broken_on_purpose.append(old)
                self._executor = _fresh_pool(old)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)

    # ------------------------------------------------------------------ shutdown
    async def shutdown(self) -> None:
        """Stop: queued tasks are cancelled, running executables killed.

        Never blocks the event loop; running thread functions are cancelled at
        their next ``await`` and otherwise left to finish in the background.
        """
        if self._closed:
            return
        self._closed = True
        for uid in list(self._acquiring):
            await self.cancel_task(uid)
        for uid in list(self._queued):
            await self.cancel_task(uid)
        for uid, proc in list(self._procs.items()):
            self._cancelled.add(uid)
            kill_group(proc, signal.SIGKILL)
        for uid, (worker_loop, task) in list(self._handles.items()):
            self._cancelled.add(uid)
            with contextlib.suppress(RuntimeError):  # that loop is already closed
                worker_loop.call_soon_threadsafe(task.cancel)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown_pools)

    def _shutdown_pools(self) -> None:
        self._exec_pool.shutdown(wait=False, cancel_futures=True)
        for broken in self._broken_on_purpose:
            broken.shutdown(wait=False, cancel_futures=True)
        # A thread stuck on a process that will not die must not hold
        # shutdown for ever: wait with a deadline, then say so.
        _, late = wait_futures(list(self._exec_futures), timeout=EXEC_THREADS_DEADLINE)
        if late:
            logger.warning(
                "backend %r: %d executable(s) still not ended %.0f s after SIGKILL; "
                "not waiting for them",
                self.name,
                len(late),
                EXEC_THREADS_DEADLINE,
            )
        # Read before shutdown(), which forgets its worker processes.
        workers = dict(getattr(self._executor, "_processes", None) or {})
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._processes and self._tasks_by_uid:
            # Functions still running in worker processes cannot be cancelled:
            # end the workers rather than wait for them. SIGKILL: a forked
            # worker inherits the engine's SIGTERM handler and would ignore it.
            for proc in workers.values():
                with contextlib.suppress(Exception):  # exited meanwhile
                    proc.kill()
        if self._manager is not None:
            with contextlib.suppress(Exception):  # the manager is already gone
                self._started_queue.put(None)
            if self._started_reader is not None:
                self._started_reader.join(timeout=5)
            self._manager.shutdown()
        if self._reaper is not None:
            self._reaper.close()


# Descriptors an executable holds in this process while it runs (its pipes,
# and those being set up for the next one), and what is left for the rest.
_FDS_PER_EXECUTABLE = 6
_FDS_RESERVED = 64


def _executables_the_fd_limit_allows() -> int:
    """How many executables can run at once within the open-file limit."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return max(1, (soft - _FDS_RESERVED) // _FDS_PER_EXECUTABLE)


def _death(code: int) -> str:
    """How a worker process ended, from its exit code."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} ({signal.strsignal(-code) or 'unknown signal'})"
    return f"exited with code {code}"


def _dead_workers(pool: Executor) -> dict[int, int]:
    """The pid and exit code of each worker of a broken pool that has died."""
    from multiprocessing.connection import wait as wait_for_sentinels

    workers = dict(getattr(pool, "_processes", None) or {})
    ended = set(wait_for_sentinels([p.sentinel for p in workers.values()], timeout=0))
    dead = {}
    for pid, proc in workers.items():
        if proc.sentinel in ended:
            # Its sentinel fires as it exits, a moment before it can be reaped.
            proc.join(1.0)
            code = proc.exitcode if proc.exitcode is not None else -signal.SIGKILL
            if code != 0:  # a worker retired by max_tasks_per_child is no crash
                dead[pid] = code
    return dead


def _fresh_pool(broken: Executor) -> Executor:
    """A new process pool configured like ``broken`` (which is unusable now)."""
    # The pool keeps its settings only in these attributes. The broken pool
    # ends its own workers and threads.
    return ProcessPoolExecutor(
        max_workers=getattr(broken, "_max_workers", None),
        mp_context=getattr(broken, "_mp_context", None),
        initializer=getattr(broken, "_initializer", None),
        initargs=getattr(broken, "_initargs", ()),
    )


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the caller runs on ``loop``'s own thread, inside it."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
