"""``streamlife``'s entry point: parse the command line, set up logging, run the command, and
turn what ended it into an exit code."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any, TextIO

import structlog
from structlog.typing import ExcInfo

from streamlife.errors import StoreError, StreamlifeError

from .environment import resolve
from .exits import EXIT_INTERRUPTED, EXIT_PROBLEM, EXIT_USAGE, Problem, Usage
from .parser import COMMANDS, build_parser
from .render import printable


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        resolve(args)  # the options not given, from the environment: a bad variable is bad usage
        return COMMANDS[args.command](args)

    return run_logged(args.command, args.log_level, run, log_format=args.log_format)


def run_logged(command: str, log_level: str, run: Callable[[], int], *, log_format: str = "console") -> int:
    """Set up logging at ``log_level`` in ``log_format``, ``run`` the command, and turn what ended it
    into an exit code: here, and in each process ``serve --workers`` starts."""
    _configure_logging(log_level, log_format)
    # psycopg's pool warns on every failed connection attempt; the error that ends them says enough.
    logging.getLogger("psycopg").setLevel(logging.DEBUG if log_level == "debug" else logging.CRITICAL)
    try:
        return run()
    except Usage as usage:
        print(f"streamlife {command}: error: {printable(str(usage))}", file=sys.stderr)
        return EXIT_USAGE
    except Problem as problem:
        print(f"streamlife {command}: {printable(str(problem))}", file=sys.stderr)
        return EXIT_PROBLEM
    except StoreError as error:
        print(f"streamlife {command}: the store failed: {printable(str(error))}", file=sys.stderr)
        return EXIT_PROBLEM
    except StreamlifeError as error:  # a journal that does not replay (JournalMismatch), say
        print(f"streamlife {command}: {type(error).__name__}: {printable(str(error))}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:  # a second Ctrl-C while `serve` stops its tasks, say
        print(f"streamlife {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `streamlife journal ... | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the flush at exit does not fail again
        return EXIT_PROBLEM


def _configure_logging(level: str, log_format: str = "console") -> None:
    """The command line is an application, so it may choose how log events render; the library never
    does. Its events carry task_ids, errors and payloads that others wrote: shown escaped on a
    console, and JSON escapes them itself."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.StackInfoRenderer(),
    ]
    if log_format == "json":
        processors = [
            *shared,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ]
    else:
        processors = [
            *shared,
            structlog.dev.set_exc_info,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            _printable_event,
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty() and "NO_COLOR" not in os.environ,
                exception_formatter=_printable_traceback,
            ),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def _printable_event(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A log event's text values made safe to print; the renderer shows other values by their repr,
    which escapes control characters itself."""
    for name, value in event.items():
        if isinstance(value, str):
            event[name] = printable(value)
    return event


def _printable_traceback(out: TextIO, exc_info: ExcInfo) -> None:
    """A logged exception as a plain traceback, its messages made safe to print. (Not rich's, which
    also shows each frame's local variables: others' payloads, and whatever else a frame holds.)"""
    out.write("\n" + printable("".join(traceback.format_exception(*exc_info)), lines=True))
