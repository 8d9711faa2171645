"""Every dashboard, loaded with Grafana's own typed schema (``grafana-foundation-sdk``).

The SDK's models are generated from Grafana's dashboard schema and its
panel and datasource plugins. A dashboard passes when the model reads every
key it has (a key the schema does not know is dropped on the way back to
JSON: a typo, or a setting Grafana would ignore), every panel type is a
panel plugin the schema knows, and every query is typed by its datasource
(Prometheus, Tempo), not left as an unknown query. Broken copies of a
dashboard must fail.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from ..support.stack import DASHBOARDS

sdk = pytest.importorskip("grafana_foundation_sdk", reason="needs the dev extra")

from grafana_foundation_sdk.cog import runtime  # noqa: E402
from grafana_foundation_sdk.cog.encoder import JSONEncoder  # noqa: E402
from grafana_foundation_sdk.cog.plugins import register_default_plugins  # noqa: E402
from grafana_foundation_sdk.models.dashboard import Dashboard  # noqa: E402

BOARDS = sorted(DASHBOARDS.glob("*.json"))
register_default_plugins()
# Core panels that have no options of their own, so no options model in the SDK.
OPTIONLESS_PANELS = {"traces"}


def _dropped(original: Any, back: Any, path: str = "") -> list[str]:
    """The paths of ``original`` that are missing from ``back``."""
    if isinstance(original, dict):
        if not isinstance(back, dict):
            return [path or "/"]
        out: list[str] = []
        for key, value in original.items():
            where = f"{path}/{key}"
            out += [where] if key not in back else _dropped(value, back[key], where)
        return out
    if isinstance(original, list):
        if not isinstance(back, list) or len(back) != len(original):
            return [path]
        return [
            p
            for i, (a, b) in enumerate(zip(original, back, strict=True))
            for p in _dropped(a, b, f"{path}/{i}")
        ]
    return []


def schema_problems(board: dict[str, Any]) -> list[str]:
    """What Grafana's typed schema rejects in ``board`` (empty when it takes all of it)."""
    try:
        model = Dashboard.from_json(copy.deepcopy(board))
        back = json.loads(json.dumps(model, cls=JSONEncoder))
    except Exception as exc:
        return [f"the schema cannot read it: {type(exc).__name__}: {exc}"]
    problems = [f"{path}: not in Grafana's schema" for path in _dropped(board, back)]
    for panel in model.panels or []:
        kind = getattr(panel, "type_val", None)
        if kind in (None, "row"):
            continue
        title = getattr(panel, "title", "")
        if runtime.panelcfg_config(kind) is None and kind not in OPTIONLESS_PANELS:
            problems.append(f"panel {title!r}: {kind!r} is not a panel type Grafana knows")
        problems += [
            f"panel {title!r}: a query of no known datasource type"
            for query in getattr(panel, "targets", None) or []
            if isinstance(query, runtime.UnknownDataquery)
        ]
    return problems


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.name)
def test_grafana_schema_takes_every_dashboard(path: Path) -> None:
    board = json.loads(path.read_text(encoding="utf-8"))
    assert schema_problems(board) == []


def test_the_schema_check_rejects_broken_dashboards() -> None:
    board = json.loads((DASHBOARDS / "campaign-overview.json").read_text(encoding="utf-8"))
    typo = copy.deepcopy(board)
    panel = next(p for p in typo["panels"] if p["type"] == "timeseries")
    panel["fieldconfig"] = panel.pop("fieldConfig")
    assert any("/fieldconfig" in p for p in schema_problems(typo))
    unknown_panel = copy.deepcopy(board)
    next(p for p in unknown_panel["panels"] if p["type"] == "timeseries")["type"] = "timeseriez"
    assert any("'timeseriez' is not a panel type" in p for p in schema_problems(unknown_panel))
    bad_variable = copy.deepcopy(board)
    bad_variable["templating"]["list"][0]["regx"] = "/x/"
    assert any("/templating/list/0/regx" in p for p in schema_problems(bad_variable))
    untyped = copy.deepcopy(board)
    for panel in untyped["panels"]:
        for target in panel.get("targets", []):
            target.pop("datasource", None)
        panel.pop("datasource", None)
    assert any("no known datasource type" in p for p in schema_problems(untyped))
