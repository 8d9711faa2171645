"""The ``asyncflow`` command."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from ._version import __version__

__all__ = ["command_name", "main", "port_taken"]

_DASHBOARD_EXTRA = (
    "pip install '.[dashboard]' in a clone of asyncflow, "
    "or pip install 'asyncflow-otel[dashboard] @ git+<repository URL>'"
)


def command_name() -> str:
    """How to run the ``asyncflow`` command of this environment, as a user would type it.

    ``asyncflow`` when that is what the shell finds; else the path of this
    environment's script (``.venv/bin/asyncflow`` from a checkout, as
    ``make demo`` runs it); else ``python -m asyncflow.cli``. Printed hints
    use it, so they work as printed.
    """
    script = Path(sys.executable).parent / "asyncflow"
    found = shutil.which("asyncflow")
    if found and script.exists() and Path(found).resolve() == script.resolve():
        return "asyncflow"
    if script.exists():
        try:
            shown = os.path.relpath(script)
        except ValueError:  # another drive (Windows)
            shown = str(script)
        if shown.startswith(".."):
            shown = str(script)
        return shlex.quote(shown)
    return f"{shlex.quote(sys.executable)} -m asyncflow.cli"


def port_taken(host: str, port: int) -> str:
    """Why ``host:port`` cannot be served on (``""`` when it can).

    Binds as the server will (address reuse on, so a port in TIME_WAIT is
    free) and lets go at once.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return str(exc)
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return ""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``asyncflow`` command."""
    parser = argparse.ArgumentParser(
        prog="asyncflow",
        description="asyncflow: an asyncio-native workflow engine you can see.",
    )
    parser.add_argument("--version", action="version", version=f"asyncflow {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(commands)
    _add_dashboard(commands)
    _add_report(commands)
    _add_cache(commands)
    _add_export(commands)
    return parser


# ---------------------------------------------------------------- demo
def _add_demo(commands: Any) -> None:
    command = commands.add_parser(
        "demo",
        help="run the HPC campaign example with telemetry, then serve its dashboard",
        description="Run the campaign example (24 workflow instances of 4 types on a node "
        "with GPU and CPU slots) with telemetry into --out, then serve the dashboard on "
        "127.0.0.1, or write report.html with --no-serve. Sends telemetry over OTLP too "
        "when OTEL_EXPORTER_OTLP_ENDPOINT is set.",
    )
    command.add_argument(
        "--out", type=Path, default=Path("asyncflow-demo"), help="default %(default)s"
    )
    command.add_argument("--gpus", type=int, default=4, help="GPU slots (default %(default)s)")
    command.add_argument("--cpus", type=int, default=8, help="CPU slots (default %(default)s)")
    command.add_argument(
        "--scale", type=int, default=1, help="multiply the instances (default %(default)s)"
    )
    command.add_argument(
        "--duration", type=float, default=1.0, help="task time scale (default %(default)s)"
    )
    command.add_argument(
        "--no-serve", action="store_true", help="write OUT/report.html instead of serving"
    )
    command.add_argument(
        "--resume",
        action="store_true",
        help="store every task result in OUT; rerun after a kill to run only what had not finished",
    )
    command.add_argument("--host", default="127.0.0.1", help="default %(default)s")
    command.add_argument("--port", type=int, default=8050, help="default %(default)s")
    command.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from .demo import campaign_module

    try:
        from .dashboard import open_source
        from .dashboard.report import write_report
    except ImportError as exc:
        print(f"asyncflow demo needs the dashboard extra ({exc}): {_DASHBOARD_EXTRA}")
        return 1
    if not args.no_serve:
        # Before the campaign, not after it: a taken port would waste the run.
        problem = port_taken(args.host, args.port)
        if problem:
            print(
                f"asyncflow demo: cannot serve on {args.host}:{args.port} ({problem}). "
                f"Choose another port with --port: {command_name()} demo --port "
                f"{args.port + 1}, or make demo DEMO_ARGS='--port {args.port + 1}'",
                file=sys.stderr,
            )
            return 2
    campaign = campaign_module()
    argv = [
        "--out",
        str(args.out),
        "--gpus",
        str(args.gpus),
        "--cpus",
        str(args.cpus),
        "--scale",
        str(args.scale),
        "--duration",
        str(args.duration),
        *(["--resume"] if args.resume else []),
    ]
    code = int(campaign.main(argv) or 0)
    if code:
        return code
    capacity = {"gpu": args.gpus, "cpu": args.cpus}
    if args.no_serve:
        path = write_report(open_source(str(args.out)), args.out / "report.html", capacity=capacity)
        print(f"wrote {path}")
        return 0
    from .dashboard.app import Dashboard, create_app, preload, serve

    board = Dashboard(open_source(str(args.out)), capacity)
    preload(board)  # reads the run while the server starts
    serve(create_app(board), args.host, args.port)
    return 0


# ---------------------------------------------------------------- dashboard and report
def _add_source_arguments(command: argparse.ArgumentParser) -> None:
    from .telemetry import names

    command.add_argument(
        "run",
        nargs="?",
        metavar="RUN",
        help="a checkpoint file (*.telemetry.jsonl), a directory of them (the run "
        "that started last is shown), or an OTLP/JSON file",
    )
    where = command.add_mutually_exclusive_group()
    where.add_argument("--jaeger", metavar="URL", help="read from Jaeger v2's query API instead")
    where.add_argument("--tempo", metavar="URL", help="read from Tempo's HTTP API instead")
    command.add_argument(
        "--service",
        default=names.DEFAULT_SERVICE_NAME,
        help="with --jaeger/--tempo: the service.name to look for (default %(default)s)",
    )
    command.add_argument("--trace-id", help="with --jaeger/--tempo: this trace, not the newest")
    command.add_argument(
        "--gpus", type=int, metavar="N", help="GPU capacity to draw when the run recorded none"
    )
    command.add_argument(
        "--cpus", type=int, metavar="N", help="CPU capacity to draw when the run recorded none"
    )


def _add_dashboard(commands: Any) -> None:
    command = commands.add_parser(
        "dashboard",
        help="serve the Dash app for a run (read-only)",
        description="Serve the campaign timeline, workflow Gantt, utilisation and summary of "
        "a run; a run still being written refreshes live.",
    )
    _add_source_arguments(command)
    command.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default %(default)s: this machine only)",
    )
    command.add_argument("--port", type=int, default=8050, help="default %(default)s")
    command.add_argument(
        "--refresh",
        type=float,
        metavar="SECONDS",
        help="seconds between polls of a live run (default 2, 10 for Jaeger/Tempo; 0: off)",
    )
    command.set_defaults(handler=_dashboard)


def _add_report(commands: Any) -> None:
    command = commands.add_parser(
        "report",
        help="write a run's figures as one self-contained HTML file",
        description="Write the dashboard's figures as one HTML file that opens offline.",
    )
    _add_source_arguments(command)
    command.add_argument(
        "-o", "--output", default="report.html", help="the HTML file (default %(default)s)"
    )
    command.add_argument(
        "--workflows",
        type=int,
        default=10,
        metavar="N",
        help="Gantt charts of this many workflow instances, failed ones first (default 10)",
    )
    command.set_defaults(handler=_report)


def _open(args: argparse.Namespace) -> Any:
    """The span source the arguments name; exits with a message when they name none."""
    from .dashboard import open_source

    if args.run and not (args.jaeger or args.tempo) and not Path(args.run).exists():
        sys.exit(f"asyncflow {args.command}: {args.run}: no such file or directory")
    try:
        return open_source(
            args.run,
            jaeger=args.jaeger,
            tempo=args.tempo,
            service=args.service,
            trace_id=args.trace_id,
        )
    except ValueError as exc:
        sys.exit(f"asyncflow {args.command}: {exc}")


def _capacity(args: argparse.Namespace) -> dict[str, int]:
    return {k: v for k, v in (("gpu", args.gpus), ("cpu", args.cpus)) if v}


def _dashboard(args: argparse.Namespace) -> int:
    source = _open(args)
    try:
        from .dashboard.app import Dashboard, create_app, preload, serve
    except ImportError as exc:
        print(f"asyncflow dashboard needs the dashboard extra ({exc}): {_DASHBOARD_EXTRA}")
        return 1
    board = Dashboard(source, _capacity(args))
    preload(board)  # reads the run while the server starts
    serve(create_app(board, refresh=args.refresh), args.host, args.port)
    return 0


def _report(args: argparse.Namespace) -> int:
    source = _open(args)
    try:
        from .dashboard.report import write_report
    except ImportError as exc:
        print(f"asyncflow report needs the dashboard extra ({exc}): {_DASHBOARD_EXTRA}")
        return 1
    from .dashboard import SourceError

    try:
        path = write_report(source, args.output, capacity=_capacity(args), workflows=args.workflows)
    except SourceError as exc:
        print(f"asyncflow report: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------- cache
def _add_cache(commands: Any) -> None:
    command = commands.add_parser(
        "cache",
        help="list, count or clear the stored task results of a campaign directory",
        description="Manage the result cache of a campaign directory (the SQLite store that "
        "cache=True and resume= use).",
    )
    actions = command.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser("ls", help="list stored results, newest first")
    ls.add_argument("run_dir", metavar="RUN_DIR", type=Path)
    ls.add_argument("--task", metavar="NAME", help="only the results of this task")
    ls.add_argument(
        "--limit", type=int, default=50, metavar="N", help="at most N lines (default 50; 0: all)"
    )
    stats = actions.add_parser("stats", help="entries and bytes, per task name")
    stats.add_argument("run_dir", metavar="RUN_DIR", type=Path)
    clear = actions.add_parser("clear", help="delete stored results")
    clear.add_argument("run_dir", metavar="RUN_DIR", type=Path)
    clear.add_argument("--task", metavar="NAME", help="only the results of this task")
    command.set_defaults(handler=_cache)


def _cache(args: argparse.Namespace) -> int:
    import time

    from .cache import ResultCache, store_path
    from .errors import CacheError

    if getattr(args, "limit", 0) < 0:
        print("asyncflow cache: --limit must be >= 0", file=sys.stderr)
        return 2
    try:
        store = ResultCache.open(args.run_dir, create=False)
    except CacheError as exc:
        where = store_path(args.run_dir)
        if not where.exists():
            print(f"asyncflow cache: no result cache in {args.run_dir}", file=sys.stderr)
        else:
            print(f"asyncflow cache: {exc}", file=sys.stderr)
        return 1
    try:
        if args.action == "ls":
            entries = store.entries(args.task, args.limit or None)
            for e in entries:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.created))
                print(f"{stamp}  {e.name}  {e.size} B  {e.session} {e.task}  {e.key[:16]}")
            print(f"{len(entries)} result(s) shown, {len(store)} stored in {store.path}")
        elif args.action == "stats":
            info = store.stats()
            print(f"{info['path']}: {info['entries']} result(s), {info['bytes']} bytes")
            for row in info["tasks"]:
                print(
                    f"  {row['name']}: {row['entries']} result(s), {row['bytes']} bytes, "
                    f"from {row['sessions']} session(s)"
                )
        else:
            removed = store.clear(args.task)
            print(f"removed {removed} result(s) from {store.path}")
    except CacheError as exc:
        print(f"asyncflow cache: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


# ---------------------------------------------------------------- export
def _add_export(commands: Any) -> None:
    command = commands.add_parser(
        "export",
        help="write a run in another format (Chrome trace events for Perfetto)",
        description="Write a run as Chrome trace events (JSON), which Perfetto "
        "(ui.perfetto.dev) and chrome://tracing open: one track per task, grouped by "
        "workflow instance, with its dependency wait, queue wait and run time; or one "
        "track per slot.",
    )
    _add_source_arguments(command)
    command.add_argument(
        "--format", choices=("chrome-trace",), default="chrome-trace", help="default %(default)s"
    )
    command.add_argument(
        "--tracks",
        choices=("workflow", "slot"),
        default="workflow",
        help="a track per task in its workflow instance, or per slot (default %(default)s)",
    )
    command.add_argument(
        "-o", "--output", default="trace.json", help="the file to write (default %(default)s)"
    )
    command.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    source = _open(args)
    from .dashboard import SourceError
    from .dashboard.export import write_chrome_trace

    try:
        run = source.poll()
    except SourceError as exc:
        print(f"asyncflow export: {exc}", file=sys.stderr)
        return 1
    path = write_chrome_trace(run, args.output, args.tracks)
    print(f"wrote {path} ({len(run.tasks)} tasks; open it in https://ui.perfetto.dev)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stdout)
        return 0
    return int(args.handler(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
