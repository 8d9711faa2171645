"""The API.md behaviours, each run on both built-in backends."""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest

from asyncflow import (
    DependencyFailureError,
    InputFile,
    LocalExecutionBackend,
    NoopExecutionBackend,
    OutputFile,
    WorkflowEngine,
)
from asyncflow.backends import SUBMITTED, BaseBackend, Submitted, TaskDescription, TaskMetadata
from asyncflow.errors import EngineShutdownError, TaskDefinitionError, UnknownBackendError

from .conftest import DESCRIPTION_KEYS, DUMMY, expected, wait_until

# ---------------------------------------------------------------- creation


async def test_engine_built_without_create_says_so_at_decoration() -> None:
    engine = WorkflowEngine()
    with pytest.raises(RuntimeError, match=r"await WorkflowEngine\.create"):

        @engine.function_task
        async def t() -> None:
            return None


async def test_constructor_outside_a_loop_says_to_use_create() -> None:
    def build() -> None:
        WorkflowEngine()

    result: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(build, result))
    thread.start()
    thread.join()
    assert isinstance(result[0], RuntimeError)
    assert "await WorkflowEngine.create" in str(result[0])


def _capture(fn: Any, out: list[BaseException]) -> None:
    try:
        fn()
    except BaseException as exc:
        out.append(exc)


async def test_defaults(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO, logger="asyncflow")
    engine = await WorkflowEngine.create()
    try:
        assert isinstance(engine.backend, LocalExecutionBackend)
        assert "LocalExecutionBackend" in caplog.text
        assert engine.uid.startswith("asyncflow.session.") and len(engine.uid) == 26
        assert engine.backend._work_dir == str(tmp_path / engine.uid)
        assert (tmp_path / engine.uid).is_dir()
    finally:
        await engine.shutdown()
    dry = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path, uid="my.session")
    try:
        assert isinstance(dry.backend, NoopExecutionBackend)
        assert dry.backend._work_dir == str(tmp_path / "my.session")
    finally:
        await dry.shutdown()


async def test_an_empty_session_directory_goes_at_shutdown(tmp_path: Path) -> None:
    # A dry run writes nothing there: no empty directory is left per run.
    dry = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path, uid="dry")

    @dry.function_task
    async def step() -> None:
        return None

    await step()
    assert (tmp_path / "dry").is_dir()
    await dry.shutdown()
    assert not (tmp_path / "dry").exists()
    # One a task wrote into stays, with what it holds.
    local = await WorkflowEngine.create(work_dir=tmp_path, uid="local")

    @local.executable_task(capture_stdio=True)
    async def talk() -> str:
        return "echo kept"

    out = await talk()
    await local.shutdown()
    assert Path(out).read_text() == "kept\n"
    # Backends left running keep their directory, empty or not.
    kept = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path, uid="kept")
    await kept.shutdown(skip_execution_backend=True)
    assert (tmp_path / "kept").is_dir()
    await kept.backend.shutdown()


async def test_duplicate_backend_names_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duplicate backend name 'x'"):
        await WorkflowEngine.create(
            backend=[NoopExecutionBackend("x"), NoopExecutionBackend("x")], work_dir=tmp_path
        )


async def test_async_with_shuts_down(tmp_path: Path) -> None:
    async with await WorkflowEngine.create(dry_run=True, work_dir=tmp_path) as engine:
        assert not engine.is_shutdown
    assert engine.is_shutdown


# ---------------------------------------------------------------- decorators and futures


async def test_decorators_bare_and_with_options(engine: WorkflowEngine) -> None:
    @engine.function_task
    async def bare(x: int) -> int:
        return x + 1

    @engine.function_task(capture_stdio=False, service=False)
    async def with_opts(x: int) -> int:
        return x + 2

    assert bare.__name__ == "bare"
    assert await bare(1) == expected(engine, 2)
    assert await with_opts(1) == expected(engine, 3)


async def test_sync_function_is_rejected_with_its_name(engine: WorkflowEngine) -> None:
    def not_async() -> None:
        pass

    for decorator in (engine.function_task, engine.executable_task, engine.prompt_task):
        with pytest.raises(TypeError, match="not_async"):
            decorator(not_async)
    with pytest.raises(TaskDefinitionError, match="not_async"):
        engine.block(not_async)


async def test_future_attributes_and_unique_uids(engine: WorkflowEngine) -> None:
    @engine.function_task
    async def t() -> None:
        return None

    @engine.block
    async def b() -> int:
        return 1

    futs = [t() for _ in range(5)]
    blk = b()
    assert isinstance(futs[0], asyncio.Future)
    assert futs[0].id == "000001" and futs[0].uid == "task.000001"
    assert blk.uid.startswith("block.")
    assert len({f.uid for f in [*futs, blk]}) == 6
    assert futs[0].state in ("PENDING", "RUNNING")
    await asyncio.gather(*futs, blk)
    assert {f.state for f in futs} == {"DONE"}
    done, _ = await asyncio.wait(futs)
    assert len(done) == 5


# ---------------------------------------------------------------- dependencies


async def test_dependencies_everywhere_in_arguments(local_engine: WorkflowEngine) -> None:
    engine = local_engine

    @engine.function_task
    async def val(x: int) -> int:
        return x

    @engine.function_task
    async def combine(a: Any, b: Any = None, *, c: Any = None) -> Any:
        return a, b, c

    a, b, c = val(1), val(2), val(3)
    out = await combine([a, (b, {c})], b={"k": [c]}, c={"deep": {"deeper": (a,)}})
    assert out == ([1, (2, {3})], {"k": [3]}, {"deep": {"deeper": (1,)}})
    desc = engine.components[f"task.{int(a.id) + 3:06d}"]["description"]
    assert [d["uid"] for d in desc["metadata"]["dependencies"]] == [a.uid, b.uid, c.uid]
    assert set(desc["metadata"]["dependencies"][0]) == {"uid", "name"}
    deps = desc["metadata"]["dependencies"]
    expected_deps = tuple({"uid": f.uid, "name": "val"} for f in (a, b, c))
    assert deps == expected_deps and deps[1:] == expected_deps[1:] and len(deps) == 3
    assert repr(deps) == repr(expected_deps)


async def test_dependent_runs_after_its_dependencies(local_engine: WorkflowEngine) -> None:
    engine = local_engine
    order: list[str] = []

    @engine.function_task
    async def step(name: str, *deps: Any) -> str:
        await asyncio.sleep(0.01 if name == "slow" else 0)
        order.append(name)
        return name

    slow = step("slow")
    fast = step("fast")
    last = step("last", slow, fast, slow)
    assert await last == "last"
    assert order.index("last") > order.index("slow")


async def test_same_future_twice_is_one_dependency(engine: WorkflowEngine) -> None:
    @engine.function_task
    async def t(*args: Any) -> int:
        return len(args)

    a = t()
    b = t(a, a, [a])
    await b
    assert len(engine.components[b.uid]["description"]["metadata"]["dependencies"]) == 1


async def test_plain_asyncio_future_is_awaited_like_a_dependency(engine: WorkflowEngine) -> None:
    @engine.function_task
    async def t(x: Any) -> Any:
        return x

    loop = asyncio.get_running_loop()
    outside: asyncio.Future[int] = loop.create_future()
    fut = t(outside)
    await asyncio.sleep(0)
    assert fut.state == "PENDING"
    outside.set_result(41)
    assert await fut == expected(engine, 41)
    failing: asyncio.Future[int] = loop.create_future()
    dependent = t(failing)
    failing.set_exception(KeyError("outside"))
    with pytest.raises(DependencyFailureError):
        await dependent


async def test_executable_body_sees_resolved_values(engine: WorkflowEngine) -> None:
    seen: list[Any] = []

    @engine.function_task
    async def produce() -> str:
        return "hello"

    @engine.executable_task
    async def show(value: Any) -> str:
        seen.append(value)
        return f"echo {value}"

    @engine.prompt_task(backend=engine.backend.name)
    async def ask(value: Any) -> str:
        seen.append(value)
        return f"say {value}"

    p = produce()
    out = await show(p)
    word = expected(engine, "hello")
    assert seen == [word]
    assert out == ("Dummy Output" if word == DUMMY else "hello\n")
    if isinstance(engine.backend, NoopExecutionBackend):
        assert await ask(p) == "Dummy Prompt Output"
        assert seen[-1] == DUMMY


async def test_bad_executable_and_prompt_bodies(engine: WorkflowEngine) -> None:
    @engine.executable_task
    async def empty() -> str:
        return "   "

    @engine.executable_task
    async def nothing() -> None:
        return None

    @engine.executable_task
    async def number() -> int:
        return 5

    @engine.prompt_task
    async def blank() -> str:
        return ""

    @engine.function_task
    async def fine() -> int:
        return 1

    with pytest.raises(ValueError, match="must return a non-empty command string"):
        await empty()
    with pytest.raises(ValueError, match="must return a non-empty command string"):
        await nothing()
    with pytest.raises(TypeError, match="number"):
        await number()
    with pytest.raises(ValueError, match="must return a non-empty string prompt"):
        await blank()
    assert await fine() == expected(engine, 1)  # the engine goes on


async def test_local_backend_refuses_prompts_helpfully(local_engine: WorkflowEngine) -> None:
    @local_engine.prompt_task
    async def ask() -> str:
        return "why?"

    with pytest.raises(NotImplementedError, match="LocalExecutionBackend") as exc:
        await ask()
    assert '@engine.prompt_task(backend="<name>")' in str(exc.value)


# ---------------------------------------------------------------- failures


async def test_failure_propagates_with_a_chain(local_engine: WorkflowEngine) -> None:
    engine = local_engine

    @engine.function_task
    async def explode() -> None:
        raise KeyError("root")

    @engine.function_task
    async def after(x: Any) -> Any:
        return x

    a = explode()
    b = after(a)
    c = after(b)
    with pytest.raises(KeyError):
        await a
    with pytest.raises(DependencyFailureError) as b_err:
        await b
    assert str(b_err.value) == "Cannot execute 'after' due to dependency failure"
    assert b_err.value.failed_dependencies == ["explode"]
    assert isinstance(b_err.value.root_cause, KeyError)
    assert b_err.value.__cause__ is b_err.value.root_cause
    with pytest.raises(DependencyFailureError) as c_err:
        await c
    assert c_err.value.root_cause is b_err.value
    assert isinstance(c_err.value.original_exception, KeyError)
    # A task registered after the failure fails at once.
    late = after(a)
    with pytest.raises(DependencyFailureError):
        await late
    assert [f.state for f in (a, b, c, late)] == ["FAILED"] * 4


async def test_every_failed_dependency_is_named_in_argument_order(
    local_engine: WorkflowEngine,
) -> None:
    engine = local_engine
    gate = threading.Event()

    @engine.function_task
    async def first() -> None:
        raise ValueError("first")

    @engine.function_task
    async def second() -> None:
        # Fails only after "first" has failed (a worker thread: block it).
        await asyncio.to_thread(gate.wait, 30)
        raise KeyError("second")

    @engine.function_task
    async def fine() -> int:
        return 1

    @engine.function_task
    async def combine(*xs: Any) -> Any:
        return xs

    a, b, ok = first(), second(), fine()
    joined = combine(ok, b, x=a)  # argument order: ok, b, then a (a keyword)
    with pytest.raises(ValueError):
        await a
    # One failed, one still running: the dependent waits for it.
    assert not joined.done()
    gate.set()
    with pytest.raises(DependencyFailureError) as err:
        await joined
    assert err.value.failed_dependencies == ["second", "first"]
    assert isinstance(err.value.root_cause, KeyError)
    assert err.value.__cause__ is err.value.root_cause
    # A task registered after both failed names both at once.
    late = combine(a, b)
    with pytest.raises(DependencyFailureError) as late_err:
        await late
    assert late_err.value.failed_dependencies == ["first", "second"]


# ---------------------------------------------------------------- cancellation


async def test_cancel_pending_task_and_its_dependents(engine: WorkflowEngine) -> None:
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[int] = loop.create_future()

    @engine.function_task
    async def t(*deps: Any) -> int:
        return 1

    waiting = t(gate)
    child = t(waiting)
    grandchild = t([child])
    assert waiting.cancel() is True
    assert waiting.cancelled() and waiting.state == "CANCELLED"
    with pytest.raises(asyncio.CancelledError):
        await grandchild
    assert child.cancelled() and grandchild.state == "CANCELLED"
    assert waiting.cancel() is False
    gate.set_result(0)
    assert await t() == expected(engine, 1)


async def test_cancel_block_cancels_members_recursively(engine: WorkflowEngine) -> None:
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[int] = loop.create_future()
    started = asyncio.Event()
    members: list[Any] = []

    @engine.function_task
    async def member(x: Any) -> Any:
        return x

    @engine.block
    async def inner() -> Any:
        members.append(member(gate))
        return await members[-1]

    @engine.block
    async def outer() -> Any:
        nested = inner()
        members.append(nested)
        members.append(member(gate))
        started.set()
        return await asyncio.gather(*members)

    blk = outer()
    await started.wait()
    await wait_until(lambda: len(members) == 3)
    assert blk.cancel() is True
    assert blk.cancelled()
    for m in members:
        with pytest.raises(asyncio.CancelledError):
            await m
    assert {m.state for m in members} == {"CANCELLED"}


# ---------------------------------------------------------------- blocks and workflows


async def test_nested_blocks_and_inter_block_dependencies(engine: WorkflowEngine) -> None:
    @engine.function_task
    async def add(a: Any, b: Any) -> Any:
        return a + b if isinstance(a, int) else a

    @engine.block
    async def inner(x: Any) -> Any:
        return await add(x, 1)

    @engine.block
    async def outer(x: Any) -> Any:
        return await inner(await add(x, 10))

    first = outer(0)
    second = outer(first)  # a block depending on a block
    assert await second == expected(engine, 22)
    assert engine.components[first.uid]["type"] == "block"


async def test_workflow_scope_ids_and_names(engine: WorkflowEngine) -> None:
    @engine.function_task
    async def t() -> None:
        return None

    async def branch(tag: str) -> Any:
        async with engine.workflow_scope(name="simulate") as wf:
            assert wf.startswith("wf-") and len(wf) == 11
            futs = await asyncio.gather(asyncio.create_task(_call(t)), _call(t))
            return wf, futs

    (wf_a, futs_a), (wf_b, futs_b) = await asyncio.gather(branch("a"), branch("b"))
    assert wf_a != wf_b
    for wf, futs in ((wf_a, futs_a), (wf_b, futs_b)):
        for f in futs:
            desc = engine.components[f.uid]["description"]
            assert desc["workflow_id"] == wf
            assert desc["metadata"]["workflow_name"] == "simulate"

    async with engine.workflow_scope("outer", name="train") as outer:
        assert outer == "outer"
        async with engine.workflow_scope("inner") as inner:
            nested = t()
        back = t()
        override = t(workflow_id="explicit")
    outside = t()
    assert engine.components[nested.uid]["description"]["workflow_id"] == inner
    assert engine.components[back.uid]["description"]["workflow_id"] == "outer"
    assert engine.components[override.uid]["description"]["workflow_id"] == "explicit"
    assert engine.components[outside.uid]["description"]["workflow_id"] is None
    await asyncio.gather(nested, back, override, outside)


async def _call(task: Any) -> Any:
    return task()


async def test_block_members_get_the_block_uid_as_workflow_id(engine: WorkflowEngine) -> None:
    @engine.function_task
    async def t() -> None:
        return None

    inside: list[Any] = []

    @engine.block
    async def blk() -> None:
        inside.append(t())
        await inside[-1]

    async with engine.workflow_scope("wf-1", name="analyze"):
        b = blk()
    await b
    assert engine.components[b.uid]["description"]["workflow_id"] == "wf-1"
    assert engine.components[inside[0].uid]["description"]["workflow_id"] == b.uid


async def test_two_engines_never_see_each_others_scopes(tmp_path: Path) -> None:
    one = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    two = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    try:

        @two.function_task
        async def t() -> None:
            return None

        async with one.workflow_scope("only-one"):
            f = t()
        await f
        assert two.components[f.uid]["description"]["workflow_id"] is None
    finally:
        await one.shutdown()
        await two.shutdown()


# ---------------------------------------------------------------- task_description


async def test_task_description_merge_and_engine_kwargs(engine: WorkflowEngine) -> None:
    seen: list[Any] = []

    @engine.function_task
    async def t(x: int, task_description: dict[str, Any] | None = None, **kw: Any) -> Any:
        seen.append((task_description, kw))
        return x

    @engine.function_task
    async def with_default(task_description: dict[str, Any] = {"cpus": 2, "a": 1}) -> None:  # noqa: B006
        return None

    f = t(1, task_description={"cpus": 4}, workflow_id="w")
    g = with_default(task_description={"a": 9})
    await asyncio.gather(f, g)
    desc = engine.components[f.uid]["description"]
    assert desc["task_backend_specific_kwargs"] == {"cpus": 4}
    assert desc["workflow_id"] == "w"
    assert engine.components[g.uid]["description"]["task_backend_specific_kwargs"] == {
        "cpus": 2,
        "a": 9,
    }
    if not isinstance(engine.backend, NoopExecutionBackend):
        assert seen == [(None, {})]  # never passed to the function


async def test_non_dict_task_description_fails_that_task_only(engine: WorkflowEngine) -> None:
    @engine.function_task
    async def t() -> int:
        return 1

    bad = t(task_description=["cpus", 2])
    with pytest.raises(TypeError, match="task_description for 't' must be a dict, not list"):
        await bad
    assert await t() == expected(engine, 1)

    with pytest.raises(TypeError, match="task_description default"):

        @engine.function_task
        async def bad_default(task_description: Any = "x") -> None:
            return None


# ---------------------------------------------------------------- backends and routing


async def test_routing_to_named_backends(tmp_path: Path) -> None:
    local = await LocalExecutionBackend(name="cpu")
    ai = NoopExecutionBackend(name="ai")
    engine = await WorkflowEngine.create(backend=[local, ai], work_dir=tmp_path)
    try:
        assert engine.backend is local

        @engine.function_task
        async def real() -> str:
            return "ran"

        @engine.function_task(backend="ai")
        async def dry() -> str:
            return "ran"

        @engine.prompt_task(backend="ai")
        async def ask(x: str) -> str:
            return f"summarise {x}"

        @engine.function_task(backend="nope")
        async def lost() -> None:
            return None

        results = await asyncio.gather(real(), dry(), ask(real()))
        assert results == ["ran", "Dummy Output", "Dummy Prompt Output"]
        with pytest.raises(UnknownBackendError, match="unknown backend 'nope'") as exc:
            await lost()
        assert "'cpu'" in str(exc.value) and "'ai'" in str(exc.value)
        assert isinstance(exc.value, ValueError)
        assert await real() == "ran"  # the engine goes on
        desc = engine.components[lost().uid]["description"]
        assert desc["target_backend"] == "nope"
        assert local._work_dir == ai._work_dir == str(tmp_path / engine.uid)
    finally:
        await engine.shutdown()


async def test_cancel_goes_to_the_backend_that_runs_the_task(tmp_path: Path) -> None:
    default = NoopExecutionBackend(name="default")
    other = await LocalExecutionBackend(name="other")
    engine = await WorkflowEngine.create(backend=[default, other], work_dir=tmp_path)
    started = threading.Event()
    try:

        @engine.function_task(backend="other")
        async def long() -> None:
            started.set()
            await asyncio.sleep(30)

        fut = long()
        await wait_until(started.is_set)
        await wait_until(lambda: fut.state == "RUNNING")
        fut.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fut
    finally:
        await engine.shutdown()


# ---------------------------------------------------------------- files


class LinkingBackend(NoopExecutionBackend):
    supports_implicit_data_linking = True
    supports_explicit_data_linking = True

    def __init__(self) -> None:
        super().__init__("linking")
        self.links: list[tuple[Any, ...]] = []

    def link_implicit_data_deps(self, src_task: Any, dst_task: Any) -> None:
        self.links.append(("implicit", src_task["uid"], dst_task["uid"]))

    def link_explicit_data_deps(
        self,
        src_task: Any = None,
        dst_task: Any = None,
        file_name: Any = None,
        file_path: Any = None,
    ) -> None:
        src = src_task["uid"] if src_task else None
        self.links.append(("explicit", src, dst_task["uid"], file_name, file_path))


async def test_file_dependencies_and_data_linking_hooks(tmp_path: Path) -> None:
    backend = LinkingBackend()
    engine = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
    try:

        @engine.function_task
        async def make(out: Any) -> None:
            return None

        @engine.function_task
        async def use(*args: Any) -> None:
            return None

        producer = make(OutputFile("result.h5"))
        other = make(OutputFile("other.txt"))
        consumer = use(producer, other, InputFile("result.h5"), InputFile("/data/raw.csv"))
        await consumer
        meta = engine.components[consumer.uid]["description"]["metadata"]
        assert meta["input_files"] == ("result.h5", "/data/raw.csv")
        assert engine.components[producer.uid]["description"]["metadata"]["output_files"] == (
            "result.h5",
        )
        assert sorted(backend.links, key=str) == sorted(
            [
                ("explicit", producer.uid, consumer.uid, "result.h5", None),
                ("explicit", None, consumer.uid, "raw.csv", "/data/raw.csv"),
                ("implicit", other.uid, consumer.uid),
            ],
            key=str,
        )
    finally:
        await engine.shutdown()


async def test_no_linking_hooks_without_support(tmp_path: Path) -> None:
    class Plain(NoopExecutionBackend):
        def link_implicit_data_deps(self, *a: Any) -> None:
            raise AssertionError("must not be called")

        link_explicit_data_deps = link_implicit_data_deps  # type: ignore[assignment]

    engine = await WorkflowEngine.create(backend=Plain(), work_dir=tmp_path)
    try:

        @engine.function_task
        async def t(*a: Any) -> None:
            return None

        await t(t(OutputFile("x")), InputFile("x"))
    finally:
        await engine.shutdown()


# ---------------------------------------------------------------- introspection


async def test_components_registry(engine: WorkflowEngine) -> None:
    @engine.function_task(capture_stdio=True, service=True)
    async def t(x: int) -> int:
        return x

    f = t(3)
    entry = engine.components[f.uid]
    assert entry["type"] == "task" and entry["future"] is f
    desc = entry["description"]
    assert set(desc) >= DESCRIPTION_KEYS
    assert desc["capture_stdio"] is True and desc["is_service"] is True
    assert desc["target_backend"] is None and desc["name"] == "t"
    assert "capture_stdio" not in desc["task_backend_specific_kwargs"]
    await f
    assert f.uid in engine.components and len(engine.components) == 1


async def test_descriptions_use_only_declared_keys(engine: WorkflowEngine) -> None:
    declared = TaskDescription.__required_keys__ | TaskDescription.__optional_keys__
    assert declared >= DESCRIPTION_KEYS  # every key API.md promises is declared

    @engine.function_task
    async def f(x: int) -> int:
        return x

    @engine.executable_task
    async def e(x: int) -> str:
        return f"echo {x}"

    @engine.block
    async def b(x: int) -> int:
        return await f(x)

    futures = [f(1), e(f(2)), b(3)]
    await asyncio.gather(*futures)
    for uid in engine.components:
        desc = engine.components[uid]["description"]
        assert set(desc) <= declared, set(desc) - declared
        assert set(desc["metadata"]) <= TaskMetadata.__optional_keys__


async def test_metadata_of_a_task_without_dependencies_is_shared(
    engine: WorkflowEngine,
) -> None:
    @engine.function_task
    async def f(*deps: Any) -> None:
        return None

    first, second = f(), f()
    third = f(first)
    await asyncio.gather(first, second, third)
    meta = [engine.components[t.uid]["description"]["metadata"] for t in (first, second, third)]
    assert meta[0] == {
        "dependencies": (),
        "input_files": (),
        "output_files": (),
        "workflow_name": None,
    }
    assert meta[0] is meta[1]  # one dict for every such task
    assert pickle.loads(pickle.dumps(meta[0])) == meta[0]  # a backend may pickle it
    assert [d["uid"] for d in meta[2]["dependencies"]] == [first.uid]  # its own


async def test_a_plain_submit_tasks_may_return_submitted(tmp_path: Path) -> None:
    class PlainBackend(BaseBackend):
        """Hands tasks over in a plain method, as the built-in backends do."""

        calls = 0

        def submit_tasks(self, tasks: list[TaskDescription]) -> Submitted:
            type(self).calls += 1
            for task in tasks:
                task["return_value"] = task["args"][0] * 2
                self._callback(task, "DONE")
            return SUBMITTED

        async def cancel_task(self, uid: str) -> bool:
            return False

        async def shutdown(self) -> None:
            return None

    backend = PlainBackend()
    engine = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
    try:

        @engine.function_task
        async def double(x: int) -> int:
            return x

        assert await double(double(3)) == 12
        assert PlainBackend.calls == 2
    finally:
        await engine.shutdown()
    # Awaiting it does nothing, so code written for async submit_tasks works.
    assert await SUBMITTED is None
    assert await NoopExecutionBackend().submit_tasks([]) is None
    local = await LocalExecutionBackend()
    try:
        assert await local.submit_tasks([]) is None
    finally:
        await local.shutdown()


async def test_integration_engines_validate_their_graph(engine: WorkflowEngine) -> None:
    # Set by tests/integration/conftest.py: every transition is checked.
    assert engine._graph.validating


# ---------------------------------------------------------------- callbacks from threads


async def test_callback_from_a_foreign_thread_wakes_waiters_at_once(tmp_path: Path) -> None:
    class ThreadedBackend(NoopExecutionBackend):
        """Reports every task from its own thread, like many HPC backends."""

        async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
            def report() -> None:
                for task in tasks:
                    task["return_value"] = task["args"][0]
                    self._callback(task, "RUNNING")
                    self._callback(task, "DONE")

            threading.Thread(target=report).start()

    engine = await WorkflowEngine.create(backend=ThreadedBackend(), work_dir=tmp_path)
    try:

        @engine.function_task
        async def t(x: int, *deps: Any) -> int:
            return x

        # A chain: every hop needs a wake-up from the foreign thread.
        fut = t(0)
        for i in range(1, 200):
            fut = t(i, fut)
        assert await asyncio.wait_for(fut, timeout=10) == 199
    finally:
        await engine.shutdown()


# ---------------------------------------------------------------- shutdown


async def test_shutdown_is_idempotent_concurrent_and_fails_fast_afterwards(
    engine: WorkflowEngine,
) -> None:
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[int] = loop.create_future()

    @engine.function_task
    async def t(*deps: Any) -> int:
        return 1

    pending = t(gate)
    await asyncio.gather(engine.shutdown(), engine.shutdown())
    await engine.shutdown()
    assert pending.cancelled()
    after = t()
    assert after.done()
    with pytest.raises(EngineShutdownError, match="engine is shut down"):
        await after
    with pytest.raises(RuntimeError, match="engine is shut down"):
        await t(pending)
    gate.cancel()


async def test_signal_handlers_only_in_main_thread(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    import signal

    loop = asyncio.get_running_loop()
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    try:
        handle = loop._signal_handlers.get(signal.SIGTERM)  # type: ignore[attr-defined]
        assert handle is not None
    finally:
        await engine.shutdown()
    assert signal.SIGTERM not in loop._signal_handlers  # type: ignore[attr-defined]

    def in_thread(out: list[Any]) -> None:
        async def main() -> None:
            eng = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
            await eng.shutdown()

        try:
            asyncio.run(main())
        except BaseException as exc:
            out.append(exc)

    errors: list[Any] = []
    caplog.set_level(logging.WARNING, logger="asyncflow")
    thread = threading.Thread(target=in_thread, args=(errors,))
    thread.start()
    thread.join()
    assert errors == []
    assert "no signal handlers installed" in caplog.text


async def test_sigterm_shuts_the_engine_down(tmp_path: Path) -> None:
    import signal

    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[int] = loop.create_future()

    @engine.function_task
    async def t(*deps: Any) -> int:
        return 1

    waiting = t(gate)
    os.kill(os.getpid(), signal.SIGTERM)
    await wait_until(lambda: engine.is_shutdown and waiting.done())
    await engine.shutdown()
    assert waiting.cancelled()
    gate.cancel()


class DuckBackend:
    """A backend written against the duck-typed interface only (API.md section 2)."""

    def __init__(self, name: str, style: str) -> None:
        self.name = name
        self.style = style
        self.seen_task: list[Any] = []

    def register_callback(self, callback: Any) -> None:
        self.callback = callback

    def get_task_states_map(self) -> dict[str, str]:
        return {}

    async def cancel_task(self, uid: str) -> bool:
        return False

    async def shutdown(self) -> None:
        return None

    def _finish(self, tasks: list[dict[str, Any]]) -> None:
        for task in tasks:
            task["return_value"] = f"{self.name}:{task['args'][0]}"
            self.callback(task, "DONE")

    async def _submit(self, tasks: list[dict[str, Any]]) -> None:
        self.seen_task.append(asyncio.current_task())
        if self.style == "timeout":
            async with asyncio.timeout(5):
                await asyncio.sleep(0)
        elif self.style == "taskgroup":
            async with asyncio.TaskGroup() as group:
                group.create_task(asyncio.sleep(0))
        self._finish(tasks)

    def submit_tasks(self, tasks: list[dict[str, Any]]) -> Any:
        if self.style == "future":  # an awaitable that is not a coroutine
            return asyncio.ensure_future(self._submit(tasks))
        return self._submit(tasks)


async def test_foreign_backends_submit_inside_a_task_of_their_own(tmp_path: Path) -> None:
    styles = ["timeout", "taskgroup", "future"]
    backends = [DuckBackend(style, style) for style in styles]
    engine = await WorkflowEngine.create(backend=backends, work_dir=tmp_path)
    try:
        futures = []
        for style in styles:

            @engine.function_task(backend=style)
            async def where(i: int) -> str:
                return "not run here"

            futures += [where(1), where(2)]
        results = await asyncio.wait_for(asyncio.gather(*futures), 10)
        assert results == [f"{s}:{i}" for s in styles for i in (1, 2)]
        for backend in backends:
            assert backend.seen_task and all(t is not None for t in backend.seen_task)
    finally:
        await engine.shutdown()


async def test_a_body_that_cannot_take_its_arguments_fails_its_task_alone(
    tmp_path: Path,
) -> None:
    """An executable or prompt body is called by the engine with the resolved
    arguments: a TypeError there fails that task only (it escaped, left the
    task pending for ever and dropped the release of its siblings)."""
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    try:

        @engine.function_task
        async def produce() -> str:
            return "hello"

        @engine.executable_task
        async def echo(word: str) -> str:
            return f"echo {word}"

        @engine.prompt_task
        async def ask(word: str) -> str:
            return f"say {word}"

        @engine.function_task
        async def consume(word: str) -> str:
            return word

        p = produce()
        bad = [echo(p, "extra"), ask(p, "extra"), echo("a", "b")]  # type: ignore[call-arg]
        good = consume(p)
        for fut in bad:
            with pytest.raises(TypeError, match="positional argument"):
                await asyncio.wait_for(fut, 30)
        assert await asyncio.wait_for(good, 30) == "Dummy Output"
    finally:
        await engine.shutdown()
