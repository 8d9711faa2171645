"""A shell line without shell syntax starts its program without /bin/sh, with
the result /bin/sh would give: each case here runs the same line through
``/bin/sh -c`` too and compares."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asyncflow import LocalExecutionBackend, WorkflowEngine
from asyncflow.backends._shell import direct_launch, plain_words
from asyncflow.errors import ExecutableError

pytestmark = pytest.mark.skipif(
    os.path.basename(os.path.realpath("/bin/sh")) != "dash",
    reason="the direct launch copies dash; elsewhere every line goes through /bin/sh",
)

# Prints what a program can see of how it was started.
REPORT = """
import json, os, sys
parent = open(f"/proc/{os.getppid()}/comm").read().strip()
env = {k: v for k, v in os.environ.items() if k in ("PWD", "GREETING", "A.B", "OLDPWD")}
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": env, "parent": parent}))
"""


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[WorkflowEngine]:
    eng = await WorkflowEngine.create(
        backend=await LocalExecutionBackend(), work_dir=tmp_path / "session"
    )
    try:
        yield eng
    finally:
        await eng.shutdown()


@pytest.fixture
def report(tmp_path: Path) -> str:
    script = tmp_path / "report.py"
    script.write_text(REPORT)
    return str(script)


def through_sh(line: str, cwd: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", "-c", line],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )


async def run(engine: WorkflowEngine, line: str, **options: Any) -> tuple[int, str, str]:
    @engine.executable_task
    async def task() -> str:
        return line

    try:
        return 0, await task(task_description=options), ""
    except ExecutableError as err:
        return int(err.exit_code or 0), err.stdout, err.stderr


def test_plain_words() -> None:
    assert plain_words("/bin/true") == ["/bin/true"]
    assert plain_words("prog -x\t--in=a.dat 1,2 user@host:50%") == [
        "prog",
        "-x",
        "--in=a.dat",
        "1,2",
        "user@host:50%",
    ]
    for line in (
        "echo hi",  # a builtin
        "/bin/echo $HOME",
        "a *.dat",
        "a 'b'",
        "a > b",
        "a; b",
        "A=1 prog",
        "prog ~/x",
        "if x",
        "a\nb",
        "a #c",
        "a {b,c}",
    ):
        assert plain_words(line) is None, line
    assert direct_launch(["/bin/sh", "-c", "/bin/true"], {"PATH": "/bin"}, None) is not None
    assert direct_launch(["/bin/sh", "-c", "true"], {"PATH": "/bin"}, None) is None
    assert direct_launch(["/bin/sh", "-c", "env"], {}, None) is None  # dash's own PATH


async def test_program_sees_what_it_sees_under_sh(
    engine: WorkflowEngine, report: str, tmp_path: Path
) -> None:
    real = tmp_path / "real dir"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    line = f"{sys.executable} {shlex.quote(report)} one 2,3 --x=y"
    assert " " not in report and plain_words(line) is not None
    env = {**os.environ, "GREETING": "hi", "A.B": "dropped"}
    for cwd, pwd in ((str(link), str(link)), (str(link), "/"), (str(real), None)):
        env.pop("PWD", None)
        if pwd is not None:
            env["PWD"] = pwd
        code, out, _ = await run(engine, line, cwd=cwd, env=env)
        assert code == 0
        seen = json.loads(out)
        expected = json.loads(through_sh(line, cwd, **env).stdout)
        assert seen["parent"] != "sh"  # started directly
        assert expected["parent"] == "sh"
        for key in ("argv", "cwd", "env"):
            assert seen[key] == expected[key], (cwd, pwd, key)
        assert "A.B" not in seen["env"]


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGSEGV", "SIGINT", "SIGKILL"])
async def test_death_by_signal_reads_as_under_sh(
    engine: WorkflowEngine, tmp_path: Path, signame: str
) -> None:
    script = tmp_path / f"die_{signame}.py"
    script.write_text(
        "import os, signal, sys\n"
        "sys.stderr.write('dying\\n'); sys.stderr.flush()\n"
        f"signal.signal(signal.{signame}, signal.SIG_DFL) if signal.{signame} != signal.SIGKILL "
        "else None\n"
        f"os.kill(os.getpid(), signal.{signame})\n"
    )
    line = f"{sys.executable} {script}"
    assert plain_words(line) is not None
    code, _, err = await run(engine, line)
    expected = through_sh(line)
    assert (code, err) == (expected.returncode, expected.stderr)


async def test_a_program_that_cannot_start_is_left_to_the_shell(
    engine: WorkflowEngine, tmp_path: Path
) -> None:
    script = tmp_path / "no-shebang"
    script.write_text("echo from a script without a shebang\n")
    script.chmod(0o755)
    for line in (str(script), "no-such-program-af9 --flag", str(tmp_path)):
        assert plain_words(line) is not None
        expected = through_sh(line)
        assert await run(engine, line) == (expected.returncode, expected.stdout, expected.stderr)
