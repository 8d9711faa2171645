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
QUICK_DEMO = ("demo", "--no-serve", "--duration", "0.02")


def run(
    *command: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its text output; never raises on failure."""
    return subprocess.run(
        [str(c) for c in command],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        check=False,
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "OTEL_EXPORTER_OTLP_ENDPOINT")
    }
    env.update(extra)
    return env


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
    built = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, ROOT, cwd=tmp_path
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("asyncflow_otel-*.whl")
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # The dependencies come from this test environment, behind the new
    # environment's own packages: asyncflow itself resolves to the wheel.
    purelib = run(
        python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path
    )
    Path(purelib.stdout.strip(), "zz_test_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    installed = run(
        python, "-m", "pip", "install", "--no-deps", "-q", "--force-reinstall", wheel, cwd=tmp_path
    )
    assert installed.returncode == 0, installed.stderr
    env = clean_env()
    where = run(
        python,
        "-c",
        "import asyncflow.demo as d; print(d.__file__, d.campaign_path())",
        cwd=tmp_path,
        env=env,
    )
    assert str(env_dir) in where.stdout and "_examples" in where.stdout, where  # the wheel's copy
    out = tmp_path / "demo"
    done = run(env_dir / "bin" / "asyncflow", *QUICK_DEMO, "--out", out, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert re.search(r"wrote .*report\.html", done.stdout)
    check_demo_output(out)


def test_demo_in_this_checkout_and_plot_campaign(tmp_path: Path) -> None:
    env = clean_env(PYTHONPATH=str(ROOT))
    out = tmp_path / "demo"
    done = run(
        sys.executable, "-m", "asyncflow.cli", *QUICK_DEMO, "--out", out, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr
    check_demo_output(out)
    plot = ROOT / "examples" / "plot_campaign.py"
    html = tmp_path / "campaign.html"
    plotted = run(sys.executable, plot, out, "-o", html, cwd=tmp_path, env=env, timeout=120)
    assert plotted.returncode == 0, plotted.stderr
    text = html.read_text()
    assert "Busy slots" in text and "GPU busy" in text and "simulate-003" in text
    missing = run(sys.executable, plot, tmp_path / "nope", cwd=tmp_path, env=env, timeout=60)
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr


def test_demo_arguments() -> None:
    from asyncflow.cli import build_parser

    args = build_parser().parse_args(["demo", "--no-serve", "--gpus", "2"])
    assert args.no_serve and args.gpus == 2 and args.host == "127.0.0.1"
    assert not args.resume
    assert build_parser().parse_args(["demo", "--resume"]).resume is True


def test_demo_checks_its_port_before_the_campaign(tmp_path: Path) -> None:
    import socket

    env = clean_env(PYTHONPATH=str(ROOT))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = tmp_path / "demo"
        done = run(
            sys.executable,
            "-m",
            "asyncflow.cli",
            "demo",
            "--port",
            str(port),
            "--out",
            out,
            cwd=tmp_path,
            env=env,
            timeout=120,
        )
    assert done.returncode == 2, done
    assert f"cannot serve on 127.0.0.1:{port}" in done.stderr
    assert f"--port {port + 1}" in done.stderr and "make demo DEMO_ARGS=" in done.stderr
    assert not out.exists()  # the campaign did not run


def test_the_demo_hints_work_as_printed(tmp_path: Path) -> None:
    import shlex

    env = clean_env(PYTHONPATH=str(ROOT))
    out = tmp_path / "demo"
    done = run(
        sys.executable, "-m", "asyncflow.cli", *QUICK_DEMO, "--out", out, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr
    (hint,) = [line for line in done.stdout.splitlines() if line.startswith("or a static report:")]
    command = shlex.split(hint.removeprefix("or a static report:"))
    (out / "report.html").unlink()
    again = run(*command, cwd=tmp_path, env=env)  # exactly as printed, in the same directory
    assert again.returncode == 0, again.stderr
    assert (out / "report.html").stat().st_size > 1_000_000
    (dashboard,) = [line for line in done.stdout.splitlines() if "open the dashboard:" in line]
    assert Path(shlex.split(dashboard.split(":", 1)[1])[0]).name == "asyncflow"


def test_make_demo_installs_only_the_dashboard_extra() -> None:
    done = run("make", "-n", "-B", "demo", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    installs = [
        line for line in done.stdout.splitlines() if "pip install" in line and " -e " in line
    ]
    assert installs and all("'.[dashboard]'" in line for line in installs), installs
    assert ".installed-demo" in done.stdout
