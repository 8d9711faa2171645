"""The Dash application: a thin layout and callbacks over ``sources`` and ``figures``.

Every callback reads the run the server last polled and hands it to a pure
figure builder. A figure is rebuilt only when its tab is open and the run
or a filter changed. Nothing here changes data or runs user code; any
failure becomes a message in the page, never a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dash
import plotly.graph_objects as go
from dash import ALL, Input, Output, State, dcc, html

from . import _choices as ch
from . import compute as c
from . import figures as f
from ._base import SpanSource
from ._board import Dashboard, campaign, preload
from ._panel import TASK_LINK, task_link, task_panel
from ._plot import clock_axes
from .model import (
    STATE_QUEUED,
    STATE_RUNNING,
    STATE_WAITING,
    STATUSES,
    Run,
)

__all__ = ["Dashboard", "campaign", "create_app", "preload", "serve"]

logger = logging.getLogger("asyncflow.dashboard")

OPTION_LIMIT = 200  # instances listed in the dropdown; a click on the timeline reaches any
TABS = ("campaign", "workflow", "slots", "utilisation", "summary")
AXIS_SECONDS, AXIS_CLOCK = "seconds", "clock"


def _messages(run: Run | None, error: str) -> list[Any]:
    out: list[Any] = []
    if error:
        out.append(html.Div(error, className="message error"))
    if run is not None:
        out.extend(html.Div(text, className="message warning") for text in c.notices(run))
    return out


def _chips(run: Run | None) -> list[Any]:
    if run is None:
        return []
    counts = ch.state_counts(run)
    chips = [("tasks", len(run.tasks))] + [(s, counts[s]) for s in STATUSES if counts[s]]
    live = not run.ended and (
        counts[STATE_RUNNING] or counts[STATE_QUEUED] or counts[STATE_WAITING]
    )
    items = [html.Span([html.B(str(v)), f" {k}"], className=f"chip state-{k}") for k, v in chips]
    items.append(html.Span(f"{run.rel(run.end):.1f} s", className="chip"))
    status = "stopped" if run.stopped else "live" if live else "ended" if run.ended else "idle"
    items.append(html.Span(status, className="chip"))
    return items


def _session_start(run: Run | None) -> str:
    if run is None or not run.start:
        return ""
    return f"session started {f.clock(run.start, date=True)}"


def _table(header: list[str], rows: list[list[Any]]) -> html.Table:
    return html.Table(
        [
            html.Thead(html.Tr([html.Th(h) for h in header])),
            html.Tbody([html.Tr([html.Td(v) for v in row]) for row in rows]),
        ],
        className="table",
    )


def _summary(run: Run | None, capacity: Mapping[str, int]) -> list[Any]:
    if run is None or not run.tasks:
        return []
    summary = c.summarize(run, capacity)
    out: list[Any] = [html.P(c.headline(summary))]
    for title, header, rows in c.summary_tables(summary):
        out.append(html.H4(title))
        cells: list[list[Any]] = [list(row) for row in rows]
        if "example" in header:  # the failures: open the example task in the panel
            at = header.index("example")
            cells = [[_linked(v) if i == at else v for i, v in enumerate(r)] for r in rows]
        out.append(_table(header, cells) if cells else html.P("None."))
    return out


def _linked(uid: str) -> Any:
    return task_link(uid) if uid else uid


def _instances(shown: list[ch.Instance], chosen: Any) -> tuple[list[dict[str, str]], Any]:
    """The instance dropdown's options and value: the first instances, and the chosen one.

    Without a (valid) choice, the first failed instance is chosen, else the first.
    """
    listed = shown[:OPTION_LIMIT]
    keys = {r.key: r for r in shown}
    if chosen not in keys:
        failed = (r for r in listed if r.failed)
        first = next(failed, listed[0] if listed else None)
        chosen = first.key if first is not None else None
    if chosen is not None and all(r.key != chosen for r in listed):
        listed = [keys[chosen], *listed]
    return [{"label": r.label, "value": r.key} for r in listed], chosen


def _layout(board: Dashboard, refresh: float) -> html.Div:
    return html.Div(
        [
            html.Header(
                [
                    html.H1("asyncflow"),
                    html.Span(board.source.label, className="source"),
                    html.Span(id="session-start", className="source"),
                    dcc.Dropdown(
                        id="run", options=[], placeholder="run", clearable=False, className="filter"
                    ),
                ],
                className="header",
            ),
            html.Div(id="status"),
            html.Div(id="chips", className="chips"),
            html.Div(
                [
                    dcc.Dropdown(
                        id="types", multi=True, placeholder="all workflow types", className="filter"
                    ),
                    dcc.Dropdown(
                        id="states",
                        multi=True,
                        options=[{"label": s, "value": s} for s in STATUSES],
                        placeholder="all task states",
                        className="filter",
                    ),
                    dcc.Dropdown(
                        id="instance",
                        placeholder="workflow instance",
                        clearable=False,
                        className="filter",
                    ),
                    dcc.RadioItems(
                        id="axis",
                        options=[
                            {"label": "seconds since start", "value": AXIS_SECONDS},
                            {"label": "clock time", "value": AXIS_CLOCK},
                        ],
                        value=AXIS_SECONDS,
                        inline=True,
                        className="axis-choice",
                    ),
                ],
                className="filters",
            ),
            html.Div(id="task-panel", className="task-panel"),
            dcc.Tabs(
                id="tab",
                value=TABS[0],
                children=[
                    dcc.Tab(
                        label="Campaign timeline",
                        value="campaign",
                        children=[dcc.Graph(id="campaign-graph", config={"displaylogo": False})],
                    ),
                    dcc.Tab(
                        label="Workflow",
                        value="workflow",
                        children=[dcc.Graph(id="workflow-graph", config={"displaylogo": False})],
                    ),
                    dcc.Tab(
                        label="Slots",
                        value="slots",
                        children=[dcc.Graph(id="slots-graph", config={"displaylogo": False})],
                    ),
                    dcc.Tab(
                        label="Utilisation",
                        value="utilisation",
                        children=[dcc.Graph(id="utilisation-graph", config={"displaylogo": False})],
                    ),
                    dcc.Tab(
                        label="Summary",
                        value="summary",
                        children=[
                            dcc.Graph(id="summary-graph", config={"displaylogo": False}),
                            html.Div(id="summary-tables", className="tables"),
                        ],
                    ),
                ],
            ),
            dcc.Store(id="version"),
            dcc.Store(id="task"),
            dcc.Store(id="campaign-window"),
            *(dcc.Store(id=f"{tab}-drawn") for tab in TABS),
            dcc.Interval(id="tick", interval=max(refresh, 0.2) * 1000, disabled=refresh <= 0),
        ],
        className="page",
    )


def create_app(
    source: SpanSource | Dashboard,
    *,
    capacity: Mapping[str, int] | None = None,
    refresh: float | None = None,
) -> dash.Dash:
    """The Dash app for ``source``.

    Args:
        source: where the run comes from (or a :class:`Dashboard` around it,
            e.g. one already polled with :func:`preload`).
        capacity: slot capacities to draw when the run recorded none (``{"gpu": 4}``).
        refresh: seconds between polls of a live run (default: the source's
            suggestion; 0 turns polling off).
    """
    board = source if isinstance(source, Dashboard) else Dashboard(source, capacity)
    source = board.source
    app = dash.Dash(
        __name__,
        title="asyncflow dashboard",
        assets_folder=str(Path(__file__).with_name("assets")),
        update_title="",
        # The task panel's close button and links exist only while it shows.
        suppress_callback_exceptions=True,
        on_error=_answer_error,
    )
    app.layout = _layout(board, source.refresh_seconds if refresh is None else refresh)
    _callbacks(app, board)
    return app


def _callbacks(app: dash.Dash, board: Dashboard) -> None:
    @app.callback(
        Output("version", "data"),
        Output("status", "children"),
        Output("chips", "children"),
        Output("run", "options"),
        Output("run", "value"),
        Output("session-start", "children"),
        Input("tick", "n_intervals"),
        Input("run", "value"),
        State("version", "data"),
    )
    def poll(_: Any, choice: str | None, seen: Any) -> tuple[Any, ...]:
        run, error = board.poll(choice)
        options = [{"label": label, "value": key} for key, label in board.source.runs()]
        current = choice or (options[0]["value"] if options else None)
        version = [run.source if run else "", run.version if run else -1, error, len(options)]
        if version == seen:
            return (dash.no_update,) * 6
        return version, _messages(run, error), _chips(run), options, current, _session_start(run)

    @app.callback(
        Output("types", "options"),
        Output("instance", "options"),
        Output("instance", "value"),
        Input("version", "data"),
        Input("types", "value"),
        Input("states", "value"),
        State("instance", "value"),
    )
    def choices(_: Any, types: Any, states: Any, chosen: Any) -> tuple[Any, ...]:
        run = board.run
        if run is None:
            return [], [], None
        names, shown = ch.instances(run, types or None, states or None)
        kinds = [{"label": t or c.NO_WORKFLOW, "value": t} for t in names]
        return (kinds, *_instances(shown, chosen))

    @app.callback(
        Output("instance", "options", allow_duplicate=True),
        Output("instance", "value", allow_duplicate=True),
        Output("tab", "value"),
        Input("campaign-graph", "clickData"),
        State("types", "value"),
        State("states", "value"),
        prevent_initial_call=True,
    )
    def clicked(click: Any, types: Any, states: Any) -> tuple[Any, ...]:
        run = board.run
        if run is None or not click:
            return dash.no_update, dash.no_update, dash.no_update
        _, shown = ch.instances(run, types or None, states or None)
        point = click["points"][0]
        custom = point.get("customdata")
        index = round(point.get("y", -1))
        # The figure escaped the key for Plotly; the rows know it as it is.
        key = (
            f.unescape_text(custom[3])
            if custom
            else shown[index].key
            if 0 <= index < len(shown)
            else None
        )
        if key is None:
            return dash.no_update, dash.no_update, dash.no_update
        return (*_instances(shown, key), "workflow")

    # The last relayout event that moved the timeline's time axis, kept in the
    # browser: a server callback here would race Plotly's follow-up events
    # (an 'autosize' right after a zoom) and have its answer dropped as stale.
    app.clientside_callback(  # type: ignore[no-untyped-call]
        """
        function(relayout) {
            if (relayout) {
                for (const key in relayout) {
                    if (key.startsWith("xaxis")) { return relayout; }
                }
            }
            return window.dash_clientside.no_update;
        }
        """,
        Output("campaign-window", "data"),
        Input("campaign-graph", "relayoutData"),
        prevent_initial_call=True,
    )

    def lazy(tab: str, graph: str, build: Any, *inputs: str) -> None:
        @app.callback(
            Output(graph, "figure"),
            Output(f"{tab}-drawn", "data"),
            Input("tab", "value"),
            Input("version", "data"),
            *(Input(*_prop(i)) for i in inputs),
            State(f"{tab}-drawn", "data"),
        )
        def draw(active: str, version: Any, *rest: Any) -> tuple[Any, Any]:
            *values, drawn = rest
            key = [version, *values]
            if active != tab or key == drawn:
                return dash.no_update, dash.no_update
            return build(*values), key

    def timed(fig: go.Figure, axis: str) -> go.Figure:
        run = board.run
        if axis != AXIS_CLOCK or run is None or not fig.data:
            return fig
        return clock_axes(fig, run.start)

    lazy(
        "campaign",
        "campaign-graph",
        lambda types, states, zoom, axis: timed(campaign(board, types, states, zoom), axis),
        "types",
        "states",
        "campaign-window.data",
        "axis",
    )
    lazy(
        "workflow",
        "workflow-graph",
        lambda key, axis: (
            timed(board.draw(f.gantt_figure, key), axis)
            if key
            else f.empty_figure("Pick a workflow instance above, or click a bar of the timeline.")
        ),
        "instance",
        "axis",
    )
    lazy("slots", "slots-graph", lambda axis: timed(board.draw(f.slots_figure), axis), "axis")
    lazy(
        "utilisation",
        "utilisation-graph",
        lambda axis: timed(board.draw(f.utilisation_figure, capacity=board.capacity), axis),
        "axis",
    )

    @app.callback(
        Output("task", "data"),
        Input("campaign-graph", "clickData"),
        Input("workflow-graph", "clickData"),
        Input("slots-graph", "clickData"),
        Input({"type": TASK_LINK, "uid": ALL}, "n_clicks"),
        prevent_initial_call=True,
    )
    def select(*_: Any) -> Any:
        trigger = dash.ctx.triggered_id
        if isinstance(trigger, Mapping):
            clicks = dash.ctx.triggered[0].get("value") if dash.ctx.triggered else None
            return str(trigger.get("uid")) if clicks else dash.no_update
        click = dash.ctx.triggered[0].get("value") if dash.ctx.triggered else None
        return clicked_task(click)

    @app.callback(
        Output("task-panel", "children"),
        Input("task", "data"),
        Input("version", "data"),
    )
    def panel(uid: Any, _: Any) -> Any:
        run = board.run
        if run is None or not isinstance(uid, str) or not uid:
            return []
        try:
            return task_panel(run, uid)
        except Exception as exc:
            logger.exception("the task panel failed")
            return [html.Div(f"Could not show {uid}: {exc}", className="message error")]

    @app.callback(
        Output("task", "data", allow_duplicate=True),
        Input("task-close", "n_clicks"),
        prevent_initial_call=True,
    )
    def close(clicks: Any) -> Any:
        return None if clicks else dash.no_update

    @app.callback(
        Output("summary-graph", "figure"),
        Output("summary-tables", "children"),
        Output("summary-drawn", "data"),
        Input("tab", "value"),
        Input("version", "data"),
        State("summary-drawn", "data"),
    )
    def summary(active: str, version: Any, drawn: Any) -> tuple[Any, ...]:
        if active != "summary" or version == drawn:
            return dash.no_update, dash.no_update, dash.no_update
        try:
            tables = _summary(board.run, board.capacity)
        except Exception as exc:
            logger.exception("summary failed")
            tables = [html.Div(f"Could not summarise: {exc}", className="message error")]
        return board.draw(f.summary_figure), tables, version


def clicked_task(click: Any) -> str | Any:
    """The uid of the task a Plotly click landed on (its ``customdata[0]``), else no update."""
    if not isinstance(click, Mapping):
        return dash.no_update
    points = click.get("points") or []
    custom = points[0].get("customdata") if points and isinstance(points[0], Mapping) else None
    if isinstance(custom, list) and custom and isinstance(custom[0], str):
        return f.unescape_text(custom[0])  # figures escape their custom data
    return dash.no_update


def _answer_error(exc: Exception) -> None:
    """A callback failed (a malformed value from the page, or a bug): say so
    on the page and change nothing else, instead of answering HTTP 500."""
    logger.warning("a dashboard callback failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
    message = (
        f"The page sent a request the server could not answer ({type(exc).__name__}: {exc}). "
        "Reload the page if it persists."
    )
    dash.set_props("status", {"children": [html.Div(message, className="message error")]})


def serve(app: dash.Dash, host: str = "127.0.0.1", port: int = 8050) -> None:
    """Serve ``app`` until interrupted (Werkzeug's threaded server: one user, one machine).

    Prints the URL once. The WSGI app is served directly rather than through
    Flask's ``run``: no development-server banner, no ``.env`` loading (and no
    tip about it), and a request is logged only when it fails on the server
    side; errors in the app are logged as always.
    """
    from werkzeug.serving import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            if str(code).startswith("5"):
                super().log_request(code, size)

    server = make_server(host, port, app.server, threaded=True, request_handler=QuietHandler)
    print(f"asyncflow dashboard on http://{host}:{port}/ (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _prop(spec: str) -> tuple[str, str]:
    """``"id"`` means the component's ``value``; ``"id.prop"`` names the property."""
    component, _, prop = spec.partition(".")
    return component, prop or "value"
