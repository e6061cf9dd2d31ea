"""Instructions per callback, counted by valgrind's callgrind: a figure the machine's noise cannot move.

On a shared VM the timings move by half within an hour; the instructions a callback takes do not
(the same count within a fraction of a percent, run after run, with one hash seed). So the
in-process ingest path (raw bytes through ``Fleet.handle_callback`` on the memory store) and the
Python floor (``DictIngest``) are each run in a child process under ``valgrind --tool=callgrind``,
twice: the same set-up and the same bodies, handling ``count`` of them and then ``3 * count``.
The difference, over ``2 * count``, is what one callback takes, set-up and start-up left out.
What instructions do not show is memory: a cache miss counts as one instruction, so how the cost
grows with 100,000 live tasks is the timed sections' business.

On the compiled build (``make bench``) the pure-Python build is counted too, as a reference: the
same child, run from the source tree without the compiled build on its path. And the compiled
build's count is broken down by function (callgrind_annotate, inclusive, the same difference taken
per function): the profile of a compiled build, which cProfile sees as one call.

Skipped, saying so, on a machine without valgrind.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from streamlife.compiled import build_description, compiled_modules

from .common import CallbackStream, Figure, Section, Table, configure_logging, live_fleet, say
from .references import DictIngest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)  # the source tree: pure-Python streamlife, and bench
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")
_BUILD = re.compile(r"^build: (.+)$", re.MULTILINE)
_COMPILED_FIRST = ("PYTHONPATH", "PYTHONSAFEPATH")  # how `make bench` puts the compiled build ahead
# A line of callgrind_annotate's: "  50,301,000 (3.8%)  /tmp/b/__native.c:CPyDef_fleet___Fleet___deliver [..]"
_ANNOTATED = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+\S*?:(\S+)", re.MULTILINE)
_COMPILED_FUNCTION = re.compile(r"CPyDef_(\w+)")  # mypyc's C function for a Python one
_LIBRARY_FUNCTIONS = {"loads": "orjson.loads", "dumps": "orjson.dumps"}  # (orjson has no symbols but these)


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
        [("floor", "Python floor"), ("pure", "pure Python build")],
    )
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        section.notes.append("Not measured: valgrind is not installed here (Debian's valgrind package).")
        return section
    # The pure build is measured beside the compiled one; a run of the pure build is its own reference.
    compiled = bool(compiled_modules())
    sides = ["streamlife", "floor", *(["pure"] if compiled else [])]
    say(f"instructions: {', '.join(sides)} under callgrind")
    counts = (config.count, 3 * config.count)
    runs = [(side, handled) for side in sides for handled in counts]
    with tempfile.TemporaryDirectory(prefix="streamlife-") as kept, ThreadPoolExecutor(max_workers=2) as pool:
        # The compiled build's two runs keep callgrind's profile, to be broken down by function.
        profile_of = {handled: os.path.join(kept, f"{handled}.callgrind") for handled in counts}
        jobs = [
            (side, handled, profile_of[handled] if compiled and side == "streamlife" else None)
            for side, handled in runs
        ]
        counted = list(pool.map(lambda job: _count(valgrind, config, *job), jobs))  # (each child: a core)
        if compiled:
            shorter, longer = (profile_of[handled] for handled in counts)
            _show_functions(section, _by_function(shorter, longer, config.count))
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
            {"floor": per_callback["floor"], "pure": per_callback.get("pure")},
        )
    )
    section.extra["totals"] = {f"{side}.{handled}": total for (side, handled), total in totals.items()}
    return section


def _by_function(shorter: str, longer: str, count: int) -> dict[str, float]:
    """Instructions per callback by function, inclusive: each function's count in the longer run
    less the shorter's, over the ``2 * count`` callbacks between them. Only compiled streamlife
    functions and orjson's two, by their Python names; {} without callgrind_annotate."""
    annotate = shutil.which("callgrind_annotate")
    if annotate is None:
        return {}
    runs = [_annotated(annotate, path) for path in (shorter, longer)]
    return {name: (runs[1].get(name, 0) - runs[0].get(name, 0)) / (2 * count) for name in runs[1]}


def _annotated(annotate: str, path: str) -> dict[str, int]:
    shown = subprocess.run(
        [annotate, "--inclusive=yes", "--threshold=100", path],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    found: dict[str, int] = {}
    for count, symbol in _ANNOTATED.findall(shown):
        compiled = _COMPILED_FUNCTION.fullmatch(symbol)
        name = _python_name(compiled.group(1)) if compiled else _LIBRARY_FUNCTIONS.get(symbol)
        if name is not None:  # (a function inlined in part is listed once per source file: the most)
            found[name] = max(found.get(name, 0), int(count.replace(",", "")))
    return found


def _python_name(mangled: str) -> str:
    """mypyc's ``fleet___Fleet____fire`` as ``fleet.Fleet._fire``: three underscores join the parts
    (a fourth begins a private name)."""
    return ".".join(mangled.split("___"))


def _show_functions(section: Section, by_function: dict[str, float], top: int = 16) -> None:
    if not by_function:
        section.notes.append("No breakdown by function: callgrind_annotate is not installed here.")
        return
    whole = max(by_function.values())  # handle_callback, which every other one is within
    ranked = sorted(by_function.items(), key=lambda item: item[1], reverse=True)[:top]
    section.tables.append(
        Table(
            f"The compiled build by function: instructions per callback, each with its callees (top {top})",
            ["function", "instructions", "share"],
            [[name, f"{cost:,.0f}", f"{cost / whole:.0%}"] for name, cost in ranked],
        )
    )
    section.extra["by_function"] = dict(ranked)


def _count(valgrind: str, config: InstructionsConfig, side: str, handled: int, profile: str | None) -> int:
    code = "floor" if side == "floor" else "streamlife"  # ("pure" runs streamlife, from the source tree)
    work = [code, str(config.tasks), str(3 * config.count), str(handled)]
    command = [valgrind, "--tool=callgrind", f"--callgrind-out-file={profile or '/dev/null'}", sys.executable]
    command += ["-m", "bench.instructions", *work]
    # One hash seed for every child: string hashes then lay dicts out alike, run after run.
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    if side == "pure":  # the source tree alone on the path: no compiled build ahead of it
        environment = {name: value for name, value in environment.items() if name not in _COMPILED_FIRST}
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, env=environment, cwd=ROOT
    )
    found, build = _COLLECTED.search(finished.stderr), _BUILD.search(finished.stderr)
    if finished.returncode != 0 or found is None or build is None:
        failure = finished.stderr[-2000:]
        raise RuntimeError(f"callgrind run of {side} failed ({finished.returncode}): {failure}")
    if side == "pure" and build.group(1) != "pure Python":
        raise RuntimeError(f"the pure-Python run loaded a compiled build: {build.group(1)}")
    return int(found.group(1))


def _work(side: str, tasks: int, made: int, handled: int) -> None:
    """One child's work: the same set-up and bodies whatever ``handled`` is; then handle that many."""
    print(f"build: {build_description()}", file=sys.stderr)
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
