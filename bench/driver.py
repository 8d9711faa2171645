"""The driver behind ``python -m bench``: plan the cells, run the rounds, print the tables.

Each (configuration, workload, N) measurement runs in a fresh child process
(``python -m bench.child``), so its peak RSS is its own. A round measures
every cell once; inside a round the configurations of a cell run back to
back, in an order rotated from round to round, so machine noise hits the
baseline and the engine alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .report import render, summarise
from .workloads import ALL_CONFIGS, DASK_WORKLOADS, DEFAULT_WORKLOADS, WORKLOADS, configs_for

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SIZES = (1_000, 10_000, 100_000)
DEFAULT_EXEC_SIZES = (1_000, 10_000)
DEFAULT_TELEMETRY_SIZES = (10_000, 100_000)
QUICK_SIZES = (1_000, 5_000)
QUICK_EXEC_SIZES = (200,)
QUICK_TELEMETRY_SIZES = (5_000,)
DEFAULT_DASK_SIZES = (2_000, 10_000)
QUICK_DASK_SIZES = (500,)


@dataclass(frozen=True)
class Cell:
    """One workload at one size, and how many repetitions each child runs."""

    workload: str
    n: int
    repeat: int


def default_repeat(workload: str, n: int) -> int:
    """More repetitions for small N, whose times are short and noisy."""
    if workload in DASK_WORKLOADS:
        return 1  # each repetition starts its own cluster; rounds repeat it
    if workload == "exec":
        return max(1, min(10, 5_000 // n))
    return max(1, min(30, 50_000 // n))


def _csv(kind: type, choices: tuple[str, ...] | None = None) -> Any:
    def parse(text: str) -> list[Any]:
        items = [kind(part.strip().replace("_", "")) for part in text.split(",") if part.strip()]
        if choices is not None:
            unknown = [i for i in items if i not in choices]
            if unknown:
                raise argparse.ArgumentTypeError(
                    f"unknown {', '.join(unknown)}; choose from {', '.join(choices)}"
                )
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        return items

    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Engine overhead against plain asyncio and a plain thread pool.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: N=1,000 and 5,000 (exec 200), 2 rounds, at most 3 repetitions",
    )
    p.add_argument(
        "--workloads",
        type=_csv(str, WORKLOADS),
        default=list(DEFAULT_WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)} "
        f"(default: all but {','.join(DASK_WORKLOADS)})",
    )
    p.add_argument(
        "--sizes", type=_csv(int), help="N for the DAG workloads (default 1000,10000,100000)"
    )
    p.add_argument("--exec-sizes", type=_csv(int), help="N for exec (default 1000,10000)")
    p.add_argument(
        "--telemetry-sizes", type=_csv(int), help="N for telemetry (default 10000,100000)"
    )
    p.add_argument(
        "--dask-sizes", type=_csv(int), help="N for the dask-* workloads (default 2000,10000)"
    )
    p.add_argument(
        "--configs",
        type=_csv(str, ALL_CONFIGS),
        help="comma-separated subset of the configurations (ratios need their baseline)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        help="repetitions per child (default: 50,000/N, 1 to 30; exec 5,000/N)",
    )
    p.add_argument("--rounds", type=int, help="rounds (default 5; --quick 2)")
    p.add_argument(
        "--json", type=Path, metavar="PATH", help="also save every measurement and the summary"
    )
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before a child is killed")
    return p


def plan(args: argparse.Namespace) -> list[Cell]:
    """The cells of one round, small sizes first."""
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    exec_sizes = args.exec_sizes or (QUICK_EXEC_SIZES if args.quick else DEFAULT_EXEC_SIZES)
    tel_sizes = args.telemetry_sizes or (
        QUICK_TELEMETRY_SIZES if args.quick else DEFAULT_TELEMETRY_SIZES
    )
    dask_sizes = args.dask_sizes or (QUICK_DASK_SIZES if args.quick else DEFAULT_DASK_SIZES)
    cells = []
    for workload in args.workloads:
        chosen = {"exec": exec_sizes, "telemetry": tel_sizes}.get(workload, sizes)
        if workload in DASK_WORKLOADS:
            chosen = dask_sizes
        for n in chosen:
            if n < 1:
                raise SystemExit(f"bench: N must be positive, not {n}")
            repeat = args.repeat or default_repeat(workload, n)
            if args.quick and not args.repeat:
                repeat = min(repeat, 3)
            cells.append(Cell(workload, n, repeat))
    cells.sort(key=lambda c: (c.n, WORKLOADS.index(c.workload)))
    return cells


def run_child(config: str, cell: Cell, timeout: float) -> dict[str, Any]:
    """Measure one configuration of ``cell`` in a fresh process.

    Raises:
        RuntimeError: the child failed its checks, crashed or timed out.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "bench.child", config, cell.workload, str(cell.n)]
    argv += ["--repeat", str(cell.repeat)]
    try:
        proc = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"exit code {proc.returncode}\n{proc.stderr.strip()}")
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"no output\n{proc.stderr.strip()}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _revision() -> str:
    """``asyncflow <version>``, plus the git commit (``+dirty`` if asyncflow/ has edits)."""
    from asyncflow import __version__

    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "asyncflow"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        head = dirty = ""
    return f"asyncflow {__version__}" + (f", git {head}{'+dirty' if dirty else ''}" if head else "")


def _header(cells: list[Cell], rounds: int, revision: str) -> str:
    reps = ", ".join(f"{c.workload} {c.n:,}: {c.repeat}" for c in cells)
    return "\n".join(
        [
            f"asyncflow benchmark ({revision})",
            f"python {platform.python_version()} ({platform.python_implementation()}), "
            f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
            f"rounds: {rounds}; repetitions per child: {reps}",
            "",
        ]
    )


Errors = dict[tuple[str, int, str], str]


def run_rounds(
    cells: list[Cell], rounds: int, only: list[str] | None, timeout: float
) -> tuple[list[dict[str, Any]], Errors]:
    """Measure every cell ``rounds`` times; a configuration whose child fails is dropped."""
    measurements: list[dict[str, Any]] = []
    errors: Errors = {}
    for round_index in range(rounds):
        for cell in cells:
            configs = [c for c in configs_for(cell.workload) if not only or c in only]
            if not configs:
                continue
            shift = round_index % len(configs)
            for config in configs[shift:] + configs[:shift]:
                key = (cell.workload, cell.n, config)
                if key in errors:
                    continue
                label = f"{cell.workload:<11} N={cell.n:<7,} {config:<12}"
                t0 = time.perf_counter()
                try:
                    result = run_child(config, cell, timeout)
                except RuntimeError as exc:
                    errors[key] = str(exc)
                    _progress(f"ERROR {label}: {exc}")
                    continue
                result["round"] = round_index
                measurements.append(result)
                _progress(
                    f"[round {round_index + 1}/{rounds}] {label} "
                    f"median {statistics.median(result['seconds']):.4f} s "
                    f"({time.perf_counter() - t0:.1f} s with start-up)"
                )
    return measurements, errors


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 even when targets are missed, 1 when a measurement failed."""
    args = _parser().parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    if rounds < 1 or (args.repeat is not None and args.repeat < 1):
        raise SystemExit("bench: --rounds and --repeat must be at least 1")
    cells = plan(args)
    revision = _revision()
    print(_header(cells, rounds, revision), flush=True)

    started = time.perf_counter()
    measurements, errors = run_rounds(cells, rounds, args.configs, args.timeout)
    wall = time.perf_counter() - started

    summary = summarise(measurements)
    print(render(summary))
    print(f"\nWall time of the run: {wall:.0f} s.")
    incomplete = [m for m in measurements if m.get("spans_missing")]
    if incomplete:
        # The engine's figures stand; the checkpoint writer did not keep up.
        print(f"\nINCOMPLETE CHECKPOINT FILES ({len(incomplete)}): the writer dropped records")
        for m in incomplete:
            print(
                f"  {m['workload']} N={m['n']:,} {m['config']} round {m['round'] + 1}: "
                f"{m['spans_missing']:,} spans missing"
            )
    if errors:
        print(f"\nFAILED MEASUREMENTS ({len(errors)}), missing from the tables:")
        for (workload, n, config), message in errors.items():
            print(f"  {workload} N={n:,} {config}: {message.splitlines()[-1]}")
    if args.json:
        meta = {
            "revision": revision,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "argv": sys.argv[1:] if argv is None else argv,
            "rounds": rounds,
            "cells": [asdict(c) for c in cells],
            "wall_seconds": wall,
        }
        payload = {
            "meta": meta,
            "measurements": measurements,
            "summary": summary.as_dict(),
            "errors": {"/".join(map(str, k)): v for k, v in errors.items()},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"Saved {args.json}.")
    return 1 if errors or incomplete else 0
