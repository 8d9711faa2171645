"""What a PromQL expression names: its metric names and label names.

A lexer, not a parser: whether an expression parses is left to the real
Prometheus (``promtool check rules`` and the HTTP API). On an expression that
does parse, ``inspect`` finds every vector selector's metric name (and a
``__name__`` matcher), every label a matcher uses, and every label a
``by``/``without``/``on``/``ignoring``/``group_left``/``group_right`` list
names. That is what a dashboard check needs to compare with the names the
engine emits.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = ["PromQLNames", "inspect", "substitute"]

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:[a-zA-Z]+\d*)*)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=@,{}()\[\]])
    """,
    re.VERBOSE,
)
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = _LABEL_LISTS | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
_VARIABLE = re.compile(
    r"\$\{([a-zA-Z0-9_]+)(?::[^}]*)?\}|\$([a-zA-Z0-9_]+)|\[\[([a-zA-Z0-9_]+)\]\]"
)


@dataclasses.dataclass
class PromQLNames:
    """The names one expression uses."""

    metrics: set[str] = dataclasses.field(default_factory=set)
    matcher_labels: set[str] = dataclasses.field(default_factory=set)
    grouping_labels: set[str] = dataclasses.field(default_factory=set)

    @property
    def labels(self) -> set[str]:
        return self.matcher_labels | self.grouping_labels


def _tokens(expr: str) -> list[tuple[str, str]]:
    tokens = []
    position = 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise ValueError(
                f"cannot read PromQL at {position}: {expr[position : position + 20]!r}"
            )
        position = match.end()
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append((kind, match.group()))
    return tokens


def _string_value(literal: str) -> str:
    body = literal[1:-1]
    return body if literal[0] == "`" else re.sub(r"\\(.)", r"\1", body)


def inspect(expr: str) -> PromQLNames:
    """The metric names and label names ``expr`` uses (variables substituted first)."""
    tokens = _tokens(expr)
    found = PromQLNames()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "op" and text == "{":
            i = _matchers(tokens, i + 1, found)
            continue
        if kind == "op" and text == "[":  # range or subquery: durations only
            while i < len(tokens) and tokens[i][1] != "]":
                i += 1
            i += 1
            continue
        if kind == "ident":
            word = text.lower()
            if word in _LABEL_LISTS:
                i += 1
                if i < len(tokens) and tokens[i][1] == "(":
                    i += 1
                    while i < len(tokens) and tokens[i][1] != ")":
                        if tokens[i][0] == "ident":
                            found.grouping_labels.add(tokens[i][1])
                        i += 1
                    i += 1
                continue
            # A name followed by "(" is a function; by "by"/"without", an
            # aggregation with its grouping first ("sum by (le) (...)").
            if word not in _KEYWORDS and following.lower() not in ("(", "by", "without"):
                found.metrics.add(text)
        i += 1
    return found


def _matchers(tokens: list[tuple[str, str]], i: int, found: PromQLNames) -> int:
    """Read ``label op "value", ...`` up to the closing brace; returns the index after it."""
    while i < len(tokens) and tokens[i][1] != "}":
        kind, text = tokens[i]
        if kind in ("ident", "string") and i + 2 < len(tokens):
            operator, value = tokens[i + 1], tokens[i + 2]
            if operator[1] in ("=", "!=", "=~", "!~") and value[0] == "string":
                label = text if kind == "ident" else _string_value(text)
                if label == "__name__" and operator[1] == "=":
                    found.metrics.add(_string_value(value[1]))
                elif label != "__name__":
                    found.matcher_labels.add(label)
                i += 3
                continue
            if kind == "string":  # {"utf8.metric.name"}
                found.metrics.add(_string_value(text))
        i += 1
    return i + 1


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace Grafana variables (``$x``, ``${x}``, ``${x:fmt}``, ``[[x]]``) by ``values``.

    Raises:
        KeyError: a variable that ``values`` does not have.
    """

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return values[name]

    return _VARIABLE.sub(replace, expr)
