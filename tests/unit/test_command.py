"""Reading what an executable body returned (pure, no processes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asyncflow.backends._shell import SHELL, launch_argv
from asyncflow.engine._command import read_command
from asyncflow.engine._foreign import exact_argv_task


def test_a_string_is_a_shell_line_and_its_words_describe_it() -> None:
    cmd = read_command("t", '"/usr/my tool" --in "$HOME" | wc -l', {})
    assert cmd.shell and cmd.line == '"/usr/my tool" --in "$HOME" | wc -l'
    assert cmd.argv == ["/usr/my tool", "--in", "$HOME", "|", "wc", "-l"]


def test_a_shell_line_shlex_cannot_read_still_runs_as_written() -> None:
    cmd = read_command("t", "echo hi # it's fine", None)
    assert cmd.line == "echo hi # it's fine"
    assert cmd.argv == ["echo", "hi", "#", "it's", "fine"]


def test_shell_false_and_lists_are_exact_argvs() -> None:
    assert read_command("t", "a 'b c'", {"shell": False}) == (["a", "b c"], None)
    assert read_command("t", ("a", Path("/x y")), {}) == (["a", "/x y"], None)
    assert read_command("t", ["a"], {"shell": False}).shell is False


@pytest.mark.parametrize(
    ("command", "options", "error", "match"),
    [
        (None, {}, ValueError, "must return a non-empty command string"),
        ("  ", {}, ValueError, "must return a non-empty command string"),
        ([], {}, ValueError, "must return a non-empty command"),
        (["", "x"], {}, ValueError, "must return a non-empty command"),
        (5, {}, TypeError, "not int"),
        (["a", 1], {}, TypeError, "item 1 of the command is int"),
        (["a"], {"shell": True}, ValueError, "exact argv"),
        ("a 'b", {"shell": False}, ValueError, "No closing quotation"),
        ("''", {"shell": False}, ValueError, "names no program"),
        ("echo", {"shell": "false"}, TypeError, "'shell' must be True or False, not 'false'"),
        ("echo", {"shell": 0}, TypeError, "'shell' must be True or False, not 0"),
    ],
)
def test_bad_commands_are_named(command: Any, options: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        read_command("t", command, options)


def test_launch_argv() -> None:
    task = {"executable": "a", "arguments": ["b c"], "command": "a 'b c'", "shell": True}
    assert launch_argv(task) == [SHELL, "-c", "a 'b c'"]
    assert launch_argv({**task, "shell": False}) == ["a", "b c"]
    # A RHAPSODY-style task dict: its own 'shell' option, the argv quoted back.
    rhapsody = {"executable": "a", "arguments": ["b c"], "task_backend_specific_kwargs": {}}
    assert launch_argv(rhapsody) == ["a", "b c"]
    rhapsody["task_backend_specific_kwargs"] = {"shell": True}
    assert launch_argv(rhapsody) == [SHELL, "-c", "a 'b c'"]


def test_rhapsody_copy_runs_the_line_as_an_exact_argv() -> None:
    desc = {
        "executable": "a",
        "arguments": ["|", "b"],
        "command": "a | b",
        "shell": True,
        "task_backend_specific_kwargs": {"shell": True, "cwd": "/tmp"},
    }
    sent = exact_argv_task(desc)
    assert sent["executable"] == SHELL and sent["arguments"] == ["-c", "a | b"]
    assert sent["task_backend_specific_kwargs"] == {"shell": False, "cwd": "/tmp"}
    assert desc["executable"] == "a"  # the description keeps the command's own words
    listed = exact_argv_task({**desc, "command": None, "shell": False})
    assert listed["executable"] == "a" and listed["arguments"] == ["|", "b"]
