"""What a backend reports a task as, read as the task dict the engine expects.

Backends report ``cb(task, state)`` with the task dict they were given, but
not all of them: RHAPSODY's RADICAL-Pilot backend reports the tasks of a
failed pilot as ``rp.Task`` objects. The engine accepts any of these:

- a mapping (the task dict itself, the common case: used as it is);
- an object with ``as_dict()`` returning a mapping;
- an object with a string ``uid`` attribute (the result fields are read
  from its attributes).

Anything else is not a task report, and :func:`task_fields` says so with a
``TypeError``. :func:`report_uid` finds the uid of whatever was reported and
never raises: the engine's error path uses it to fail the right task.
No asyncio and no I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["RESULT_FIELDS", "describe_report", "report_uid", "task_fields"]

# The result fields backends write into a task (RHAPSODY's names).
RESULT_FIELDS = ("return_value", "stdout", "stderr", "exit_code", "exception")

# The fields the engine reads from a reported task.
_FIELDS = (
    "uid",
    "name",
    "executable",
    "arguments",
    *RESULT_FIELDS,
    "slots",
)


def task_fields(report: object) -> Mapping[str, Any]:
    """The reported task as a mapping of its fields.

    Raises:
        TypeError: ``report`` is none of the accepted shapes, or its
            ``as_dict()`` returned something other than a mapping.
    """
    if type(report) is dict or isinstance(report, Mapping):
        return report
    as_dict = getattr(report, "as_dict", None)
    if callable(as_dict):
        fields = as_dict()
        if not isinstance(fields, Mapping):
            raise TypeError(
                f"the backend reported a {type(report).__name__} whose as_dict() returned "
                f"{type(fields).__name__}, not a dict"
            )
        return fields
    if isinstance(getattr(report, "uid", None), str):
        return {name: getattr(report, name) for name in _FIELDS if hasattr(report, name)}
    raise TypeError(
        f"the backend reported a {type(report).__name__}, not a task "
        "(a dict, an object with as_dict(), or an object with a 'uid' attribute)"
    )


def report_uid(report: object) -> str | None:
    """The uid of a reported task, or None when it has none that is readable.

    Never raises, whatever the report is.
    """
    try:
        if isinstance(report, Mapping):
            uid = report.get("uid")
        else:
            uid = getattr(report, "uid", None)
            if uid is None and callable(getattr(report, "as_dict", None)):
                fields = report.as_dict()  # type: ignore[attr-defined]
                uid = fields.get("uid") if isinstance(fields, Mapping) else None
    except Exception:  # noqa: BLE001 - a report that cannot even say its uid
        return None
    return uid if isinstance(uid, str) else None


def describe_report(report: object) -> str:
    """A short, safe description of a report for a log line (never raises)."""
    uid = report_uid(report)
    if uid is not None:
        return uid
    try:
        kind = type(report).__name__
    except Exception:  # noqa: BLE001 - pragma: no cover - type() of anything works
        kind = "object"
    return f"a {kind} without a readable uid"
