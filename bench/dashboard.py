"""``python -m bench.dashboard``: the Dash app on a 100,000-task checkpoint file.

Generates the file once with the no-op backend (``WorkflowEngine.create(
dry_run=True)``), then measures, each repetition in a fresh process:

- load: ``open_source(file).poll()``, the whole file read (a finished file
  by the compiled scanner into columns, its task records made when a view
  first asks for them: the utilisation figure below pays that);
- the campaign timeline, utilisation and slot lanes figures: build time, and their size
  as the JSON Dash sends to the browser;
- the peak RSS of that process;
- the baseline: a bare ``orjson.loads`` of every line of the same file,
  keeping nothing, in the same process before the rest. Reading the file
  and drawing the campaign timeline is judged by its ratio to it (target:
  at most 1.5x).

With ``--browser`` it also starts the real ``asyncflow dashboard`` and opens
it in headless Chromium: the time until the server answers (it reads the
file first), the time from opening the page until the timeline is drawn,
and the bytes of the figure response as the browser received them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TYPES = ("simulate", "analyze", "train", "evaluate")
TARGET_SECONDS = 5.0
TARGET_RATIO = 1.5  # load + campaign timeline, against the bare orjson pass


def bare_pass(path: Path) -> float:
    """Seconds to ``orjson.loads`` every line of ``path``, keeping nothing."""
    import orjson

    started = time.perf_counter()
    with open(path, "rb") as f:
        for line in f:
            orjson.loads(line)
    return time.perf_counter() - started


def _rss_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


async def _generate(directory: Path, tasks: int, per_workflow: int) -> Path:
    from asyncflow import WorkflowEngine

    engine = await WorkflowEngine.create(dry_run=True, work_dir=directory)
    tel = await engine.start_telemetry(checkpoint_path=directory)

    @engine.function_task
    async def step(*deps: Any) -> None:
        return None

    pending: list[Any] = []
    for w in range(tasks // per_workflow):
        wf_type = TYPES[w % len(TYPES)]
        gpus = {"gpus": 0 if wf_type == "evaluate" else 1}
        async with engine.workflow_scope(name=wf_type):
            previous = step(task_description=gpus)
            pending.append(previous)
            for _ in range(per_workflow - 1):
                previous = step(previous, task_description=gpus)
                pending.append(previous)
        if len(pending) >= 5_000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    await engine.shutdown()
    assert tel.checkpoint_file is not None
    return tel.checkpoint_file


def generate(directory: Path, tasks: int, per_workflow: int) -> Path:
    """The checkpoint file of ``tasks`` no-op tasks in chains of ``per_workflow`` (cached)."""
    from asyncflow.telemetry.names import CHECKPOINT_LAYOUT

    # Per layout: a file cached by an older version is not measured again.
    marker = directory / f"tasks-{tasks}-per-{per_workflow}-layout-{CHECKPOINT_LAYOUT}.path"
    if marker.exists() and Path(marker.read_text()).exists():
        return Path(marker.read_text())
    directory.mkdir(parents=True, exist_ok=True)
    print(f"generating {tasks} tasks with the no-op backend...", file=sys.stderr)
    path = asyncio.run(_generate(directory, tasks, per_workflow))
    marker.write_text(str(path))
    return path


def measure(path: Path) -> dict[str, Any]:
    """One repetition (run in a fresh process): load, build, serialise."""
    import plotly.io as pio

    from asyncflow.dashboard import figures, open_source

    rss_start = _rss_mb()
    bare = bare_pass(path)
    started = time.perf_counter()
    run = open_source(path).poll()
    load = time.perf_counter() - started
    out: dict[str, Any] = {
        "tasks": len(run.tasks),
        "load_s": load,
        "rss_start_mb": rss_start,
        "bare_s": bare,
    }
    for name, build in (
        ("campaign", figures.campaign_figure),
        ("utilisation", figures.utilisation_figure),
        # A view added later: after the peak RSS of the others is taken, so
        # that figure stays comparable with earlier runs.
        *((("slots", figures.slots_figure),) if hasattr(figures, "slots_figure") else ()),
    ):
        if name == "slots":
            out["peak_rss_mb"] = _rss_mb()
        started = time.perf_counter()
        fig = build(run)
        out[f"{name}_build_s"] = time.perf_counter() - started
        started = time.perf_counter()
        out[f"{name}_bytes"] = len(pio.to_json(fig, validate=False))
        out[f"{name}_json_s"] = time.perf_counter() - started
    out.setdefault("peak_rss_mb", _rss_mb())
    out["peak_rss_all_mb"] = _rss_mb()
    return out


def _child(path: Path) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-m", "bench.dashboard", "--measure", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def browser(path: Path) -> dict[str, Any]:
    """The real server and a real headless Chromium: ready, first render, bytes received.

    Chromium is started first, as a user's browser is already open; the clock
    starts when the server process does.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--enable-unsafe-swiftshader",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    try:
        started = time.perf_counter()
        server = subprocess.Popen(
            [sys.executable, "-m", "asyncflow.cli", "dashboard", str(path), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=5):
                        break
                except OSError:
                    if time.perf_counter() - started > 300 or server.poll() is not None:
                        raise RuntimeError("the dashboard did not start") from None
                    time.sleep(0.05)
            ready = time.perf_counter() - started
            opened = time.perf_counter()
            driver.get(url)
            drawn = (
                "var p = document.querySelector('#campaign-graph .js-plotly-plot');"
                "return !!(p && p._fullData && p._fullData.some(t => t.type === 'scattergl'));"
            )
            while not driver.execute_script(drawn):
                if time.perf_counter() - opened > 300:
                    raise RuntimeError("the timeline was not drawn")
                time.sleep(0.02)
            done = time.perf_counter()
            sizes = driver.execute_script(
                "return performance.getEntriesByType('resource')"
                ".filter(e => e.name.includes('_dash-update-component'))"
                ".map(e => e.encodedBodySize);"
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        driver.quit()
    return {
        "ready_s": ready,
        "render_s": done - opened,
        "total_s": done - started,
        "figure_response_bytes": max(sizes),
    }


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'measure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {k.ljust(width)} | {v} |" for k, v in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Generate (once), measure, print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--per-workflow", type=int, default=10, help="tasks per workflow chain")
    parser.add_argument("--file", type=Path, help="measure this checkpoint file instead")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "asyncflow-bench-dashboard"
    )
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per measurement")
    parser.add_argument("--browser", action="store_true", help="also time the real app in Chromium")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    path = args.file or generate(args.cache, args.tasks, args.per_workflow)
    size_mb = path.stat().st_size / 2**20
    results = [_child(path) for _ in range(args.repeat)]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in results)

    first_render = med("load_s") + med("campaign_build_s") + med("campaign_json_s")
    # Per process, then the median: both sides of the ratio saw the same machine.
    ratio = statistics.median(
        (r["load_s"] + r["campaign_build_s"] + r["campaign_json_s"]) / r["bare_s"] for r in results
    )
    rows = [
        ("checkpoint file", f"{path.name}, {size_mb:.0f} MB, {results[0]['tasks']} tasks"),
        ("baseline: bare orjson.loads of every line", f"{med('bare_s'):.2f} s"),
        ("load (the whole file read)", f"{med('load_s'):.2f} s"),
        ("campaign timeline figure: build", f"{med('campaign_build_s'):.2f} s"),
        (
            "campaign timeline figure: JSON",
            f"{med('campaign_json_s'):.3f} s, {med('campaign_bytes') / 1e6:.2f} MB",
        ),
        ("utilisation figure: build", f"{med('utilisation_build_s'):.2f} s"),
        (
            "utilisation figure: JSON",
            f"{med('utilisation_json_s'):.3f} s, {med('utilisation_bytes') / 1e6:.3f} MB",
        ),
        *(
            [
                ("slot lanes figure: build", f"{med('slots_build_s'):.2f} s"),
                (
                    "slot lanes figure: JSON",
                    f"{med('slots_json_s'):.3f} s, {med('slots_bytes') / 1e6:.3f} MB",
                ),
            ]
            if "slots_build_s" in results[0]
            else []
        ),
        ("load + timeline ready to send", f"{first_render:.2f} s (target < {TARGET_SECONDS:g} s)"),
        ("... against the bare orjson pass", f"{ratio:.2f}x (target <= {TARGET_RATIO:g}x)"),
        (
            "peak RSS (process)",
            f"{med('peak_rss_mb'):.0f} MB (at start {med('rss_start_mb'):.0f} MB)",
        ),
        *(
            [("peak RSS with the slot lanes too", f"{med('peak_rss_all_mb'):.0f} MB")]
            if "slots_build_s" in results[0]
            else []
        ),
    ]
    if args.browser:
        seen = [browser(path) for _ in range(args.repeat)]
        ready = statistics.median(s["ready_s"] for s in seen)
        render = statistics.median(s["render_s"] for s in seen)
        total = statistics.median(s["total_s"] for s in seen)
        rows += [
            ("browser: server start until it answers", f"{ready:.2f} s"),
            ("browser: page open until timeline drawn", f"{render:.2f} s"),
            ("browser: server start until timeline drawn", f"{total:.2f} s"),
            (
                "browser: largest callback response",
                f"{max(s['figure_response_bytes'] for s in seen) / 1e6:.2f} MB",
            ),
        ]
    print(f"median of {args.repeat} fresh processes\n")
    print(_table(rows))
    verdict = "PASS" if first_render < TARGET_SECONDS else "MISSED"
    print(f"\ntarget: load + campaign timeline under {TARGET_SECONDS:g} s: {verdict}")
    verdict = "PASS" if ratio <= TARGET_RATIO else "MISSED"
    print(
        f"target: load + campaign timeline at most {TARGET_RATIO:g}x a bare orjson pass: {verdict}"
    )
    if args.browser:
        verdict = "PASS" if total < TARGET_SECONDS else "MISSED"
        print(f"target: in Chromium, server start to drawn under {TARGET_SECONDS:g} s: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
