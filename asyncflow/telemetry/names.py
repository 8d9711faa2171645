"""Every telemetry name asyncflow emits: one module, imported everywhere else.

Span names, attribute keys, span event names, engine event names, metric
instrument names, units and the Prometheus series names they become on the
scrape path are an API: the Grafana dashboards, the collector config, the
Dash app and the docs depend on them and are checked against this module by
tests. Nothing here imports anything but the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

# ---------------------------------------------------------------- span tree
LEVEL: Final = "asyncflow.level"
LEVEL_SESSION: Final = "session"
LEVEL_WORKFLOW: Final = "workflow"
LEVEL_BLOCK: Final = "block"
LEVEL_TASK: Final = "task"
LEVELS: Final = (LEVEL_SESSION, LEVEL_WORKFLOW, LEVEL_BLOCK, LEVEL_TASK)
LEVEL_SPAN: Final = "span"  # a span of the user's own (Telemetry.span_scope)

SPAN_SESSION: Final = "session"


def span_name(level: str, name: str | None = None) -> str:
    """``"<level> <name>"``: ``"task simulate"``, ``"workflow train"``; ``"session"``."""
    return level if not name else f"{level} {name}"


# ---------------------------------------------------------------- span attributes
SESSION_ID: Final = "asyncflow.session.id"
# "<service.name> <start, UTC>": what a run selector shows (METRIC_SESSION_INFO).
SESSION_TITLE: Final = "asyncflow.session.title"
WORKFLOW_ID: Final = "asyncflow.workflow_id"
WORKFLOW_NAME: Final = "asyncflow.workflow.name"
WORKFLOW_RESULT: Final = "asyncflow.workflow.result"
BLOCK_UID: Final = "asyncflow.block.uid"
# The workflow id or outer block uid a block was called under ("" at top level).
BLOCK_SCOPE: Final = "asyncflow.block.scope"
TASK_UID: Final = "asyncflow.task.uid"
TASK_NAME: Final = "asyncflow.task.name"
TASK_TYPE: Final = "asyncflow.task.type"
TASK_RESULT: Final = "asyncflow.task.result"
TASK_STATE: Final = "asyncflow.task.state"
TASK_DEPENDS_ON: Final = "asyncflow.task.depends_on"
TASK_CPUS: Final = "asyncflow.task.cpus"
TASK_GPUS: Final = "asyncflow.task.gpus"
TASK_SLOTS: Final = "asyncflow.task.slots"
BACKEND: Final = "asyncflow.backend"
ERROR_TYPE: Final = "error.type"  # the OTel semantic-convention key
RESOURCE_KIND: Final = "asyncflow.resource.kind"
SLOT_STATE: Final = "asyncflow.slot.state"
NODE: Final = "asyncflow.node"
GPU: Final = "asyncflow.gpu"
SERVICE_NAME: Final = "service.name"
SERVICE_INSTANCE_ID: Final = "service.instance.id"
# Retries and the result cache (tasks with retries=, timeout= or cache=).
TASK_ATTEMPTS: Final = "asyncflow.task.attempts"  # attempts made, on the task span
TASK_CACHE: Final = "asyncflow.task.cache"  # CACHE_HIT or CACHE_MISS
CACHE_SOURCE_SESSION: Final = "asyncflow.cache.source_session"  # who stored a hit's result
CACHE_SOURCE_TASK: Final = "asyncflow.cache.source_task"
ATTEMPT_NUMBER: Final = "asyncflow.attempt.number"  # on an attempt span event, 1-based
ATTEMPT_STARTED: Final = "asyncflow.attempt.started_ns"  # when the attempt started (0: never)
ATTEMPT_ERROR: Final = "asyncflow.attempt.error"  # the failed attempt's error message
ATTEMPT_RETRIED: Final = "asyncflow.attempt.retried"  # another attempt follows
ATTEMPT_SLOTS: Final = "asyncflow.attempt.slots"  # the slots the attempt ran on, when assigned

SPAN_ATTRIBUTES: Final = frozenset(
    {
        LEVEL,
        SESSION_ID,
        WORKFLOW_ID,
        WORKFLOW_NAME,
        WORKFLOW_RESULT,
        BLOCK_UID,
        BLOCK_SCOPE,
        TASK_UID,
        TASK_NAME,
        TASK_TYPE,
        TASK_RESULT,
        TASK_DEPENDS_ON,
        TASK_CPUS,
        TASK_GPUS,
        TASK_SLOTS,
        BACKEND,
        ERROR_TYPE,
        TASK_ATTEMPTS,
        TASK_CACHE,
        CACHE_SOURCE_SESSION,
        CACHE_SOURCE_TASK,
    }
)
# Attributes of an attempt span event.
ATTEMPT_ATTRIBUTES: Final = (
    ATTEMPT_NUMBER,
    ATTEMPT_STARTED,
    ERROR_TYPE,
    ATTEMPT_ERROR,
    ATTEMPT_RETRIED,
    ATTEMPT_SLOTS,
)

# Values of TASK_TYPE, TASK_RESULT, TASK_STATE, WORKFLOW_RESULT, SLOT_STATE.
TYPE_FUNCTION: Final = "function"
TYPE_EXECUTABLE: Final = "executable"
TYPE_PROMPT: Final = "prompt"
TYPE_BLOCK: Final = "block"
RESULT_COMPLETED: Final = "completed"
RESULT_FAILED: Final = "failed"
RESULT_CANCELED: Final = "canceled"
STATE_PENDING: Final = "pending"
STATE_RUNNING: Final = "running"
SLOT_BUSY: Final = "busy"
SLOT_IDLE: Final = "idle"
KIND_CPU: Final = "cpu"
KIND_GPU: Final = "gpu"
CACHE_HIT: Final = "hit"  # the result came from the cache: the task did not run
CACHE_MISS: Final = "miss"  # a cached task that ran (its result is stored)

# Span status codes (OpenTelemetry's), the checkpoint file's "status_code".
STATUS_OK: Final = "OK"
STATUS_ERROR: Final = "ERROR"
STATUS_UNSET: Final = "UNSET"

# The engine's uids: "task.000001" for tasks, "block.000002" for blocks.
UID_PREFIX_TASK: Final = "task."
UID_PREFIX_BLOCK: Final = "block."

# Span events on task and block spans: wait, queue and run segments.
SPAN_EVENT_RESOLVED: Final = "resolved"
SPAN_EVENT_QUEUED: Final = "queued"
SPAN_EVENT_SUBMITTED: Final = "submitted"
SPAN_EVENT_STARTED: Final = "started"
SPAN_EVENTS: Final = (
    SPAN_EVENT_RESOLVED,
    SPAN_EVENT_QUEUED,
    SPAN_EVENT_SUBMITTED,
    SPAN_EVENT_STARTED,
)
# One per attempt of a task with retries, at the attempt's end (ATTEMPT_ATTRIBUTES).
SPAN_EVENT_ATTEMPT: Final = "attempt"

# A failed task's span: the OTel semantic-convention ``exception`` event, and
# for a failed executable its exit code or signal and the end of its stderr.
SPAN_EVENT_EXCEPTION: Final = "exception"
EXCEPTION_TYPE: Final = "exception.type"
EXCEPTION_MESSAGE: Final = "exception.message"
EXCEPTION_STACKTRACE: Final = "exception.stacktrace"
PROCESS_EXIT_CODE: Final = "process.exit.code"
PROCESS_SIGNAL: Final = "asyncflow.process.signal"
PROCESS_STDERR_TAIL: Final = "asyncflow.process.stderr_tail"
STDERR_TAIL_BYTES: Final = 4096  # the most of a failed executable's stderr recorded
STACKTRACE_CHARS: Final = 16384  # the most of a traceback recorded

# ---------------------------------------------------------------- phases
# The steps of a task's life, and the phases between them: the one meaning
# of every "wait" and "duration" in metrics, Grafana panels, Dash views,
# reports and docs. A phase is the time from its first step to its second.
STEP_CREATED: Final = "created"
STEP_RESOLVED: Final = SPAN_EVENT_RESOLVED
STEP_SUBMITTED: Final = SPAN_EVENT_SUBMITTED
STEP_STARTED: Final = SPAN_EVENT_STARTED
STEP_ENDED: Final = "ended"

PHASE_DEPENDENCY_WAIT: Final = "dependency wait"
PHASE_QUEUE_WAIT: Final = "queue wait"
PHASE_ENGINE_QUEUE: Final = "queue wait: engine"  # resolved -> submitted to the backend
PHASE_BACKEND_QUEUE: Final = "queue wait: backend"  # submitted -> started (slots, workers)
PHASE_RUN_TIME: Final = "run time"
PHASE_TOTAL: Final = "total"

PHASES: Final[dict[str, tuple[str, str]]] = {
    PHASE_DEPENDENCY_WAIT: (STEP_CREATED, STEP_RESOLVED),
    PHASE_QUEUE_WAIT: (STEP_RESOLVED, STEP_STARTED),
    PHASE_ENGINE_QUEUE: (STEP_RESOLVED, STEP_SUBMITTED),
    PHASE_BACKEND_QUEUE: (STEP_SUBMITTED, STEP_STARTED),
    PHASE_RUN_TIME: (STEP_STARTED, STEP_ENDED),
    PHASE_TOTAL: (STEP_CREATED, STEP_ENDED),
}
# The phases that follow each other without overlap, created to ended.
MAIN_PHASES: Final = (PHASE_DEPENDENCY_WAIT, PHASE_QUEUE_WAIT, PHASE_RUN_TIME)


def phase_seconds(phase: str, steps: Mapping[str, float | None]) -> float | None:
    """How long ``phase`` lasted, from the step times (seconds); ``None`` if a step is missing.

    Args:
        phase: one of :data:`PHASES`.
        steps: step name -> time, ``None`` (or absent) for a step not reached.

    Raises:
        KeyError: ``phase`` is not a phase.
    """
    first, second = PHASES[phase]
    begin, end = steps.get(first), steps.get(second)
    if begin is None or end is None:
        return None
    return max(0.0, end - begin)


# ---------------------------------------------------------------- events
EVENT_SESSION_STARTED: Final = "SessionStarted"
EVENT_TASK_CREATED: Final = "TaskCreated"
EVENT_TASK_RESOLVED: Final = "asyncflow.TaskResolved"
EVENT_TASK_QUEUED: Final = "TaskQueued"
EVENT_TASK_SUBMITTED: Final = "TaskSubmitted"
EVENT_TASK_STARTED: Final = "TaskStarted"
EVENT_TASK_COMPLETED: Final = "TaskCompleted"
EVENT_TASK_FAILED: Final = "TaskFailed"
EVENT_TASK_CANCELED: Final = "TaskCanceled"
EVENT_RESOURCE_UPDATE: Final = "ResourceUpdate"
# ``ResourceUpdate.resource_scope`` (RHAPSODY's values).
SCOPE_PER_NODE: Final = "per_node"
SCOPE_PER_GPU: Final = "per_gpu"
# User events kept as span events of the session span (what OTLP gets).
SESSION_NOTES_KEPT: Final = 1000
EVENT_RESOURCE_ASSIGNED: Final = "asyncflow.ResourceAssigned"
EVENT_SESSION_ENDED: Final = "SessionEnded"

TASK_LIFECYCLE_EVENTS: Final = (
    EVENT_TASK_CREATED,
    EVENT_TASK_RESOLVED,
    EVENT_TASK_QUEUED,
    EVENT_TASK_SUBMITTED,
    EVENT_TASK_STARTED,
)
TASK_FINAL_EVENTS: Final = (EVENT_TASK_COMPLETED, EVENT_TASK_FAILED, EVENT_TASK_CANCELED)
ENGINE_EVENTS: Final = (
    EVENT_SESSION_STARTED,
    *TASK_LIFECYCLE_EVENTS,
    *TASK_FINAL_EVENTS,
    EVENT_RESOURCE_UPDATE,
    EVENT_RESOURCE_ASSIGNED,
    EVENT_SESSION_ENDED,
)

# Base fields of every event record.
EVENT_BASE_FIELDS: Final = (
    "event_id",
    "event_type",
    "event_time",
    "emit_time",
    "session_id",
    "backend",
    "task_id",
    "node_id",
    "attributes",
)

# ---------------------------------------------------------------- metrics
METRIC_TASK_DURATION: Final = "asyncflow.task.duration"
METRIC_TASK_QUEUE_DURATION: Final = "asyncflow.task.queue.duration"
METRIC_TASK_RUN_DURATION: Final = "asyncflow.task.run.duration"
METRIC_TASKS_ACTIVE: Final = "asyncflow.tasks.active"
METRIC_WORKFLOW_DURATION: Final = "asyncflow.workflow.duration"
METRIC_WORKFLOWS_ACTIVE: Final = "asyncflow.workflows.active"
METRIC_RESOURCE_SLOTS: Final = "asyncflow.resource.slots"
METRIC_NODE_CPU: Final = "asyncflow.node.cpu.utilization"
METRIC_NODE_MEMORY: Final = "asyncflow.node.memory.utilization"
METRIC_NODE_GPU: Final = "asyncflow.node.gpu.utilization"
METRIC_TASK_RETRIES: Final = "asyncflow.task.retries"
METRIC_CACHE_LOOKUPS: Final = "asyncflow.task.cache.lookups"
METRIC_SESSION_INFO: Final = "asyncflow.session.info"  # 1, labelled with the session's title

# The phase each task histogram measures (see PHASES).
METRIC_PHASES: Final[dict[str, str]] = {
    METRIC_TASK_DURATION: PHASE_TOTAL,
    METRIC_TASK_QUEUE_DURATION: PHASE_QUEUE_WAIT,
    METRIC_TASK_RUN_DURATION: PHASE_RUN_TIME,
}

UNIT_SECONDS: Final = "s"
UNIT_PERCENT: Final = "%"
UNIT_TASKS: Final = "{task}"
UNIT_WORKFLOWS: Final = "{workflow}"
UNIT_SLOTS: Final = "{slot}"
UNIT_RETRIES: Final = "{retry}"
UNIT_LOOKUPS: Final = "{lookup}"
UNIT_SESSIONS: Final = "{session}"

# Explicit histogram buckets (seconds): from sub-millisecond no-ops to
# day-long simulations.
DURATION_BUCKETS: Final = (
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    14400.0,
    86400.0,
)

# The labels each instrument may carry (bounded cardinality: never a task
# uid, a workflow instance id, a message or a path).
METRIC_ATTRIBUTES: Final[dict[str, tuple[str, ...]]] = {
    METRIC_TASK_DURATION: (TASK_NAME, TASK_TYPE, TASK_RESULT, BACKEND, WORKFLOW_NAME, ERROR_TYPE),
    METRIC_TASK_QUEUE_DURATION: (BACKEND, WORKFLOW_NAME),
    METRIC_TASK_RUN_DURATION: (TASK_NAME, TASK_TYPE, TASK_RESULT, BACKEND, WORKFLOW_NAME),
    METRIC_TASKS_ACTIVE: (TASK_STATE, BACKEND),
    METRIC_WORKFLOW_DURATION: (WORKFLOW_NAME, WORKFLOW_RESULT),
    METRIC_WORKFLOWS_ACTIVE: (WORKFLOW_NAME,),
    METRIC_RESOURCE_SLOTS: (BACKEND, RESOURCE_KIND, SLOT_STATE),
    METRIC_NODE_CPU: (NODE,),
    METRIC_NODE_MEMORY: (NODE,),
    METRIC_NODE_GPU: (NODE, GPU),
    METRIC_TASK_RETRIES: (TASK_NAME, BACKEND, WORKFLOW_NAME, ERROR_TYPE),
    METRIC_CACHE_LOOKUPS: (TASK_NAME, WORKFLOW_NAME, TASK_CACHE),
    METRIC_SESSION_INFO: (SESSION_TITLE,),
}


def prometheus_label(attribute: str) -> str:
    """The Prometheus label an attribute key becomes (dots to underscores)."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in attribute)


# Series names on the scrape path (OTel Prometheus exporter, and the
# collector's Prometheus exporter with the same translation). Histograms add
# _bucket, _sum and _count.
PROM_TASK_DURATION: Final = "asyncflow_task_duration_seconds"
PROM_TASK_QUEUE_DURATION: Final = "asyncflow_task_queue_duration_seconds"
PROM_TASK_RUN_DURATION: Final = "asyncflow_task_run_duration_seconds"
PROM_TASKS_ACTIVE: Final = "asyncflow_tasks_active"
PROM_WORKFLOW_DURATION: Final = "asyncflow_workflow_duration_seconds"
PROM_WORKFLOWS_ACTIVE: Final = "asyncflow_workflows_active"
PROM_RESOURCE_SLOTS: Final = "asyncflow_resource_slots"
PROM_NODE_CPU: Final = "asyncflow_node_cpu_utilization_percent"
PROM_NODE_MEMORY: Final = "asyncflow_node_memory_utilization_percent"
PROM_NODE_GPU: Final = "asyncflow_node_gpu_utilization_percent"
PROM_TASK_RETRIES: Final = "asyncflow_task_retries_total"
PROM_CACHE_LOOKUPS: Final = "asyncflow_task_cache_lookups_total"
PROM_SESSION_INFO: Final = "asyncflow_session_info"

PROMETHEUS_NAMES: Final[dict[str, str]] = {
    METRIC_TASK_DURATION: PROM_TASK_DURATION,
    METRIC_TASK_QUEUE_DURATION: PROM_TASK_QUEUE_DURATION,
    METRIC_TASK_RUN_DURATION: PROM_TASK_RUN_DURATION,
    METRIC_TASKS_ACTIVE: PROM_TASKS_ACTIVE,
    METRIC_WORKFLOW_DURATION: PROM_WORKFLOW_DURATION,
    METRIC_WORKFLOWS_ACTIVE: PROM_WORKFLOWS_ACTIVE,
    METRIC_RESOURCE_SLOTS: PROM_RESOURCE_SLOTS,
    METRIC_NODE_CPU: PROM_NODE_CPU,
    METRIC_NODE_MEMORY: PROM_NODE_MEMORY,
    METRIC_NODE_GPU: PROM_NODE_GPU,
    METRIC_TASK_RETRIES: PROM_TASK_RETRIES,
    METRIC_CACHE_LOOKUPS: PROM_CACHE_LOOKUPS,
    METRIC_SESSION_INFO: PROM_SESSION_INFO,
}
# Monotonic counters (they only grow; Prometheus adds _total).
COUNTER_METRICS: Final = frozenset({METRIC_TASK_RETRIES, METRIC_CACHE_LOOKUPS})
HISTOGRAM_METRICS: Final = frozenset(
    {
        METRIC_TASK_DURATION,
        METRIC_TASK_QUEUE_DURATION,
        METRIC_TASK_RUN_DURATION,
        METRIC_WORKFLOW_DURATION,
    }
)


def prometheus_series(metric: str) -> tuple[str, ...]:
    """Every series name an instrument produces on the scrape path."""
    base = PROMETHEUS_NAMES[metric]
    if metric in HISTOGRAM_METRICS:
        return (f"{base}_bucket", f"{base}_sum", f"{base}_count")
    return (base,)


# ---------------------------------------------------------------- checkpoint file
SECTION: Final = "section"
SECTION_EVENT: Final = "event"
SECTION_SPAN: Final = "span"
SECTION_METRIC: Final = "metric"
CHECKPOINT_SUFFIX: Final = ".telemetry.jsonl"

# Checkpoint layout 2 (docs/telemetry.md, "The checkpoint file"): a header
# line first, then a task's lifecycle as small ``task`` lines whose fields
# add up to the task (a file without a header is layout 1: full event lines
# and a span line per task).
CHECKPOINT_LAYOUT: Final = 2
SECTION_HEADER: Final = "header"
SECTION_TASK: Final = "task"
HEADER_LAYOUT: Final = "layout"
HEADER_SESSION_ID: Final = "session_id"
HEADER_NODE_ID: Final = "node_id"
HEADER_TRACE_ID: Final = "trace_id"
# Fields of ``task`` lines. Times are integer nanoseconds since the epoch.
TL_UID: Final = "uid"
TL_CREATED: Final = "created"  # the created line: the fields below it come with it
TL_EVENT_ID: Final = "id"  # the task's first event id (a block of 8)
TL_SPAN: Final = "span"  # span id, hex
TL_PARENT: Final = "parent"  # parent span id, hex
TL_BACKEND: Final = "backend"
TL_WORKFLOW_ID: Final = "workflow_id"  # the workflow id or block uid it was called under
TL_LEVEL: Final = "level"
TL_NAME: Final = "name"
TL_WORKFLOW_NAME: Final = "workflow_name"
TL_TYPE: Final = "type"
TL_CPUS: Final = "cpus"
TL_GPUS: Final = "gpus"
TL_STEPS: Final = (SPAN_EVENT_RESOLVED, SPAN_EVENT_QUEUED, SPAN_EVENT_SUBMITTED, SPAN_EVENT_STARTED)
TL_ASSIGNED: Final = "assigned"  # with the slots (and cpus, gpus) given
TL_SLOTS: Final = "slots"
TL_ASSIGNED_ID: Final = "assigned_id"  # a later attempt's assignment: its own event id
TL_ATTEMPT_ENDED: Final = "attempt_ended"  # with ``attempt``: that attempt's attributes
TL_ATTEMPT: Final = "attempt"
TL_ENDED: Final = "ended"  # the final line: the fields below come with it
TL_RESULT: Final = "result"
TL_STATUS: Final = "status"
TL_DESCRIPTION: Final = "description"
TL_ERROR_TYPE: Final = "error_type"
TL_DEPENDS_ON: Final = "depends_on"
TL_ATTRIBUTES: Final = "attributes"  # span attributes beyond the task's own
TL_EXCEPTION: Final = "exception"  # the exception event's attributes
# The final event line of a layout 1 file, by the task's result.
FINAL_EVENT_OF_RESULT: Final = {
    RESULT_COMPLETED: EVENT_TASK_COMPLETED,
    RESULT_FAILED: EVENT_TASK_FAILED,
    RESULT_CANCELED: EVENT_TASK_CANCELED,
}

# What a checkpoint record must look like to be read. A line can be valid
# JSON and still not be a record a reader can use (a span whose
# ``attributes`` is a string): every reader asks ``record_problem`` and
# skips, and counts, what it objects to. Fields a record leaves out are fine:
# files written by hand or by other tools carry fewer of them.
_SPAN_TEXT = ("name", "span_id", "trace_id", "status_code", "status_description")
_SPAN_TIMES = ("start_ns", "end_ns")
_EVENT_TEXT = ("task_id", "session_id", "node_id", "backend", "span_id")
_EVENT_TIMES = ("event_time", "emit_time")
_METRIC_MAPS = ("tasks_by_state", "active_tasks", "active_workflows", "resource_slots", "node")


def record_problem(record: Any) -> str | None:
    """What is wrong with a parsed checkpoint line, or None if it can be read."""
    if not isinstance(record, Mapping):
        return f"a JSON {type(record).__name__}, not an object"
    section = record.get(SECTION)
    if section == SECTION_SPAN:
        return _span_problem(record)
    if section == SECTION_EVENT:
        return _event_problem(record)
    if section == SECTION_TASK:
        return _task_line_problem(record)
    if section == SECTION_HEADER:
        layout = record.get(HEADER_LAYOUT)
        return None if type(layout) is int else "header without a layout number"
    if section == SECTION_METRIC:
        for key in _METRIC_MAPS:
            if key in record and not isinstance(record[key], Mapping):
                return f"metric {key} is not an object"
        return None
    return f"unknown section {section!r}"


def _span_problem(record: Mapping[str, Any]) -> str | None:
    attrs = record.get("attributes")
    if attrs is not None and not isinstance(attrs, Mapping):
        return "span attributes are not an object"
    events = record.get("events")
    if events is not None and not (
        isinstance(events, list) and all(isinstance(e, Mapping) for e in events)
    ):
        return "span events are not a list of objects"
    return _typed(record, _SPAN_TEXT, str, "text") or _typed(record, _SPAN_TIMES, int, "integer")


_TL_TIMES = (TL_CREATED, *TL_STEPS, TL_ASSIGNED, TL_ATTEMPT_ENDED, TL_ENDED)
_TL_MAPS = (TL_ATTEMPT, TL_ATTRIBUTES, TL_EXCEPTION)


def _task_line_problem(record: Mapping[str, Any]) -> str | None:
    uid = record.get(TL_UID)
    if not isinstance(uid, str) or not uid:
        return "task line without a uid"
    for key in _TL_MAPS:
        if key in record and not isinstance(record[key], Mapping):
            return f"task {key} is not an object"
    return _typed(record, _TL_TIMES, int, "integer")


def _event_problem(record: Mapping[str, Any]) -> str | None:
    if not isinstance(record.get("name"), str):
        return "event without a name"
    attrs = record.get("attributes")
    if attrs is not None and not isinstance(attrs, Mapping):
        return "event attributes are not an object"
    return _typed(record, _EVENT_TEXT, str, "text") or _typed(
        record, _EVENT_TIMES, (int, float), "number"
    )


def _typed(record: Mapping[str, Any], keys: tuple[str, ...], kind: Any, what: str) -> str | None:
    for key in keys:
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            return f"{key} is not {'an' if what[0] in 'aeiou' else 'a'} {what}"
    return None


# ---------------------------------------------------------------- environment
ENV_PROMETHEUS_PORT: Final = "ASYNCFLOW_PROMETHEUS_PORT"
ENV_RESUME: Final = "ASYNCFLOW_RESUME"
ENV_SERVICE_NAME: Final = "OTEL_SERVICE_NAME"
ENV_OTLP_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
ENV_OTLP_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_PROTOCOL"
# The telemetry process's niceness increment (default 10: it yields to the work).
ENV_TELEMETRY_NICE: Final = "ASYNCFLOW_TELEMETRY_NICE"
TELEMETRY_NICE: Final = 10
DEFAULT_SERVICE_NAME: Final = "asyncflow"
