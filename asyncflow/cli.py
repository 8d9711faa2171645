"""The ``asyncflow`` command."""

from __future__ import annotations

import argparse
import sys

from ._version import __version__

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``asyncflow`` command."""
    parser = argparse.ArgumentParser(
        prog="asyncflow",
        description="asyncflow: an asyncio-native workflow engine you can see.",
    )
    parser.add_argument("--version", action="version", version=f"asyncflow {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stdout)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
