"""``simulate``: many streams against the simulator, faults on, shown live or as JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Final

from rich.console import Console
from rich.live import Live

from streamlife._simulate import Report, Run, Snapshot, simulate
from streamlife.errors import StoreError
from streamlife.store import mask_store_url

from .exits import EXIT_OK, EXIT_PROBLEM, Usage
from .render import live_panel, summary
from .stores import check_store_url

LIVE_SPEED: Final = 30.0  # virtual seconds per real second: a two-minute run plays in a few seconds


def run_simulate(args: argparse.Namespace) -> int:
    check_store_url(args.store)
    speed = args.speed if args.speed is not None or args.json else LIVE_SPEED
    run = Run(
        streams=args.streams,
        minutes=args.minutes,
        faults=args.faults,
        seed=args.seed,
        http=args.http,
        speed=speed,
        store=args.store,
        mode=args.mode,
        kinds=args.kinds,
    )
    if args.json:
        report = _simulated(run)
        print(json.dumps(report.as_json(), indent=2))
        return EXIT_OK if report.ok else EXIT_PROBLEM
    console = Console()
    title = f"{run.streams} streams, faults {run.faults}, {run.mode}" + (", over HTTP" if run.http else "")
    with Live(console=console, refresh_per_second=8, transient=False) as live:

        def show(snapshot: Snapshot) -> None:
            live.update(live_panel(snapshot, title))

        report = _simulated(run, show)
    console.print()
    console.print(summary(report))
    return EXIT_OK if report.ok else EXIT_PROBLEM


def _simulated(run: Run, show: Callable[[Snapshot], None] | None = None) -> Report:
    try:
        return simulate(run, on_progress=show)
    except ValueError as error:  # a store that already holds tasks
        raise Usage(f"--store: {error}") from None
    except StoreError as error:
        raise Usage(f"--store {mask_store_url(run.store)}: {error}") from None  # (it says what failed)
