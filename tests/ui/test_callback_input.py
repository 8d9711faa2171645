"""Malformed values posted to the Dash callbacks get an answer with a
message, never an HTTP 500 (the real app, through its Flask server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from asyncflow.dashboard.app import create_app
from asyncflow.dashboard.sources import CheckpointSource
from asyncflow.telemetry import names as n

from . import records as r

MALFORMED = [{"x": 1}, 12, "zz", [[1]], [{"a": 1}], True, -1.5]


def requests(app: Any) -> list[tuple[str, dict[str, Any]]]:
    """A request per server callback, input or state and malformed value."""
    out = []
    for output, spec in app.callback_map.items():
        if "callback" not in spec:  # clientside: the browser runs it, not the server
            continue
        inputs, states = spec["inputs"], spec.get("state", [])
        outputs = [
            {"id": part.split(".")[0], "property": part.split(".")[1].split("@")[0]}
            for part in output.strip(".").split("...")
        ]
        for position in range(len(inputs) + len(states)):
            for bad in MALFORMED:
                values = [
                    {"id": d["id"], "property": d["property"], "value": None}
                    for d in inputs + states
                ]
                values[position]["value"] = bad
                payload = {
                    "output": output,
                    "outputs": outputs if len(outputs) > 1 else outputs[0],
                    "inputs": values[: len(inputs)],
                    "state": values[len(inputs) :],
                    "changedPropIds": [f"{inputs[0]['id']}.{inputs[0]['property']}"],
                }
                out.append((f"{output} #{position} = {bad!r}", payload))
    return out


@pytest.fixture
def app(tmp_path: Path) -> Any:
    path = tmp_path / f"run{n.CHECKPOINT_SUFFIX}"
    path.write_text("".join(json.dumps(s) + "\n" for s in [r.session_span(), *r.campaign_spans()]))
    return create_app(CheckpointSource(path))


def test_malformed_callback_values_get_a_message_not_a_500(app: Any) -> None:
    client = app.server.test_client()
    assert client.get("/").status_code == 200
    answered = 0
    for what, payload in requests(app):
        response = client.post("/_dash-update-component", json=payload)
        assert response.status_code < 500, what
        if "could not answer" in response.get_data(as_text=True):
            answered += 1
    # Values the callbacks cannot use are answered with the message.
    assert answered > 0
