"""Run the benchmarks: ``make bench`` (``python -m bench.run``).

    python -m bench.run                    # everything, at 100k live tasks: a few minutes
    python -m bench.run --quick            # smaller sizes, under a minute
    python -m bench.run --only ingest      # one benchmark (repeat --only for more)

A full run writes bench/results.json (every figure, the goals, pass/fail, the machine) and
bench/RESULTS.md (the same as tables, to commit). A quick or partial run writes
bench/results.quick.json and bench/RESULTS.quick.md instead, so the full results stay as they
were. Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import multiprocessing
import os
import platform
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console

from . import (
    aio_lag,
    http_ingest,
    ingest,
    instructions,
    lifecycle,
    memory_day,
    postgres,
    profiling,
    server_ingest,
    shared,
    upkeep,
)
from .common import Section, configure_logging, gc_settled
from .report import show_goals, show_section, write

HERE = os.path.dirname(os.path.abspath(__file__))

# name -> (run, full config, quick config); run in this order.
BENCHMARKS: dict[str, tuple[Callable[[Any], Section], object, object]] = {
    "lifecycle": (lifecycle.run, lifecycle.FULL, lifecycle.QUICK),
    "profile": (profiling.run, profiling.FULL, profiling.QUICK),
    "instructions": (instructions.run, instructions.FULL, instructions.QUICK),
    "ingest": (ingest.run, ingest.FULL, ingest.QUICK),
    "shared": (shared.run, shared.FULL, shared.QUICK),
    "http": (http_ingest.run, http_ingest.FULL, http_ingest.QUICK),
    "server": (server_ingest.run, server_ingest.FULL, server_ingest.QUICK),
    "aio": (aio_lag.run, aio_lag.FULL, aio_lag.QUICK),
    "upkeep": (upkeep.run, upkeep.FULL, upkeep.QUICK),
    "memory_day": (memory_day.run, memory_day.FULL, memory_day.QUICK),
    "postgres": (postgres.run, postgres.FULL, postgres.QUICK),
}


def _git_commit() -> str | None:
    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() or None


def _load() -> list[float] | None:
    """The machine's load averages (1, 5, 15 min): above about 1, something else was running."""
    try:
        return [round(load, 2) for load in os.getloadavg()]
    except OSError:
        return None


def _meta(mode: str, only: Sequence[str], seconds: float, commit: str | None) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "benchmarks": list(only),
        "seconds": seconds,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "streamlife": importlib.metadata.version("streamlife"),
        "git_commit": commit,
        "note": "other processes may share the machine: ratios to same-run references hold better "
        "than absolute figures",
    }


def _failed(name: str, error: BaseException) -> Section:
    section = Section(name, f"{name}: FAILED", "The benchmark raised; see the note.", [])
    section.notes.append("".join(traceback.format_exception(error)).strip())
    return section


def _leftovers() -> dict[str, Any]:
    """What the run should not leave behind: child processes and threads."""
    children = multiprocessing.active_children()  # (also reaps the finished ones)
    threads = [thread.name for thread in threading.enumerate() if thread is not threading.main_thread()]
    return {"child_processes": [child.name for child in children], "threads": threads}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats: a smoke run")
    parser.add_argument(
        "--only", action="append", choices=list(BENCHMARKS), metavar="NAME",
        help=f"run only this benchmark (one of {', '.join(BENCHMARKS)}); may be repeated",
    )  # fmt: skip
    parser.add_argument("--output-dir", default=HERE, help="where the results files go (default: bench/)")
    parser.add_argument("--no-write", action="store_true", help="print the tables, write no files")
    args = parser.parse_args(argv)

    configure_logging()
    only = [name for name in BENCHMARKS if not args.only or name in args.only]
    mode = "quick" if args.quick else "full"
    console = Console(width=max(Console().width, 120))
    console.print(
        f"[bold]streamlife benchmarks[/] ({mode}: {', '.join(only)}) on {platform.platform()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    started = time.perf_counter()
    commit = _git_commit()  # the code measured is the code imported now, whatever is committed later
    load_before = _load()
    sections: list[Section] = []
    failed = False
    for name in only:
        run, full, quick = BENCHMARKS[name]
        began = time.perf_counter()
        try:
            section = run(quick if args.quick else full)
        except Exception as error:
            failed = True
            section = _failed(name, error)
        section.seconds = time.perf_counter() - began
        gc_settled()
        sections.append(section)
        show_section(console, section)

    seconds = time.perf_counter() - started
    meta = _meta(mode, only, seconds, commit)
    meta["load_average"] = {"before": load_before, "after": _load()}
    meta["leftovers"] = leftovers = _leftovers()
    show_goals(console, [goal for section in sections for goal in section.goals])
    if leftovers["child_processes"] or leftovers["threads"]:
        console.print(f"[bold red]left behind:[/] {leftovers}")
        failed = True
    if not args.no_write:
        stem = (
            ("results", "RESULTS") if mode == "full" and not args.only else ("results.quick", "RESULTS.quick")
        )
        json_path = os.path.join(args.output_dir, f"{stem[0]}.json")
        markdown_path = os.path.join(args.output_dir, f"{stem[1]}.md")
        write(meta, sections, json_path, markdown_path)
        console.print(f"wrote {os.path.relpath(json_path)} and {os.path.relpath(markdown_path)}")
    console.print(f"took {seconds:,.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
