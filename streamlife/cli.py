"""The ``streamlife`` command (also ``python -m streamlife``).

Exit codes: 0 success; 1 the command ran and found a problem (``diagram --check`` saw drift, a
simulated run broke an invariant or left a stream billing); 2 bad usage (unknown command or option,
a bad value).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog
from rich.console import Console
from rich.live import Live

from . import console as console_view
from . import diagram, walk
from .simulate import FAULT_PRESETS, Run, Snapshot, simulate

LIVE_SPEED = 30.0  # virtual seconds per real second: a two-minute run plays in a few seconds

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

    sim = commands.add_parser(
        "simulate",
        help="run many streams against the simulator, faults on, and check the promises",
        description="Run many streams against memories.ai's simulator on virtual time, faults on; stop"
        " them all, let the run settle, and check that every task ended and nothing bills.",
    )
    option = sim.add_argument
    option("--streams", type=_positive_int, default=50, help="streams to start (default: 50)")
    option("--minutes", type=_positive_float, default=2.0, help="virtual minutes to run (default: 2)")
    option("--faults", choices=list(FAULT_PRESETS), default="default", help="fault preset (default: default)")
    option("--seed", type=int, default=0, help="seed for the faults and the run (default: 0)")
    option("--http", action="store_true", help="cross real loopback sockets: HTTP face and webhooks")
    option("--json", action="store_true", help="print one JSON report instead of the live display")
    sim.add_argument(
        "--speed",
        type=_positive_float,
        default=None,
        help="virtual seconds per real second (default: 30 with the live display, flat out with --json)",
    )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


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
    if args.command == "simulate":
        return _simulate(args)
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


def _simulate(args: argparse.Namespace) -> int:
    speed = args.speed if args.speed is not None or args.json else LIVE_SPEED
    run = Run(
        streams=args.streams,
        minutes=args.minutes,
        faults=args.faults,
        seed=args.seed,
        http=args.http,
        speed=speed,
    )
    if args.json:
        report = simulate(run)
        print(json.dumps(report.as_json(), indent=2))
        return EXIT_OK if report.ok else EXIT_PROBLEM
    console = Console()
    title = f"{run.streams} streams, faults {run.faults}" + (", over HTTP" if run.http else "")
    with Live(console=console, refresh_per_second=8, transient=False) as live:

        def show(snapshot: Snapshot) -> None:
            live.update(console_view.live_panel(snapshot, title))

        report = simulate(run, on_progress=show)
    console.print()
    console.print(console_view.summary(report))
    return EXIT_OK if report.ok else EXIT_PROBLEM
