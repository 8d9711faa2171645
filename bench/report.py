"""Statistics, targets and tables over the measurements of a run (driver side).

A measurement is what one child printed, plus the round it ran in. Times are
medians over every repetition of every round. A ratio is computed per round
(the engine's median time over the same round's baseline median) and the
median of those per-round ratios is reported, so noise that hits one round
hits both sides of its ratio.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .workloads import (
    ALL_CONFIGS,
    ASYNCIO,
    CONFIGS,
    DAG_WORKLOADS,
    DASK_NATIVE,
    DASK_WORKLOADS,
    ENGINE_DASK,
    LOCAL,
    NOOP,
    POOL,
    TELEMETRY_CONFIGS,
    THREADS,
    WORKLOADS,
    task_count,
)

__all__ = ["Summary", "render", "summarise"]

SCALING_FACTOR = 1.2  # an engine's time(big)/time(small) vs plain asyncio's
RSS_FACTOR = 2.0  # an engine's peak RSS at the largest independent run vs plain asyncio's
TEL_BYTES_PER_TASK = 1024  # peak RSS growth with full telemetry, per finished task
FILE_BYTES_PER_TASK = 1024  # the checkpoint file, per task
WRITER_RSS_MB = 100  # the checkpoint writer process's peak RSS, whatever N


@dataclass(frozen=True)
class Target:
    """An upper bound on the time ratio of one configuration to its baseline."""

    limit: float
    label: str


# (configuration, workload) -> target; checked at every measured size.
TARGETS: dict[tuple[str, str], Target] = {
    # Issue 14: the dry-run engine within 1.5x plain asyncio, the local
    # backend no slower than a plain thread pool, on every DAG shape.
    **{(NOOP, w): Target(1.5, "<= 1.5") for w in DAG_WORKLOADS},
    **{(LOCAL, w): Target(1.0, "<= 1") for w in DAG_WORKLOADS},
    # Throughput at least 0.8x the bounded pool's is time at most 1/0.8 of it.
    (LOCAL, "exec"): Target(1 / 0.8, "<= 1.25 (tasks/s >= 0.8x)"),
    # Full telemetry (spans + metrics + checkpoint file) against telemetry off.
    (f"{NOOP}-tel-file", "telemetry"): Target(3.0, "<= 3"),
    (f"{LOCAL}-tel-file", "telemetry"): Target(1.5, "<= 1.5"),
    # The same with OTLP export to a real receiver as well (issue 14).
    **{(f"{NOOP}-tel-{m}", "telemetry"): Target(2.0, "<= 2") for m in ("grpc", "http")},
    **{(f"{LOCAL}-tel-{m}", "telemetry"): Target(1.5, "<= 1.5") for m in ("grpc", "http")},
    # The engine on a Dask cluster against the same tasks as native Dask futures.
    **{(ENGINE_DASK, w): Target(1.25, "<= 1.25") for w in DASK_WORKLOADS},
}


def baseline_of(config: str, workload: str) -> str | None:
    """The plain configuration ``config`` is compared with (None for baselines)."""
    if workload == "exec":
        return POOL if config == LOCAL else None
    if workload == "telemetry":
        if config == ASYNCIO:
            return None
        engine, mode = config.rsplit("-", 1)
        return None if mode == "off" else f"{engine}-off"
    if workload in DASK_WORKLOADS:
        return None if config == DASK_NATIVE else DASK_NATIVE
    return {NOOP: ASYNCIO, LOCAL: THREADS}.get(config)


@dataclass
class Row:
    """One configuration of one (workload, N) cell."""

    workload: str
    n: int
    config: str
    seconds: float
    tasks_per_second: float
    peak_rss_mb: float
    base_rss_mb: float
    create_ms: float | None
    baseline: str | None = None
    ratio: float | None = None
    ratio_low: float | None = None
    ratio_high: float | None = None
    target: Target | None = None

    @property
    def passed(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        return self.ratio <= self.target.limit


@dataclass
class Scaling:
    """time(big) / time(small) of one configuration, against plain asyncio's."""

    workload: str
    config: str
    small: int
    big: int
    ratio: float
    limit: float | None  # None for the plain baselines: no target

    @property
    def passed(self) -> bool | None:
        return None if self.limit is None else self.ratio <= self.limit


@dataclass
class Memory:
    """Peak RSS of one configuration at the largest run of a workload."""

    workload: str  # independent, or telemetry (the same tasks, telemetry on or off)
    config: str
    n: int
    peak_rss_mb: float
    base_rss_mb: float
    ratio: float

    @property
    def passed(self) -> bool | None:
        return None if self.config in (ASYNCIO, THREADS) else self.ratio <= RSS_FACTOR


@dataclass
class TelemetryCost:
    """Full telemetry against telemetry off, for one engine at one N."""

    config: str
    n: int
    stop_seconds: float  # engine.shutdown(), flushing telemetry included
    off_stop_seconds: float
    rss_growth_bytes_per_task: float
    file_bytes_per_task: float | None = None  # the checkpoint file
    writer_peak_rss_mb: float | None = None  # the checkpoint writer process

    @property
    def passed(self) -> bool:
        return (
            self.rss_growth_bytes_per_task < TEL_BYTES_PER_TASK
            and (self.file_bytes_per_task or 0) <= FILE_BYTES_PER_TASK
            and (self.writer_peak_rss_mb or 0) <= WRITER_RSS_MB
        )


@dataclass
class Summary:
    """Everything the tables show; ``as_dict`` goes into the JSON file."""

    rows: list[Row]
    scaling: list[Scaling]
    memory: list[Memory]
    create_ms: dict[str, float]
    telemetry: list[TelemetryCost]

    def failures(self) -> list[str]:
        """One line per missed target."""
        out = [
            f"{r.workload} N={r.n:,} {r.config}: {r.ratio:.2f}x {r.baseline}, "
            f"target {r.target.label}"
            for r in self.rows
            if r.passed is False and r.target is not None and r.ratio is not None
        ]
        out.extend(
            f"scaling {s.workload} {s.config}: time({s.big:,})/time({s.small:,}) = "
            f"{s.ratio:.1f}, limit {s.limit:.1f} (1.2x plain asyncio's)"
            for s in self.scaling
            if s.passed is False
        )
        out.extend(
            f"peak RSS {m.config} at N={m.n:,} {m.workload}: {m.ratio:.2f}x plain asyncio, "
            f"target <= {RSS_FACTOR:g}"
            for m in self.memory
            if m.passed is False
        )
        out.extend(
            f"telemetry {t.config} at N={t.n:,}: RSS growth "
            f"{t.rss_growth_bytes_per_task:.0f} B/task (target < {TEL_BYTES_PER_TASK}), file "
            f"{t.file_bytes_per_task or 0:.0f} B/task (target <= {FILE_BYTES_PER_TASK}), writer "
            f"{t.writer_peak_rss_mb or 0:.0f} MB (target <= {WRITER_RSS_MB})"
            for t in self.telemetry
            if not t.passed
        )
        return out

    def as_dict(self) -> dict[str, Any]:
        def row(r: Row) -> dict[str, Any]:
            return {
                "workload": r.workload,
                "n": r.n,
                "config": r.config,
                "median_seconds": r.seconds,
                "tasks_per_second": r.tasks_per_second,
                "peak_rss_mb": r.peak_rss_mb,
                "base_rss_mb": r.base_rss_mb,
                "engine_create_ms": r.create_ms,
                "baseline": r.baseline,
                "median_ratio": r.ratio,
                "ratio_min": r.ratio_low,
                "ratio_max": r.ratio_high,
                "target": r.target.limit if r.target else None,
                "passed": r.passed,
            }

        return {
            "rows": [row(r) for r in self.rows],
            "scaling": [{**vars(s), "passed": s.passed} for s in self.scaling],
            "memory": [{**vars(m), "passed": m.passed} for m in self.memory],
            "engine_create_ms": self.create_ms,
            "telemetry": [{**vars(t), "passed": t.passed} for t in self.telemetry],
            "failures": self.failures(),
        }


# ---------------------------------------------------------------- statistics
Key = tuple[str, int, str]  # (workload, n, config)


def _by_cell(measurements: Iterable[dict[str, Any]]) -> dict[Key, list[dict[str, Any]]]:
    cells: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for m in measurements:
        cells[(m["workload"], m["n"], m["config"])].append(m)
    return cells


def _ratios(mine: list[dict[str, Any]], base: list[dict[str, Any]]) -> list[float]:
    """Per-round ratios of median times, for the rounds both sides ran in."""
    base_by_round = {m["round"]: statistics.median(m["seconds"]) for m in base}
    return [
        statistics.median(m["seconds"]) / base_by_round[m["round"]]
        for m in mine
        if m["round"] in base_by_round
    ]


def _median_seconds(ms: list[dict[str, Any]]) -> float:
    return statistics.median(s for m in ms for s in m["seconds"])


def summarise(measurements: Sequence[dict[str, Any]]) -> Summary:
    """Medians, ratios and verdicts for every measured cell."""
    cells = _by_cell(measurements)
    rows: list[Row] = []
    for (workload, n, config), ms in cells.items():
        seconds = _median_seconds(ms)
        creates = [c for m in ms for c in m["create_seconds"] if c]
        row = Row(
            workload=workload,
            n=n,
            config=config,
            seconds=seconds,
            tasks_per_second=task_count(workload, n) / seconds,
            peak_rss_mb=statistics.median(m["peak_rss_mb"] for m in ms),
            base_rss_mb=statistics.median(m["base_rss_mb"] for m in ms),
            create_ms=statistics.median(creates) * 1000 if creates else None,
        )
        baseline = baseline_of(config, workload)
        if baseline is not None and (workload, n, baseline) in cells:
            ratios = _ratios(ms, cells[(workload, n, baseline)])
            if ratios:
                row.baseline = baseline
                row.ratio = statistics.median(ratios)
                row.ratio_low, row.ratio_high = min(ratios), max(ratios)
                row.target = TARGETS.get((config, workload))
        rows.append(row)
    rows.sort(key=_row_order)
    return Summary(
        rows, _scaling(cells), _memory(cells), _create_ms(measurements), _telemetry(cells)
    )


def _telemetry(cells: dict[Key, list[dict[str, Any]]]) -> list[TelemetryCost]:
    """Shutdown time and peak RSS growth of full telemetry, per engine and N."""
    out = []
    sizes = [n for (w, n, _) in cells if w == "telemetry"]
    for (workload, n, config), ms in sorted(cells.items()):
        # The target is stated at the largest N: at small N the fixed cost of
        # loading the SDK dominates the per-task figure.
        if workload != "telemetry" or not config.endswith("-file") or n != max(sizes):
            continue
        off = cells.get((workload, n, config[: -len("file")] + "off"))
        if not off:
            continue
        peak = statistics.median(m["peak_rss_mb"] for m in ms)
        off_peak = statistics.median(m["peak_rss_mb"] for m in off)
        out.append(
            TelemetryCost(
                config=config,
                n=n,
                stop_seconds=statistics.median(s for m in ms for s in m["stop_seconds"]),
                off_stop_seconds=statistics.median(s for m in off for s in m["stop_seconds"]),
                rss_growth_bytes_per_task=(peak - off_peak) * 2**20 / task_count(workload, n),
                file_bytes_per_task=statistics.median(m["checkpoint_bytes"] for m in ms)
                / task_count(workload, n)
                if all("checkpoint_bytes" in m for m in ms)
                else None,
                writer_peak_rss_mb=max(m["writer_peak_rss_mb"] for m in ms)
                if all("writer_peak_rss_mb" in m for m in ms)
                else None,
            )
        )
    return out


def _create_ms(measurements: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Median engine creation time per configuration, over every repetition."""
    times: dict[str, list[float]] = defaultdict(list)
    for m in measurements:
        times[m["config"]].extend(c for c in m["create_seconds"] if c)
    return {config: statistics.median(ts) * 1000 for config, ts in times.items() if ts}


def _row_order(r: Row) -> tuple[int, int, int]:
    return (WORKLOADS.index(r.workload), r.n, ALL_CONFIGS.index(r.config))


def _scale(
    cells: dict[Key, list[dict[str, Any]]], workload: str, config: str, small: int, big: int
) -> float | None:
    low, high = cells.get((workload, small, config)), cells.get((workload, big, config))
    if not low or not high:
        return None
    return _median_seconds(high) / _median_seconds(low)


def _scaling(cells: dict[Key, list[dict[str, Any]]]) -> list[Scaling]:
    """time(largest N) / time(second largest N), per workload and configuration.

    The DAG workloads, and the telemetry workload (the engine with telemetry
    off, in memory and with the checkpoint file against plain asyncio
    running the same independent tasks).
    """
    out: list[Scaling] = []
    for workload in (*DAG_WORKLOADS, "telemetry"):
        sizes = sorted({n for (w, n, c) in cells if w == workload and c == ASYNCIO})
        if len(sizes) < 2:
            continue
        small, big = sizes[-2], sizes[-1]
        reference = _scale(cells, workload, ASYNCIO, small, big)
        if reference is None:
            continue
        for config in (ASYNCIO, *TELEMETRY_CONFIGS) if workload == "telemetry" else CONFIGS:
            value = _scale(cells, workload, config, small, big)
            if value is None:
                continue
            limit = None if config in (ASYNCIO, THREADS) else SCALING_FACTOR * reference
            out.append(Scaling(workload, config, small, big, value, limit))
    return out


def _memory(cells: dict[Key, list[dict[str, Any]]]) -> list[Memory]:
    """Peak RSS at the largest independent N, and at the largest telemetry N,
    of each configuration against plain asyncio's in the same workload."""
    out = []
    for workload, configs in (
        ("independent", CONFIGS),
        ("telemetry", (ASYNCIO, *TELEMETRY_CONFIGS)),
    ):
        sizes = [n for (w, n, c) in cells if w == workload and c == ASYNCIO]
        if not sizes:
            continue
        n = max(sizes)
        reference = statistics.median(m["peak_rss_mb"] for m in cells[(workload, n, ASYNCIO)])
        for config in configs:
            ms = cells.get((workload, n, config))
            if not ms:
                continue
            peak = statistics.median(m["peak_rss_mb"] for m in ms)
            base = statistics.median(m["base_rss_mb"] for m in ms)
            out.append(Memory(workload, config, n, peak, base, peak / reference))
    return out


# ---------------------------------------------------------------- tables
def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: ""}[passed]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Aligned text columns; the columns in ``right`` are right-aligned."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _fmt_time(seconds: float) -> str:
    return f"{seconds:.4f}" if seconds < 1 else f"{seconds:.3f}"


def _main_table(rows: Sequence[Row]) -> list[str]:
    body = []
    previous: tuple[str, int] | None = None
    for r in rows:
        first = (r.workload, r.n) != previous
        previous = (r.workload, r.n)
        ratio = ""
        if r.ratio is not None:
            ratio = f"{r.ratio:.2f} [{r.ratio_low:.2f}-{r.ratio_high:.2f}]"
        body.append(
            [
                r.workload if first else "",
                f"{r.n:,}" if first else "",
                r.config,
                _fmt_time(r.seconds),
                f"{r.tasks_per_second:,.0f}",
                f"{r.peak_rss_mb:.1f}",
                ratio,
                r.baseline or "",
                r.target.label if r.target else "",
                _verdict(r.passed),
            ]
        )
    header = ["workload", "N", "configuration", "time s", "tasks/s", "peak RSS MB"]
    header += ["ratio [min-max]", "vs", "target", "result"]
    return [
        "Time per run: median over repetitions and rounds. Ratio: median over rounds of",
        "(median time / median time of the baseline in the same round), with its range.",
        "",
        *_table(header, body, right={1, 3, 4, 5}),
    ]


def _scaling_table(scaling: Sequence[Scaling]) -> list[str]:
    body = [
        [
            s.workload,
            s.config,
            f"{s.big:,}/{s.small:,}",
            f"{s.ratio:.1f}",
            "" if s.limit is None else f"{s.limit:.1f}",
            _verdict(s.passed),
        ]
        for s in scaling
    ]
    header = ["workload", "configuration", "sizes", "time ratio", "limit", "result"]
    return [
        "Linear scaling: time(big N) / time(small N) of each configuration; the limit is",
        f"{SCALING_FACTOR:g}x plain asyncio's own ratio for the same workload in this run.",
        "",
        *_table(header, body, right={3, 4}),
    ]


def _memory_table(memory: Sequence[Memory]) -> list[str]:
    body = [
        [
            m.workload,
            f"{m.n:,}",
            m.config,
            f"{m.peak_rss_mb:.1f}",
            f"{m.base_rss_mb:.1f}",
            f"{m.ratio:.2f}",
            _verdict(m.passed),
        ]
        for m in memory
    ]
    header = ["workload", "N", "configuration", "peak MB", "at start MB", "ratio", "result"]
    return [
        "Peak RSS at the largest N of the independent and telemetry workloads (each",
        "configuration in its own process; the telemetry writer's process not included);",
        f"target: each engine configuration at most {RSS_FACTOR:g}x plain asyncio's peak.",
        "",
        *_table(header, body, {1, 3, 4, 5}),
    ]


def _telemetry_table(costs: Sequence[TelemetryCost]) -> list[str]:
    body = [
        [
            t.config,
            f"{t.n:,}",
            f"{t.stop_seconds:.3f}",
            f"{t.off_stop_seconds:.3f}",
            f"{t.rss_growth_bytes_per_task:.0f}",
            "-" if t.file_bytes_per_task is None else f"{t.file_bytes_per_task:.0f}",
            "-" if t.writer_peak_rss_mb is None else f"{t.writer_peak_rss_mb:.0f}",
            _verdict(t.passed),
        ]
        for t in costs
    ]
    header = [
        "configuration",
        "N",
        "shutdown s",
        "shutdown s (off)",
        "RSS growth B/task",
        "file B/task",
        "writer peak MB",
        "result",
    ]
    return [
        "Full telemetry (spans + metrics + checkpoint file): engine.shutdown() time, which",
        "flushes exporters and writes the rest of the checkpoint file, the peak RSS",
        f"growth over telemetry off per finished task (target < {TEL_BYTES_PER_TASK} bytes),",
        f"the checkpoint file per task (target <= {FILE_BYTES_PER_TASK} bytes) and the peak RSS",
        f"of the checkpoint writer process (target <= {WRITER_RSS_MB} MB).",
        "",
        *_table(header, body, right={1, 2, 3, 4, 5, 6}),
    ]


def render(summary: Summary) -> str:
    """The tables and the list of missed targets, as text."""
    out = _main_table(summary.rows)
    if summary.scaling:
        out += ["", *_scaling_table(summary.scaling)]
    if summary.memory:
        out += ["", *_memory_table(summary.memory)]
    if summary.telemetry:
        out += ["", *_telemetry_table(summary.telemetry)]
    if summary.create_ms:
        made = ", ".join(f"{c} {ms:.2f} ms" for c, ms in summary.create_ms.items())
        out += ["", f"Engine creation (median, not in the timed region): {made}."]
    failures = summary.failures()
    out.append("")
    if failures:
        out.append(f"TARGETS MISSED ({len(failures)}):")
        out.extend(f"  FAIL {line}" for line in failures)
    else:
        out.append("All targets met.")
    return "\n".join(out)
