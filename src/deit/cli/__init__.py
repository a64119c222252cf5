"""The `deit` command line. Each verb lives in its own module exposing ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys

# One module per verb (deit.cli.<module>); each adds its parser and a `func(args) -> int` default.
COMMAND_MODULES: tuple[str, ...] = (
    "info",
    "data",
    "train",
    "eval",
    "plot",
    "demo",
    "convert",
    "predict",
    "export",
    "analyze",
    "benchmark",
    "reproduce",
)


class CLIError(Exception):
    """A user error: printed as one clear line, exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    from deit import __version__

    parser = argparse.ArgumentParser(
        prog="deit",
        description="Data-efficient image transformers: train, distil, evaluate, convert and serve DeiT.",
    )
    parser.add_argument("--version", action="version", version=f"deit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"deit.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError) as exc:
        # Our validation raises these with a message naming the problem and the fix: show it, not a traceback.
        print(f"deit {args.command}: error: {exc}", file=sys.stderr)
        return 2
