"""The benchmark's tables: the million-task figures (telemetry workload)."""

from __future__ import annotations

from typing import Any

from bench.report import render, summarise


def _m(config: str, n: int, seconds: float, rss: float) -> dict[str, Any]:
    return {
        "workload": "telemetry",
        "n": n,
        "config": config,
        "round": 0,
        "seconds": [seconds],
        "create_seconds": [0.0],
        "stop_seconds": [0.0],
        "base_rss_mb": 28.0,
        "peak_rss_mb": rss,
    }


def test_telemetry_workload_scales_and_peaks_against_plain_asyncio() -> None:
    summary = summarise(
        [
            _m("asyncio", 100_000, 1.0, 100.0),
            _m("asyncio", 1_000_000, 10.0, 900.0),
            _m("engine-noop-tel-file", 100_000, 2.0, 200.0),
            _m("engine-noop-tel-file", 1_000_000, 30.0, 1700.0),  # 15x: over 1.2 x 10
            _m("engine-noop-tel-off", 100_000, 1.0, 150.0),
            _m("engine-noop-tel-off", 1_000_000, 11.0, 1900.0),  # 2.1x asyncio's peak
        ]
    )
    scaling = {s.config: s for s in summary.scaling if s.workload == "telemetry"}
    assert scaling["asyncio"].ratio == 10.0 and scaling["asyncio"].limit is None
    assert scaling["engine-noop-tel-off"].passed is True
    assert scaling["engine-noop-tel-file"].limit == 12.0
    assert scaling["engine-noop-tel-file"].passed is False
    memory = {m.config: m for m in summary.memory if m.workload == "telemetry"}
    assert memory["asyncio"].n == 1_000_000 and memory["asyncio"].passed is None
    assert memory["engine-noop-tel-file"].ratio == 1700.0 / 900.0
    assert memory["engine-noop-tel-file"].passed is True
    assert memory["engine-noop-tel-off"].passed is False
    text = render(summary)
    assert "scaling telemetry engine-noop-tel-file" in text
    assert "peak RSS engine-noop-tel-off at N=1,000,000 telemetry" in text
