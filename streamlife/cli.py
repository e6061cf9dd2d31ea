"""The ``streamlife`` command (also ``python -m streamlife``).

Exit codes: 0 success; 1 the command ran and found a problem (``diagram --check`` saw drift);
2 bad usage (unknown command or option).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from . import diagram, walk

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamlife",
        description="memories.ai live streams as explicit state machines.",
    )
    parser.add_argument(
        "--log-level",
        default="error",
        choices=["debug", "info", "warning", "error"],
        help="show streamlife's own log events at this level and above (default: error)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    draw = commands.add_parser("diagram", help="write the lifecycle diagrams from the table")
    draw.add_argument("--out", type=Path, default=Path("diagrams"), help="directory (default: diagrams)")
    draw.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files drift")

    commands.add_parser("walk", help="walk a few tasks through their lifecycle, printed as a timeline")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # The command line is an application, so it may choose how log events render; the library never does.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, args.log_level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    if args.command == "diagram":
        return _diagram(args.out, check=args.check)
    if args.command == "walk":
        print(walk.timeline())
        return EXIT_OK
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse refuses unknown ones


def _diagram(out: Path, *, check: bool) -> int:
    if check:
        stale = diagram.drifted(out)
        for path in stale:
            print(f"{path} is out of date: run `python -m streamlife diagram`", file=sys.stderr)
        return EXIT_PROBLEM if stale else EXIT_OK
    for path in diagram.write(out):
        print(f"wrote {path}")
    return EXIT_OK
