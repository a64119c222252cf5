"""The `deit` command line. Each verb lives in its own module exposing ``register(subparsers)``; failures are one
line and an exit code (``deit.cli.errors``)."""

from __future__ import annotations

import argparse
import importlib
import sys

from deit.cli.errors import CLIError, Parser, UsageError, debugging, report
from deit.runtime.allocator import keep_freed_memory

# One module per verb (deit.cli.<module>, the verb with "-" for "_"); each adds its parser and a `func(args) -> int`
# default.
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
    "teacher_cache",
)


def build_parser() -> argparse.ArgumentParser:
    from deit import __version__

    parser = Parser(
        prog="deit",
        description="Data-efficient image transformers: train, distil, evaluate, convert and serve DeiT. Errors "
        "are one line; --debug (or DEIT_DEBUG=1) also prints the traceback.",
    )
    parser.add_argument("--version", action="version", version=f"deit {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error, not only its line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"deit.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    debug, argv = debugging(list(sys.argv[1:] if argv is None else argv))
    keep_freed_memory()  # the command owns its process: batches reuse freed memory (deit.runtime.allocator)
    command = None
    try:
        args, unknown = build_parser().parse_known_args(argv)
        command = args.command
        # argparse gives key=value words after a flag (`--config X --dry-run data.root=D`) to no one: they are
        # the verb's overrides wherever they stand.
        if isinstance(getattr(args, "overrides", None), list):
            args.overrides += [a for a in unknown if "=" in a and not a.startswith("-")]
            unknown = [a for a in unknown if not ("=" in a and not a.startswith("-"))]
        if unknown:  # named against the verb, whose --help lists what it takes
            raise UsageError(f"deit {command}: error: unrecognized arguments: {' '.join(unknown)} "
                             f"(see `deit {command} --help`)")
        code = int(args.func(args) or 0)
        if sys.stdout is not None:  # a reader that went away fails here, where report() can end quietly
            sys.stdout.flush()
        return code
    except (Exception, KeyboardInterrupt) as exc:  # every failure is one line (and a traceback only on request)
        return report(exc, command, debug)


__all__ = ["COMMAND_MODULES", "CLIError", "build_parser", "main"]
