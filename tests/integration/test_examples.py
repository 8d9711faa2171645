"""Every example runs to completion; the campaign keeps its promises."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from asyncflow.telemetry import names, read_checkpoint

from ..support.otlp_receiver import GrpcReceiver, refused_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run_example(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def started_at(span: dict[str, Any]) -> int:
    return int(next(e["time_ns"] for e in span["events"] if e["name"] == "started"))


def max_overlap(intervals: list[tuple[int, int, int]]) -> int:
    points = sorted(
        [(start, count) for start, _, count in intervals]
        + [(end, -count) for _, end, count in intervals]
    )
    running = peak = 0
    for _, delta in points:
        running += delta
        peak = max(peak, running)
    return peak


def test_campaign_example(tmp_path: Path) -> None:
    out = tmp_path / "campaign"
    done = run_example(
        "01-workflow_grouping.py", "--out", str(out), "--duration", "0.02", "--gpus", "2"
    )
    assert done.returncode == 0, done.stderr
    assert "checkpoint file:" in done.stdout and f"asyncflow dashboard {out}" in done.stdout
    (checkpoint,) = out.glob("*.telemetry.jsonl")
    spans = list(read_checkpoint(checkpoint, ["span"]))
    workflows = [s for s in spans if s["attributes"][names.LEVEL] == names.LEVEL_WORKFLOW]
    assert Counter(s["attributes"][names.WORKFLOW_NAME] for s in workflows) == {
        "simulate": 4,
        "analyze": 4,
        "train": 8,
        "evaluate": 8,
    }
    assert all(s["attributes"][names.WORKFLOW_RESULT] == "completed" for s in workflows)
    tasks = [s for s in spans if s["attributes"][names.LEVEL] == names.LEVEL_TASK]
    # The GPU busy slots never exceed the capacity (2 here).
    runs = []
    for span in tasks:
        started = started_at(span)
        gpus = [s for s in span["attributes"][names.TASK_SLOTS] if s.startswith("gpu")]
        runs.append((started, span["end_ns"], len(gpus)))
    assert max_overlap(runs) <= 2
    assert max(count for *_, count in runs) == 1
    # analyze/evaluate instances never start before the instance they depend on ended.
    by_wf: dict[str, list[dict[str, Any]]] = {}
    for span in tasks:
        by_wf.setdefault(span["attributes"][names.WORKFLOW_ID], []).append(span)
    for downstream, upstream in (("analyze", "simulate"), ("evaluate", "train")):
        count = 4 if downstream == "analyze" else 8
        for i in range(count):
            up_end = max(s["end_ns"] for s in by_wf[f"{upstream}-{i:03d}"])
            first_start = min(s["start_ns"] for s in by_wf[f"{downstream}-{i:03d}"])
            down_started = min(started_at(s) for s in by_wf[f"{downstream}-{i:03d}"])
            assert down_started >= up_end, (downstream, i)
            assert first_start <= up_end  # registered early, waiting on its dependency
    events = Counter(r["name"] for r in read_checkpoint(checkpoint, ["event"]))
    assert events["campaign.ResourceAssigned"] == 24
    metrics = list(read_checkpoint(checkpoint, ["metric"]))
    assert metrics[0]["resource_slots"]["node/gpu/idle"] == 2


def test_campaign_example_resumes_from_its_out_directory(tmp_path: Path) -> None:
    out = tmp_path / "campaign"
    args = ("01-workflow_grouping.py", "--out", str(out), "--duration", "0.02", "--resume")
    first = run_example(*args)
    assert first.returncode == 0, first.stderr
    # No terminal: the progress reporter writes log lines, ending with the total.
    assert "asyncflow progress: 48/48 finished, 48 done, 0 cached" in first.stderr
    (out / "first").mkdir()
    for checkpoint in out.glob("*.telemetry.jsonl"):
        checkpoint.rename(out / "first" / checkpoint.name)
    second = run_example(*args)
    assert second.returncode == 0, second.stderr
    assert "48/48 finished, 0 done, 48 cached" in second.stderr
    (checkpoint,) = out.glob("*.telemetry.jsonl")
    tasks = [
        s
        for s in read_checkpoint(checkpoint, ["span"])
        if s["attributes"][names.LEVEL] == names.LEVEL_TASK
    ]
    assert len(tasks) == 48
    assert {s["attributes"][names.TASK_CACHE] for s in tasks} == {names.CACHE_HIT}


def test_campaign_example_checks_its_arguments() -> None:
    bad = run_example("01-workflow_grouping.py", "--gpus", "0")
    assert bad.returncode == 2 and "--gpus must be at least 1" in bad.stderr
    bad = run_example("01-workflow_grouping.py", "--scale", "0")
    assert bad.returncode == 2 and "--scale must be at least 1" in bad.stderr


# ---------------------------------------------------------------------- the short examples
# Each runs in a subprocess, in its own directory (the engine creates its
# session directory in the current one), with small sizes.


def example_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "ASYNCFLOW_PROMETHEUS_PORT"):
        if name not in extra:
            env.pop(name, None)
    return env


def launch(
    cwd: Path, script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<script>`` from ``cwd`` and return what it did."""
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or example_env(),
        cwd=cwd,
        check=False,
    )


def run_in(
    cwd: Path, script: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<script>`` from ``cwd``; it must exit 0."""
    done = launch(cwd, script, *args, timeout=timeout)
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stderr}"
    return done


def load_example(script: str) -> ModuleType:
    """Import ``examples/<script>`` from its path, as a module (its main block does not run)."""
    spec = importlib.util.spec_from_file_location(f"example_{script[:2]}", EXAMPLES / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def needs_dask() -> None:
    if os.environ.get("CI") != "true":  # in CI the 'hpc' extra is installed: never skip there
        pytest.importorskip("rhapsody", reason="needs the 'hpc' extra (rhapsody-py[dask])")
        pytest.importorskip("distributed", reason="needs the 'hpc' extra (rhapsody-py[dask])")


def test_every_example_is_short_and_says_how_to_run_it() -> None:
    scripts = sorted(p for p in EXAMPLES.glob("[0-9][0-9]-*.py") if p.name >= "02")
    assert [p.name[:2] for p in scripts] == [f"{n:02d}" for n in range(2, 10)]
    for path in scripts:
        module = load_example(path.name)
        assert module.__doc__ and f"examples/{path.name}" in module.__doc__, path.name
        assert 30 <= len(path.read_text().splitlines()) <= 95, path.name


def test_first_dag_example(tmp_path: Path) -> None:
    out = run_in(tmp_path, "02-first_dag.py").stdout
    assert "report says: sum=15 squares=55" in out
    assert "task.000004 is DONE" in out
    assert "Cannot execute 'publish' due to dependency failure" in out
    assert "chain: ['publish', 'calibrate', 'parse']" in out
    assert "ValueError(\"could not convert string to float: 'not a number'\")" in out
    assert re.search(r"ls failed with exit code [12]: ls: .*/no/such/directory", out)


def test_concurrent_workflows_example(tmp_path: Path) -> None:
    out = run_in(
        tmp_path, "03-concurrent_workflows.py", "--samples", "3", "--seconds", "0.3"
    ).stdout
    assert out.count("'sample':") == 3 and "'workflow': 'qc-nightly', 'checks': 3" in out
    assert "tasks per workflow type: {'qc': 3, 'pipeline': 9}; 4 instances" in out
    assert re.search(r"4 workflows in [0-9.]+ s", out), out  # speed is the benchmark's business


def test_blocks_example(tmp_path: Path) -> None:
    out = run_in(tmp_path, "04-blocks.py", timeout=30).stdout  # its long block would take 60 s
    assert "block.000001: [1.0, 2.0, 3.0, 4.0]" in out
    assert "block.000002: [2.0, 3.0, 4.0]" in out
    assert "block.000001 directly holds ['block.000003', 'block.000004'" in out
    assert "after cancel: CANCELLED, members ['CANCELLED', 'CANCELLED', 'CANCELLED']" in out


def test_ai_backend_routing_example(tmp_path: Path) -> None:
    out = run_in(tmp_path, "05-ai_backend_routing.py").stdout
    assert "advice='Dummy Prompt Output'" in out
    assert "simulate  ran on hpc (the default)" in out and "interpret ran on ai" in out
    assert "the prompt sent: A run at 300.0 K ended with energy -450.0." in out
    assert "unrouted: NotImplementedError: LocalExecutionBackend" in out
    assert "misrouted: UnknownBackendError: " in out and "'hpc', 'ai'" in out
    assert "still serving: {'temperature': 310.0" in out


def dask_summary(out: str) -> tuple[float, set[str]]:
    found = re.search(r"pi is about ([0-9.]+), from \d+ tasks in worker processes \[(.*)\]", out)
    assert found, out
    return float(found.group(1)), set(found.group(2).split(", "))


@pytest.mark.dask
def test_dask_example_on_a_local_cluster(tmp_path: Path) -> None:
    needs_dask()
    done = run_in(tmp_path, "06-dask_cluster.py", "--workers", "2", "--tasks", "4")
    pi, workers = dask_summary(done.stdout)
    assert 2.9 < pi < 3.4
    client = re.search(r"this process is (\d+)", done.stdout)
    assert client, done.stdout
    assert client.group(1) not in workers  # the tasks ran in the cluster's worker processes


@pytest.mark.dask
async def test_dask_example_on_a_given_scheduler(tmp_path: Path) -> None:
    needs_dask()
    from distributed import Client, LocalCluster

    async with LocalCluster(
        asynchronous=True,
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        # The scheduler runs on this loop: wait for the example without blocking it.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLES / "06-dask_cluster.py"),
            "--scheduler",
            cluster.scheduler_address,
            "--tasks",
            "3",
            cwd=tmp_path,
            env=example_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, stderr.decode()
        _, workers = dask_summary(stdout.decode())
        assert workers == {str(w.process.pid) for w in cluster.workers.values()}
        async with Client(cluster, asynchronous=True) as client:  # the example left it running
            assert await client.submit(pow, 2, 5) == 32


def test_dask_example_checks_the_scheduler_address(tmp_path: Path) -> None:
    for bad in ("http://head:8786", "tcp://head", "tcp://head:port"):
        done = launch(tmp_path, "06-dask_cluster.py", "--scheduler", bad)
        assert done.returncode == 2, done.stderr
        assert "--scheduler must look like tcp://HOST:PORT" in done.stderr


HPC_EXAMPLES = {
    # script: (a step its help shows, a bad argument, the error it gives, what is missing)
    "07-radical_pilot.py": (
        "radical-stack",
        ["--resource", "frontier"],
        "--resource must look like SITE.MACHINE, not 'frontier'",
        "radical.pilot",
    ),
    "08-dragon.py": (
        "dragon examples/08-dragon.py --nodes 2",
        ["--nodes", "0"],
        "--nodes must be at least 1",
        "dragon",
    ),
}


@pytest.mark.parametrize("script", sorted(HPC_EXAMPLES))
def test_hpc_examples_import_and_check_their_arguments(
    script: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    step, bad_args, message, _ = HPC_EXAMPLES[script]
    module = load_example(script)
    assert step in (module.__doc__ or "")
    args = module.parse_args(["--tasks", "3", "--dry-run"])
    assert args.tasks == 3 and args.dry_run is True
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(bad_args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err

    shown = launch(tmp_path, script, "--help")
    assert shown.returncode == 0 and step in shown.stdout
    rejected = launch(tmp_path, script, *bad_args)
    assert rejected.returncode == 2 and message in rejected.stderr
    dry = launch(tmp_path, script, "--dry-run", "--tasks", "3")
    assert dry.returncode == 0, dry.stderr
    assert "Dummy Output" in dry.stdout


@pytest.mark.parametrize("script", sorted(HPC_EXAMPLES))
def test_hpc_examples_say_what_is_missing(script: str, tmp_path: Path) -> None:
    runtime = HPC_EXAMPLES[script][3]
    if importlib.util.find_spec(runtime.split(".")[0]) is not None:
        pytest.skip(f"{runtime} is installed here: the example would really start it")
    done = launch(tmp_path, script)
    assert done.returncode == 1
    assert "is not installed: pip install 'rhapsody-py[" in done.stderr


def telemetry_warnings(stderr: str) -> list[str]:
    # asyncio debug mode (on in this suite) reports slow loop steps as warnings.
    return [
        line
        for line in stderr.splitlines()
        if line.startswith(("WARNING", "ERROR")) and not line.startswith("WARNING asyncio")
    ]


def test_forward_telemetry_example_reaches_the_collector(tmp_path: Path) -> None:
    with GrpcReceiver() as receiver:
        done = launch(
            tmp_path,
            "09-forward_telemetry.py",
            "--service-name",
            "examples-smoke",
            "--replicas",
            "3",
            env=example_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint),
        )
        assert done.returncode == 0, done.stderr
        assert telemetry_warnings(done.stderr) == []
        receiver.wait_for(lambda: any(s["name"] == "session" for s in receiver.spans()))
        spans = receiver.spans()
        assert {s["resource"]["service.name"] for s in spans} == {"examples-smoke"}
        assert sum(s["name"] == "task simulate" for s in spans) == 3
    assert f"forwarded to {receiver.endpoint} as service 'examples-smoke'" in done.stdout
    count = re.search(
        r'asyncflow_task_duration_seconds_count\{.*task_name="simulate".*\} (\S+)', done.stdout
    )
    assert count and float(count.group(1)) == 3.0, done.stdout


def test_forward_telemetry_example_without_a_collector(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{refused_port()}"
    done = run_in(
        tmp_path,
        "09-forward_telemetry.py",
        "--endpoint",
        endpoint,
        "--replicas",
        "3",
        "--checkpoint-dir",
        str(tmp_path / "runs"),
    )
    assert "result 1.5" in done.stdout  # 0 + 0.5 + 1.0
    warnings = telemetry_warnings(done.stderr)
    assert len(warnings) == 1 and endpoint in warnings[0], done.stderr
    (checkpoint,) = (tmp_path / "runs").glob("*.telemetry.jsonl")
    spans = [s["name"] for s in read_checkpoint(checkpoint, ["span"])]
    assert spans.count("task simulate") == 3  # the file has the run, whatever the collector
