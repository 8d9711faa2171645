"""``asyncflow demo`` and ``examples/plot_campaign.py``, end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import venv
from collections import Counter
from pathlib import Path

import pytest

from asyncflow.telemetry import names, read_checkpoint

ROOT = Path(__file__).resolve().parents[2]
INSTANCES = {"simulate": 4, "analyze": 4, "train": 8, "evaluate": 8}


def check_demo_output(out: Path) -> None:
    (checkpoint,) = out.glob("*.telemetry.jsonl")
    workflows = [
        s
        for s in read_checkpoint(checkpoint, ["span"])
        if s["attributes"][names.LEVEL] == names.LEVEL_WORKFLOW
    ]
    assert Counter(s["attributes"][names.WORKFLOW_NAME] for s in workflows) == INSTANCES
    report = (out / "report.html").read_text()
    # The report's timeline has a row for every workflow instance.
    for kind, count in INSTANCES.items():
        for i in range(count):
            assert f"{kind}-{i:03d}" in report, f"{kind}-{i:03d} missing from the report"
    assert "Workflow instances" in report


@pytest.mark.slow
def test_demo_from_a_fresh_virtual_environment(tmp_path: Path) -> None:
    """Build the wheel, install it in a new environment, run the demo there.

    The environment borrows the test environment's installed dependencies
    (no network needed) but gets asyncflow only from the wheel, so the
    campaign example must travel inside it.
    """
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("asyncflow_otel-*.whl")
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # The dependencies come from this test environment, behind the new
    # environment's own packages: asyncflow itself resolves to the wheel.
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--force-reinstall",
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import asyncflow, asyncflow.demo as d; print(asyncflow.__file__, d.campaign_path())",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    ).stdout
    assert str(env_dir) in where and "_examples" in where, (
        where
    )  # the wheel's copy, not the checkout
    done = subprocess.run(
        [
            str(env_dir / "bin" / "asyncflow"),
            "demo",
            "--no-serve",
            "--out",
            str(out),
            "--duration",
            "0.02",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"wrote .*report\.html", done.stdout)
    check_demo_output(out)


def test_demo_in_this_checkout_and_plot_campaign(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "asyncflow.cli",
            "demo",
            "--no-serve",
            "--out",
            str(out),
            "--duration",
            "0.02",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    check_demo_output(out)
    html = tmp_path / "campaign.html"
    plotted = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "plot_campaign.py"), str(out), "-o", str(html)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert plotted.returncode == 0, plotted.stderr
    text = html.read_text()
    assert "Busy slots" in text and "GPU busy" in text and "simulate-003" in text
    missing = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "plot_campaign.py"), str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr


def test_demo_arguments() -> None:
    from asyncflow.cli import build_parser

    args = build_parser().parse_args(["demo", "--no-serve", "--gpus", "2"])
    assert args.no_serve and args.gpus == 2 and args.host == "127.0.0.1"
