"""The series names the collector's ``prometheus`` exporter gives OTLP metrics.

The collector cannot run on these machines, so its naming is transcribed
here from the translator it uses (``prometheus/otlptranslator``'s
``MetricNamer`` and ``LabelNamer`` with ``translation_strategy:
UnderscoreEscapingWithSuffixes``, as collector/otelcol-config.yaml sets):

- the name is split on every character that is not a letter, digit or
  colon (underscores too), and the non-empty pieces joined with underscores;
- the unit's annotations (``{task}``) are dropped; the rest is mapped
  (``s`` -> ``seconds``, ``%`` -> ``percent``) and appended unless already
  one of the pieces; ``a/b`` becomes ``a_per_b``;
- a monotonic sum gets ``_total``; a gauge of unit ``1`` gets ``_ratio``;
- a histogram adds ``_bucket``, ``_sum`` and ``_count``;
- attribute keys have every character but letters, digits and underscores
  replaced by an underscore, runs of underscores collapsed, and ``key_``
  put before a leading digit.

``UNITS`` holds only the units it knows; a test fails on any other unit, so a
new unit in the engine means checking its translation first. The live stack
confirms the names for real (scripts/stack-smoke.sh queries Prometheus for
every name in ``asyncflow.telemetry.names``).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["PER_UNITS", "UNITS", "collector_label", "collector_series", "config_problems"]

_SECTIONS = {
    "receivers": "receiver",
    "processors": "processor",
    "exporters": "exporter",
    "connectors": "connector",
    "extensions": "extension",
}

UNITS = {
    "": "",
    "1": "",
    "%": "percent",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "min": "minutes",
    "h": "hours",
    "d": "days",
    "By": "bytes",
}
PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}
_ANNOTATION = re.compile(r"\{[^}]*\}")
_NAME_SEPARATOR = re.compile(r"[^a-zA-Z0-9:]")
_LABEL_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def _unit_suffixes(unit: str) -> tuple[str, str]:
    unit = _ANNOTATION.sub("", unit).strip()
    main, _, per = unit.partition("/")
    if main not in UNITS or (per and per not in PER_UNITS):
        raise KeyError(f"unit {unit!r}: its collector translation is not transcribed here")
    return UNITS[main], PER_UNITS.get(per, "")


def collector_series(name: str, unit: str, kind: str, monotonic: bool = False) -> tuple[str, ...]:
    """The series an OTLP metric becomes on the collector's ``/metrics``.

    Args:
        name: the OTLP metric name (``asyncflow.task.duration``).
        unit: its unit (``s``, ``%``, ``{task}``).
        kind: ``gauge``, ``sum`` or ``histogram`` (the OTLP data field).
        monotonic: for a sum, whether it is monotonic (a counter).
    """
    pieces = [piece for piece in _NAME_SEPARATOR.split(name) if piece]
    main, per = _unit_suffixes(unit)
    if main and main not in pieces:
        pieces.append(main)
    if per and per not in pieces:
        pieces += ["per", per]
    if kind == "sum" and monotonic:
        pieces = [piece for piece in pieces if piece != "total"] + ["total"]
    if kind == "gauge" and unit == "1":
        pieces = [piece for piece in pieces if piece != "ratio"] + ["ratio"]
    base = "_".join(pieces)
    if base[:1].isdigit():
        base = "_" + base
    if kind == "histogram":
        return (f"{base}_bucket", f"{base}_sum", f"{base}_count")
    return (base,)


def collector_label(key: str) -> str:
    """The label an attribute key becomes on the collector's ``/metrics``."""
    label = re.sub("_+", "_", _LABEL_INVALID.sub("_", key))
    if label[:1].isdigit():
        label = "key_" + label
    return label


def config_problems(config: dict[str, Any], allowed: dict[str, set[str]]) -> list[str]:
    """Every problem of a collector config: undefined or unused components, unknown types.

    Args:
        config: the parsed otelcol config.
        allowed: component types by kind (``receiver``, ``exporter``...), the
            allowlist of the pinned release.
    """
    problems = []
    defined = {section: set(config.get(section) or {}) for section in _SECTIONS}
    for section, kind in _SECTIONS.items():
        for component in sorted(defined[section]):
            component_type = component.split("/", 1)[0]
            if component_type not in allowed.get(kind, set()):
                problems.append(f"{kind} type {component_type!r} ({component}) is not allowlisted")
    service = config.get("service") or {}
    used: dict[str, set[str]] = {section: set() for section in _SECTIONS}
    for extension in service.get("extensions", []):
        used["extensions"].add(extension)
        if extension not in defined["extensions"]:
            problems.append(f"service uses extension {extension!r}, which is not defined")
    # A connector joins pipelines: an exporter of one, a receiver of another.
    connectors_in, connectors_out = set(), set()
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        problems.append("service has no pipelines")
    for pipeline_id, pipeline in pipelines.items():
        signal = pipeline_id.split("/", 1)[0]
        if signal not in ("traces", "metrics", "logs", "profiles"):
            problems.append(f"pipeline {pipeline_id!r}: unknown signal {signal!r}")
        if not pipeline.get("receivers") or not pipeline.get("exporters"):
            problems.append(f"pipeline {pipeline_id!r} needs receivers and exporters")
        for role in ("receivers", "processors", "exporters"):
            for component in pipeline.get(role) or []:
                if component in defined[role]:
                    used[role].add(component)
                elif role != "processors" and component in defined["connectors"]:
                    used["connectors"].add(component)
                    (connectors_out if role == "receivers" else connectors_in).add(component)
                else:
                    problems.append(
                        f"pipeline {pipeline_id!r}: {role[:-1]} {component!r} is not defined"
                    )
    problems += [
        f"connector {connector!r} must export from one pipeline and receive in another"
        for connector in sorted(connectors_in ^ connectors_out)
    ]
    problems += [
        f"{kind} {component!r} is defined but never used"
        for section, kind in _SECTIONS.items()
        for component in sorted(defined[section] - used[section])
    ]
    return problems
