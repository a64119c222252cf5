"""How the command line fails: one line naming the problem and the fix, exit code 2 for bad input, never a
traceback (unless ``--debug`` or ``DEIT_DEBUG=1`` asks for it)."""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import traceback

EXIT_USAGE = 2  # bad input: a wrong flag, a missing file, a bad value
EXIT_FAILURE = 1  # something went wrong that is not the input's fault
EXIT_INTERRUPTED = 130
# The reader of our output went away (`deit predict ... | head -3`): what a shell reports for any tool that
# SIGPIPE stops, 128 + SIGPIPE, with no message.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
DEBUG_ENV = "DEIT_DEBUG"
# Optional dependencies: the extra that installs each.
EXTRAS = {"onnx": "export", "onnxruntime": "export", "onnxscript": "export", "tensorboard": "tensorboard",
          "transformers": "test"}


class CLIError(Exception):
    """A user error: printed as one clear line, exit code 2, no traceback."""


class UsageError(CLIError):
    """argparse's complaint about the command line (unknown flag, bad value, missing argument)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``PROG: error: MESSAGE (see PROG --help)``, not usage text."""

    def error(self, message: str):  # noqa: D102 (argparse's hook)
        raise UsageError(f"{self.prog}: error: {message} (see `{self.prog} --help`)")


# What bad input raises inside the library: our validation gives these a message naming the problem and the fix.
USER_ERRORS = (CLIError, ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def debugging(argv: list[str]) -> tuple[bool, list[str]]:
    """(whether --debug or DEIT_DEBUG=1 asks for tracebacks, argv without --debug)."""
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    return debug, [a for a in argv if a != "--debug"]


def stdout_closed() -> bool:
    """Whether the reader of stdout has gone (a pipe whose reading end is closed reports POLLERR)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no real stdout
        return False


def end_quietly_on_closed_pipe() -> int:
    """Stop without a word: stdout goes to devnull so the interpreter's final flush of what is still buffered
    does not fail again (the recipe of Python's `signal` documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def report(exc: BaseException, command: str | None, debug: bool) -> int:
    """Print ``exc`` as one line on stderr (and the traceback when debugging); the exit code it means."""
    if isinstance(exc, BrokenPipeError) and stdout_closed():
        return end_quietly_on_closed_pipe()
    if debug:
        traceback.print_exception(exc)
    prefix = f"deit {command}: error:" if command else "deit: error:"
    if isinstance(exc, UsageError):
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        print(f"deit {command or ''}: interrupted".replace("  ", " "), file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        root = exc.name.split(".")[0]
        fix = f"pip install 'deit[{EXTRAS[root]}]'" if root in EXTRAS else f"pip install {root}"
        print(f"{prefix} this needs the {root} package, which is not installed: {fix}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, USER_ERRORS):
        print(f"{prefix} {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    hint = "" if debug else f" (unexpected; rerun with --debug or {DEBUG_ENV}=1 for the traceback)"
    print(f"{prefix} {type(exc).__name__}: {_one_line(exc)}{hint}", file=sys.stderr)
    return EXIT_FAILURE


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return " ".join(text.split())


__all__ = ["EXIT_BROKEN_PIPE", "EXIT_USAGE", "CLIError", "Parser", "UsageError", "debugging", "report"]
