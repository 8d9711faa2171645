"""``python -m bench.campaign``: the aggregated campaign figure alone, cold and warm.

Each repetition runs in a fresh process, as ``python -m bench.dashboard``
does (``plotly.io`` and ``asyncflow.dashboard.figures`` imported first): the
file is read into records and their columns (``timeline_of``, timed apart),
then the campaign figure is built from those columns, as it is for a run
whose reader gave them precomputed, and serialised (``plotly.io.to_json``).
The first figure of the process is the cold one (plotly builds its
validators then); the warm time is the median of the next ``--warm``. The
CPU time of build and JSON is printed too: on a shared machine it moves
less than the wall-clock time.
The JSON's SHA-256 is printed so that two versions of the code can be
checked to draw the same figure.

    python -m bench.campaign                     # the bench's 100,000-task file
    python -m bench.campaign --file F --repeat 5 --warm 5
    python -m bench.campaign --profile           # cProfile of a warm figure
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def measure(path: Path, warm: int, profile: bool) -> dict[str, Any]:
    """One repetition, in a fresh process."""
    import plotly.io as pio

    from asyncflow.dashboard import _timeline, figures, open_source
    from asyncflow.dashboard._columns import timeline_of

    run = open_source(path).poll()
    started = time.perf_counter()
    tl = timeline_of(run)
    columns = time.perf_counter() - started
    # The figure from columns at hand, as a reader that makes them gives them.
    _timeline.timeline_of = lambda _run: tl  # type: ignore[attr-defined]

    def once() -> tuple[float, float, float, str]:
        started, cpu = time.perf_counter(), time.process_time()
        fig = figures.campaign_figure(run)
        built = time.perf_counter()
        text = pio.to_json(fig, validate=False)
        return built - started, time.perf_counter() - built, time.process_time() - cpu, text

    cold_build, cold_json, cold_cpu, text = once()
    warm_runs = [once() for _ in range(warm)]
    out: dict[str, Any] = {
        "tasks": len(run.tasks),
        "columns_s": columns,
        "cold_build_s": cold_build,
        "cold_json_s": cold_json,
        "cold_cpu_s": cold_cpu,
        "warm_build_s": statistics.median(r[0] for r in warm_runs) if warm_runs else None,
        "warm_json_s": statistics.median(r[1] for r in warm_runs) if warm_runs else None,
        "warm_cpu_s": statistics.median(r[2] for r in warm_runs) if warm_runs else None,
        "bytes": len(text),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    if profile:
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(figures.campaign_figure, run)
        report = io.StringIO()
        pstats.Stats(profiler, stream=report).sort_stats("cumulative").print_stats(40)
        print(report.getvalue(), file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure in fresh processes, print medians."""
    parser = argparse.ArgumentParser(prog="python -m bench.campaign", description=__doc__)
    parser.add_argument("--file", type=Path, help="a checkpoint file (default: the bench's)")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes")
    parser.add_argument("--warm", type=int, default=5, help="figures after the first, per process")
    parser.add_argument("--profile", action="store_true", help="print a warm figure's profile")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.warm, args.profile)))
        return 0
    path = args.file
    if path is None:
        cache = Path(tempfile.gettempdir()) / "asyncflow-bench-dashboard"
        marker = cache / "tasks-100000-per-10-layout-2.path"
        if not marker.exists():
            sys.exit("no file: run `python -m bench.dashboard --repeat 1` once, or give --file")
        path = Path(marker.read_text())
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "bench.campaign", "--measure", str(path)]
    command += ["--warm", str(args.warm)] + (["--profile"] if args.profile else [])
    results = []
    for _ in range(args.repeat):
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=ROOT, check=True, timeout=600
        )
        sys.stderr.write(done.stderr)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))

    def med(key: str) -> float:
        return statistics.median(r[key] for r in results)

    print(f"{path.name}: {results[0]['tasks']} tasks, median of {args.repeat} fresh processes")
    print(f"columns (timeline_of, not in the figure): {med('columns_s'):.3f} s")
    print(
        f"cold figure: build {med('cold_build_s'):.3f} s + JSON {med('cold_json_s'):.3f} s"
        f" (CPU {med('cold_cpu_s'):.3f} s in all)"
    )
    if args.warm:
        print(
            f"warm figure: build {med('warm_build_s'):.3f} s + JSON {med('warm_json_s'):.3f} s"
            f" (CPU {med('warm_cpu_s'):.3f} s in all)"
        )
    print(f"JSON: {med('bytes') / 1e6:.3f} MB, sha256 {results[0]['sha256'][:16]}")
    if len({r["sha256"] for r in results}) != 1:
        print("the JSON differed between processes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
