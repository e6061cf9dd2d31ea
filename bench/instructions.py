"""Instructions per callback, counted by valgrind's callgrind: a figure the machine's noise cannot move.

On a shared VM the timings move by half within an hour; the instructions a callback takes do not
(the same count within a fraction of a percent, run after run, with one hash seed). So the
in-process ingest path (raw bytes through ``Fleet.handle_callback`` on the memory store) and the
Python floor (``DictIngest``) are each run in a child process under ``valgrind --tool=callgrind``,
twice: the same set-up and the same bodies, handling ``count`` of them and then ``3 * count``.
The difference, over ``2 * count``, is what one callback takes, set-up and start-up left out.
What instructions do not show is memory: a cache miss counts as one instruction, so how the cost
grows with 100,000 live tasks is the timed sections' business.

Skipped, saying so, on a machine without valgrind.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .common import CallbackStream, Figure, Section, configure_logging, live_fleet, say
from .references import DictIngest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)  # the source tree: streamlife, and bench
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


@dataclass(frozen=True)
class InstructionsConfig:
    tasks: int  # live tasks the callbacks go to
    count: int  # callbacks in the shorter run; the longer handles three times as many


FULL = InstructionsConfig(tasks=200, count=500)
QUICK = InstructionsConfig(tasks=100, count=300)


def run(config: InstructionsConfig) -> Section:
    section = Section(
        "instructions",
        "Instructions per callback (callgrind)",
        f"{config.tasks} live tasks on the memory store; fresh final segments through "
        "Fleet.handle_callback(bytes), and the same bodies through the Python floor, each counted "
        f"by callgrind over {config.count:,} and {3 * config.count:,} callbacks after the same "
        "set-up: the difference is one callback's. A count that noise does not move, and blind to "
        "memory (a cache miss is one instruction).",
        [("floor", "Python floor")],
    )
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        section.notes.append("Not measured: valgrind is not installed here (Debian's valgrind package).")
        return section
    sides = ("streamlife", "floor")
    say(f"instructions: {', '.join(sides)} under callgrind")
    counts = (config.count, 3 * config.count)
    runs = [(side, handled) for side in sides for handled in counts]
    with ThreadPoolExecutor(max_workers=2) as pool:  # (each child: a core)
        counted = list(pool.map(lambda job: _count(valgrind, config, *job), runs))
    totals = dict(zip(runs, counted, strict=True))
    per_callback = {
        side: (totals[side, 3 * config.count] - totals[side, config.count]) / (2 * config.count)
        for side in sides
    }
    section.add(
        Figure(
            "instructions.memory.per_callback",
            "instructions per callback, handle_callback, memory store",
            "instructions",
            per_callback["streamlife"],
            {"floor": per_callback["floor"]},
        )
    )
    section.extra["totals"] = {f"{side}.{handled}": total for (side, handled), total in totals.items()}
    return section


def _count(valgrind: str, config: InstructionsConfig, side: str, handled: int) -> int:
    work = [side, str(config.tasks), str(3 * config.count), str(handled)]
    command = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    command += ["-m", "bench.instructions", *work]
    # One hash seed for every child: string hashes then lay dicts out alike, run after run.
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, env=environment, cwd=ROOT
    )
    found = _COLLECTED.search(finished.stderr)
    if finished.returncode != 0 or found is None:
        failure = finished.stderr[-2000:]
        raise RuntimeError(f"callgrind run of {side} failed ({finished.returncode}): {failure}")
    return int(found.group(1))


def _work(side: str, tasks: int, made: int, handled: int) -> None:
    """One child's work: the same set-up and bodies whatever ``handled`` is; then handle that many."""
    configure_logging()
    live = live_fleet(tasks)
    stream = CallbackStream(live.task_ids)
    warm_up, bodies = stream.fresh(tasks), stream.fresh(made)
    handle = live.fleet.handle_callback if side == "streamlife" else DictIngest(live.task_ids).handle
    for body in warm_up:
        handle(body)
    for body in bodies[:handled]:
        handle(body)
    live.close()


if __name__ == "__main__":
    side, tasks, made, handled = sys.argv[1], *map(int, sys.argv[2:5])
    _work(side, tasks, made, handled)
