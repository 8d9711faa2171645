"""Event records: the engine's lifecycle events and user-defined ones.

Events are frozen records. Every event has the base fields ``event_id``,
``event_type``, ``event_time``, ``emit_time``, ``session_id``, ``backend``,
``task_id``, ``node_id`` and ``attributes``; an event class adds its own
fields, all keyword-only with defaults::

    ResourceAssigned = define_event(
        "campaign.ResourceAssigned", workflow_type="", instance="", resource="", priority=0
    )
    tel.emit(ResourceAssigned(workflow_type="simulate", instance="wf-1", resource="gpu:0"))

No OpenTelemetry import here: ``define_event`` is importable from
``asyncflow`` without loading the SDK.
"""

from __future__ import annotations

import copy
import dataclasses
import keyword
from typing import Any, ClassVar

from . import names as n

__all__ = [
    "ENGINE_EVENT_TYPES",
    "Event",
    "ResourceAssigned",
    "ResourceUpdate",
    "SessionEnded",
    "SessionStarted",
    "TaskCanceled",
    "TaskCompleted",
    "TaskCreated",
    "TaskFailed",
    "TaskQueued",
    "TaskResolved",
    "TaskStarted",
    "TaskSubmitted",
    "as_event",
    "define_event",
    "event_class",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event record.

    Attributes:
        event_id: unique in the session (filled by ``emit`` when omitted).
        event_type: the event's name, e.g. ``"TaskStarted"``.
        event_time: when it happened (seconds since the epoch).
        emit_time: when it was recorded (filled by ``emit``).
        session_id: the engine session (filled by ``emit``).
        backend: the backend of the task, when there is one.
        task_id: the task or block uid, when there is one.
        node_id: the host name (filled by ``emit``).
        attributes: free-form attributes (``asyncflow.workflow_id`` for tasks).
    """

    TYPE: ClassVar[str] = "Event"

    event_id: int | str | None = None
    event_type: str = ""
    event_time: float | None = None
    emit_time: float | None = None
    session_id: str | None = None
    backend: str | None = None
    task_id: str | None = None
    node_id: str | None = None
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.event_type:
            object.__setattr__(self, "event_type", type(self).TYPE)

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict (base fields and own fields)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


_BASE_FIELDS = frozenset(n.EVENT_BASE_FIELDS)
# Keys a checkpoint event line adds beside the event's fields.
_LINE_KEYS = frozenset({"section", "name", "trace_id", "span_id"})
_REGISTRY: dict[str, type[Event]] = {}


def _engine_event(name: str, **fields: Any) -> Any:
    return _make(name, fields, engine=True)


def _field(default: Any) -> Any:
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: copy.copy(default))
    return dataclasses.field(default=default)


def _make(name: str, fields: dict[str, Any], *, engine: bool, register: bool = True) -> type[Event]:
    for field in fields:
        if field in _BASE_FIELDS:
            raise ValueError(f"event field {field!r} would shadow a base field of every event")
        if field in _LINE_KEYS:
            raise ValueError(
                f"event field {field!r} would shadow a key of the checkpoint line "
                f"({', '.join(sorted(_LINE_KEYS))}); pick another name"
            )
        if not field.isidentifier() or keyword.iskeyword(field) or field.startswith("_"):
            raise ValueError(f"event field {field!r} is not a valid public field name")
    cls_name = name.rsplit(".", 1)[-1] or "Event"
    spec = [(field, Any, _field(default)) for field, default in fields.items()]
    cls = dataclasses.make_dataclass(
        cls_name,
        spec,
        bases=(Event,),
        frozen=True,
        kw_only=True,
        namespace={"TYPE": name, "__module__": __name__ if engine else "asyncflow.events"},
    )
    if register:
        _REGISTRY[name] = cls
    return cls


# RHAPSODY's define_event reads a bare type as "this type, zero default".
_ZERO: dict[Any, Any] = {float: 0.0, int: 0, str: "", bool: False}


def _default_of(spec: Any) -> Any:
    """A field's default, read as RHAPSODY reads it: a bare type (``float``)
    is its zero value, a ``(type, default)`` pair is that default; anything
    else is the default itself."""
    if isinstance(spec, type):
        return _ZERO.get(spec)
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], type):
        return spec[1]
    return spec


def define_event(name: str, /, **fields: Any) -> type[Event]:
    """Make a user event class named ``name`` with the given fields.

    Args:
        name: the event type; must contain a dot (``"campaign.ResourceAssigned"``)
            so it never collides with an engine event.
        **fields: field names and their defaults. As in RHAPSODY's
            ``define_event``, a bare type stands for its zero value
            (``score=float`` is ``0.0``, another type ``None``) and a
            ``(type, default)`` pair for that default (``step=(int, -1)``).

    Returns:
        A frozen event class; instances go to ``Telemetry.emit``.

    Raises:
        ValueError: the name has no dot, is an engine event name, or a field
            would shadow a base field or a key of the checkpoint line
            (``section``, ``name``, ``trace_id``, ``span_id``).
    """
    if not isinstance(name, str) or "." not in name.strip(".") or " " in name:
        raise ValueError(
            f"event name {name!r} must contain a dot, e.g. 'campaign.ResourceAssigned'"
        )
    if name in n.ENGINE_EVENTS:
        raise ValueError(f"event name {name!r} is an engine event")
    return _make(name, {k: _default_of(v) for k, v in fields.items()}, engine=False)


def event_class(name: str) -> type[Event] | None:
    """The class registered for an event type, if any."""
    return _REGISTRY.get(name)


SessionStarted = _engine_event(n.EVENT_SESSION_STARTED)
TaskCreated = _engine_event(n.EVENT_TASK_CREATED)
TaskResolved = _engine_event(n.EVENT_TASK_RESOLVED)
TaskQueued = _engine_event(n.EVENT_TASK_QUEUED)
TaskSubmitted = _engine_event(n.EVENT_TASK_SUBMITTED)
TaskStarted = _engine_event(n.EVENT_TASK_STARTED)
# ``duration_seconds`` (as in RHAPSODY): from the start of the run to the
# end, 0.0 for a task that never started.
TaskCompleted = _engine_event(n.EVENT_TASK_COMPLETED, duration_seconds=0.0)
TaskFailed = _engine_event(n.EVENT_TASK_FAILED, error_type="", duration_seconds=0.0)
TaskCanceled = _engine_event(n.EVENT_TASK_CANCELED, duration_seconds=0.0)
# RHAPSODY's fields: disk and network byte deltas since the previous sample;
# ``resource_scope`` is ``"per_gpu"`` when ``gpu_id`` is set, else ``"per_node"``.
ResourceUpdate = _engine_event(
    n.EVENT_RESOURCE_UPDATE,
    cpu_percent=None,
    memory_percent=None,
    gpu_percent=None,
    gpu_id=None,
    disk_read_bytes=None,
    disk_write_bytes=None,
    net_sent_bytes=None,
    net_recv_bytes=None,
    resource_scope=n.SCOPE_PER_NODE,
)


def _resource_scope(self: Any) -> None:
    Event.__post_init__(self)
    scope = n.SCOPE_PER_NODE if self.gpu_id is None else n.SCOPE_PER_GPU
    object.__setattr__(self, "resource_scope", scope)


ResourceUpdate.__post_init__ = _resource_scope
ResourceAssigned = _engine_event(n.EVENT_RESOURCE_ASSIGNED, slots=(), cpus=0, gpus=0)
SessionEnded = _engine_event(n.EVENT_SESSION_ENDED, duration_seconds=0.0)

ENGINE_EVENT_TYPES: dict[str, type[Event]] = {
    name: cls for name, cls in _REGISTRY.items() if name in n.ENGINE_EVENTS
}


_MIRRORS: dict[type, type[Event]] = {}


def as_event(obj: Any) -> Event:
    """``obj`` as an :class:`Event`: itself, or a RHAPSODY event converted.

    A RHAPSODY event (``rhapsody.telemetry.events.make_event(...)`` of a class
    from its ``define_event``, or one of its own events) becomes an instance
    of the event class registered under its ``event_type`` when that class
    has its fields, else of a class made once for it with the same fields.

    Raises:
        TypeError: ``obj`` is not an event.
        ValueError: its fields cannot be an event's here (see ``define_event``).
    """
    if isinstance(obj, Event):
        return obj
    event_type = getattr(obj, "event_type", None)
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type) or not event_type:
        raise TypeError(
            f"emit() takes an Event (from asyncflow's or RHAPSODY's define_event), "
            f"not {type(obj).__name__}"
        )
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    own = {k: v for k, v in values.items() if k not in _BASE_FIELDS}
    cls = _REGISTRY.get(str(event_type))
    if cls is None or not set(own) <= {f.name for f in dataclasses.fields(cls)}:
        cls = _mirror(type(obj), str(event_type), list(own))
    base = {k: v for k, v in values.items() if k in _BASE_FIELDS and k != "event_type"}
    attributes = base.get("attributes")
    base["attributes"] = dict(attributes) if isinstance(attributes, dict) else {}
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**base, **{k: v for k, v in own.items() if k in known})


def _mirror(foreign: type, event_type: str, names: list[str]) -> type[Event]:
    cls = _MIRRORS.get(foreign)
    if cls is None:
        if "." not in event_type or event_type in n.ENGINE_EVENTS:
            raise ValueError(f"event type {event_type!r} cannot be emitted: it has no dot")
        # A class of the same name defined here keeps its registration.
        cls = _make(
            event_type, dict.fromkeys(names), engine=False, register=event_type not in _REGISTRY
        )
        _MIRRORS[foreign] = cls
    return cls
