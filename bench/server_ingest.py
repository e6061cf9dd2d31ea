"""Ingest through the production server: ``streamlife serve --server uvicorn`` on loopback, loaded by
wrk, keep-alive and a new connection per request, at 1, 2 and 4 workers, on the memory, SQLite and
PostgreSQL stores.

SQLite and PostgreSQL are served by the command itself, ``streamlife serve --server uvicorn
--workers N``, in front of a store holding ``tasks`` live tasks (made here, through the simulator,
before it starts: each worker takes them back). The memory store is one process's alone, so it is
served with one worker only, by ``bench.server_target`` (the same application and server, its
tasks made in that process). wrk (Debian's package) sends new final-segment callbacks, spread over
every task round-robin, each segment once (a Lua script builds each body), from one thread over
``connections`` connections, for ``seconds`` a run after a warm-up run.

References, in the same run: the same server (and the same number of workers) with a null ASGI
application that reads the request and answers 200 (``bench.server_target null``): the HTTP cost
alone; and ``Fleet.handle_callback`` in-process, one thread, on a store of the same kind holding as
many live tasks (its own: the served one is the servers'): the Fleet's cost alone. The goal asks
that the HTTP cost per callback stay within 1.2 times the sum of the two, at every worker count and
in both modes. wrk and the server share the machine's two cores.

A figure and its references are measured in turns, round by round: the null app's run, the served
run, then a timed pass in-process, ``rounds`` times. A shared machine's speed moves within minutes,
so each round's ratio holds the served run against the references of the same moment, and the goal
is judged by the median of the rounds' ratios: a moment when the machine is slower weighs on both
sides alike, and one odd round on neither. The tables give each measure's median run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamlife.store import Store

from .common import CallbackStream, Figure, Goal, Section, Table, live_fleet, say, segment_body
from .server_target import TOKEN

REFS = [("null", "null app"), ("inproc", "in-process"), ("budget", "null + in-process")]
BUDGET = 1.2  # the HTTP cost per callback, at most, as a multiple of the null app's plus the in-process one
MEMORY_GOAL = 15_000  # callbacks/s, keep-alive, memory store
SQLITE_GOAL = 8_000  # callbacks/s, keep-alive, SQLite store (its best worker count)
MODES = ("keepalive", "close")


@dataclass(frozen=True)
class ServerConfig:
    tasks: int  # live tasks in the store
    seconds: float  # of each measured run
    warmup: float  # seconds of the run before it, unmeasured
    connections: int  # wrk's
    workers: tuple[int, ...]
    inprocess: int  # callbacks through handle_callback in a pass of the in-process reference
    inprocess_postgres: int  # the same on PostgreSQL, where each callback waits for its round trips
    rounds: int  # runs of each server, and passes in-process, in turns: the median kept


FULL = ServerConfig(
    tasks=2_000, seconds=3.0, warmup=1.0, connections=32, workers=(1, 2, 4), inprocess=4_000,
    inprocess_postgres=400, rounds=5,
)  # fmt: skip
QUICK = ServerConfig(
    tasks=200, seconds=1.0, warmup=1.0, connections=16, workers=(1, 2), inprocess=800,
    inprocess_postgres=100, rounds=1,
)  # fmt: skip


# -- wrk --------------------------------------------------------------------------------------------
_LUA = """
local ids = {%(ids)s}
local n = #ids
local first = 0
local counter = 0
local headers = {["Content-Type"] = "application/json"%(close)s}
local template = %(template)s

function init(args)
  first = tonumber(args[1])
end

function request()
  local k = counter
  counter = counter + 1
  local index = first + math.floor(k / n)
  local body = string.format(template, ids[(k %% n) + 1], index, index * 5, index * 5 + 5, index)
  return wrk.format("POST", "/memories/%(token)s", headers, body)
end
"""


def _template() -> str:
    """segment_body's JSON with its varying parts as format fields, for Lua's string.format."""
    body = segment_body("TASKID", 1234567).decode()
    if '"segment_start_time": "6172835.0"' not in body or '"segment_end_time": "6172840.0"' not in body:
        raise RuntimeError(f"segment_body changed its shape; teach the Lua template: {body}")
    body = body.replace("%", "%%").replace("TASKID", "%s").replace("6172835.0", "%d.0")
    body = body.replace("6172840.0", "%d.0").replace("1234567", "%d")
    return json.dumps(body)  # a JSON string is a Lua string literal here: no byte needs more


def _script(directory: Path, task_ids: Sequence[str], close: bool) -> Path:
    path = directory / f"post-{'close' if close else 'keepalive'}.lua"
    path.write_text(
        _LUA
        % {
            "ids": ", ".join(json.dumps(task_id) for task_id in task_ids),
            "close": ', ["Connection"] = "close"' if close else "",
            "template": _template(),
            "token": TOKEN,
        }
    )
    return path


RUN_TRIES = 3  # runs of one mode, at most, until one completes a request


@dataclass
class Run:
    requests: int
    per_second: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float


def _wrk(port: int, script: Path, first: int, seconds: float, connections: int) -> Run:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}", "--", str(first)],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout  # fmt: skip
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    per_second = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return Run(
        requests,
        per_second,
        int(non[1]) if non else 0,
        sum(int(n) for n in errors.groups()) if errors else 0,
        _ms(out, "50%"),
        _ms(out, "99%"),
    )


def _ms(out: str, percentile: str) -> float:
    found = re.search(rf"^\s+{percentile}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if found is None:
        return float("nan")
    return float(found[1]) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[found[2]]


# -- the servers ------------------------------------------------------------------------------------
def _environment() -> dict[str, str]:
    return {**os.environ, "MEMORIES_API_KEY": "sk-mai-bench", "STREAMLIFE_WEBHOOK_TOKEN": TOKEN}


@contextlib.contextmanager
def _process(
    command: list[str], ready: Path | None, said: Sequence[str] = ()
) -> Iterator[subprocess.Popen[str]]:
    """Run ``command`` until the block ends (SIGTERM, then wait); ready once the file ``ready`` is
    written, or once it has said each of the patterns ``said`` on stderr."""
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_environment(),
        start_new_session=True,
    )  # fmt: skip
    try:
        give_up_at = time.monotonic() + 300
        waiting = list(said)
        assert process.stderr is not None
        while waiting:
            line = process.stderr.readline()
            if not line:
                raise RuntimeError(f"{command[:4]} ended before it was ready (exit {process.wait()})")
            waiting = [pattern for pattern in waiting if not re.search(pattern, line)]
        while ready is not None and not (ready.exists() and ready.read_text()):
            if process.poll() is not None or time.monotonic() > give_up_at:
                raise RuntimeError(f"{command[:4]} never became ready (exit {process.poll()})")
            time.sleep(0.05)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _serve(store_url: str, workers: int) -> contextlib.AbstractContextManager[Any]:
    """``streamlife serve --server uvicorn`` on ``store_url``; entering it gives its port."""
    command = [sys.executable, "-m", "streamlife", "serve", "--server", "uvicorn", "--store", store_url,
               "--port", "0", "--workers", str(workers), "--api-url", "http://127.0.0.1:9/"]  # fmt: skip
    said = [rf"worker {n}: " for n in range(workers)] if workers > 1 else [r"webhooks at"]
    return _ServeWithPort(_process(command, None, said))


class _ServeWithPort:
    """Enters serve's process; gives the port it listens on (read from /proc: serve prints it too,
    but its stderr is read only until it is ready)."""

    def __init__(self, running: contextlib.AbstractContextManager[subprocess.Popen[str]]) -> None:
        self.running = running

    def __enter__(self) -> int:
        process = self.running.__enter__()
        return _listening_port(process.pid)

    def __exit__(self, *exc: object) -> None:
        self.running.__exit__(None, None, None)


def _listening_port(pid: int) -> int:
    """The TCP port the process ``pid`` listens on (Linux: its descriptors, then /proc/net/tcp)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                return int(fields[1].rsplit(":", 1)[1], 16)
    raise RuntimeError(f"process {pid} listens on no TCP port")


def _target(
    kind: str, directory: Path, *, workers: int = 1, tasks: int = 0, spin_us: float = 0.0
) -> contextlib.AbstractContextManager[Any]:
    port_file = directory / f"{kind}-{workers}.port"
    port_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "bench.server_target", kind, "--port-file", str(port_file),
               "--workers", str(workers), "--tasks", str(tasks),
               "--ids-file", str(directory / "memory.ids"), "--spin-us", str(spin_us),
               "--work-file", str(directory / "work.us")]  # fmt: skip
    return _PortFile(_process(command, port_file), port_file)


class _PortFile:
    def __init__(
        self, running: contextlib.AbstractContextManager[subprocess.Popen[str]], port_file: Path
    ) -> None:
        self.running = running
        self.port_file = port_file

    def __enter__(self) -> int:
        self.running.__enter__()
        return int(self.port_file.read_text())

    def __exit__(self, *exc: object) -> None:
        self.running.__exit__(None, None, None)


# -- the measures -----------------------------------------------------------------------------------
@dataclass
class Loaded:
    """What one server took: its median run by mode, every run's rate, and the next free segment
    index of its tasks."""

    runs: dict[str, Run]
    rates: dict[str, list[float]]
    next_index: int


@dataclass
class Target:
    """A server to load: its port, the task_ids its requests name, and their next free segment index."""

    port: int
    task_ids: Sequence[str]
    first: int = 0


def _interleaved(
    targets: dict[str, Target], directory: Path, config: ServerConfig, reference: Reference
) -> tuple[dict[str, Loaded], dict[str, list[float]]]:
    """Each target loaded in turn, then a pass of ``reference``, ``config.rounds`` times a mode,
    after a warm-up run each: what each server took, and the reference's µs per callback by mode,
    pass by pass (see the module's docstring)."""
    runs: dict[str, dict[str, list[Run]]] = {name: {} for name in targets}
    passes: dict[str, list[float]] = {}
    for mode in MODES:
        scripts = {}
        for name, target in targets.items():
            (directory / name).mkdir(exist_ok=True)
            scripts[name] = _script(directory / name, target.task_ids, close=mode == "close")
            warm = _wrk(target.port, scripts[name], target.first, config.warmup, config.connections)
            target.first += warm.requests // len(target.task_ids) + 1
        for _ in range(config.rounds):
            for name, target in targets.items():
                runs[name].setdefault(mode, []).append(_run(target, scripts[name], mode, config))
            passes.setdefault(mode, []).append(reference.pass_us())
    loaded = {
        name: Loaded(
            {mode: _median(taken) for mode, taken in by_mode.items()},
            {mode: [run.per_second for run in taken] for mode, taken in by_mode.items()},
            targets[name].first,
        )
        for name, by_mode in runs.items()
    }
    return loaded, passes


def _run(target: Target, script: Path, mode: str, config: ServerConfig) -> Run:
    for _ in range(RUN_TRIES):
        run = _wrk(target.port, script, target.first, config.seconds, config.connections)
        target.first += run.requests // len(target.task_ids) + 1
        if run.requests:
            return run
        # (A run with no answer at all says nothing of the server's rate, and its 0/s would
        # divide the budget by zero: it is run again, and reported if it never answers.)
        say(f"server: a {mode} run on port {target.port} completed no request; running it again")
    raise RuntimeError(f"the server on port {target.port} answered no {mode} request in {RUN_TRIES} runs")


def _median(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda run: run.per_second)[len(runs) // 2]


class Reference:
    """The in-process reference: ``Fleet.handle_callback``, one thread, on a Fleet of ``tasks`` live
    tasks on ``store`` (None: memory), timed a pass of ``count`` new callbacks at a time."""

    def __init__(self, store: Store | None, tasks: int, count: int) -> None:
        # At the time now, as the served stores' tasks are (see ``_made``).
        self.live = live_fleet(tasks, store, clock_at=time.time())
        self.stream = CallbackStream(self.live.task_ids)
        self.count = count
        handle = self.live.fleet.handle_callback
        for body in self.stream.fresh(max(1, count // 4)):  # warm-up
            handle(body)

    def pass_us(self) -> float:
        """µs per callback over a pass (its bodies made before it is timed)."""
        timed = self.stream.fresh(self.count)
        handle = self.live.fleet.handle_callback
        started = time.perf_counter()
        for body in timed:
            handle(body)
        return (time.perf_counter() - started) / len(timed) * 1e6

    def __enter__(self) -> Reference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.close()


def _made(store: Store, tasks: int) -> list[str]:
    """``tasks`` live tasks made in ``store`` (closed after) for a server to take back: their task_ids."""
    # At the time now: serve reads the tasks on the real clock. From a clock at 0, every row would
    # be decades overdue there: each worker's timers would take the tasks over and fire their
    # silence deadlines during the runs, as no live deployment's would.
    live = live_fleet(tasks, store, clock_at=time.time())
    try:
        return list(live.task_ids)
    finally:
        live.close()


def _postgres_server() -> str | None:
    """A PostgreSQL server to make a database on, or None: STREAMLIFE_PG_DSN, else the local one."""
    try:
        from tests.pg import LOCAL_DSN, answers
    except ImportError:
        return None
    dsn = os.environ.get("STREAMLIFE_PG_DSN") or LOCAL_DSN
    return dsn if answers(dsn) is None else None


def _measure_stores(
    section: Section,
    config: ServerConfig,
    directory: Path,
    nulls: dict[int, int],
    taken: dict[tuple[str, int], Taken],
) -> None:
    """SQLite and PostgreSQL, each through ``serve --workers N``, in turns with the null app of as
    many workers and with the in-process reference on a store of the same kind."""
    # Each store's kind: how to make a store of it (the served one, then the reference's) until the
    # block ends, as a URL; and the callbacks in a pass of the in-process reference.
    kinds: list[tuple[str, Callable[[str], contextlib.AbstractContextManager[str]], int]] = [
        ("sqlite", lambda what: contextlib.nullcontext(f"sqlite:{directory / what}.db"), config.inprocess)
    ]
    pg_server = _postgres_server()
    if pg_server is None:
        section.notes.append(
            "PostgreSQL not measured: no server answers (STREAMLIFE_PG_DSN, or 127.0.0.1:5432)"
        )
    else:
        kinds.append(
            ("postgres", functools.partial(_postgres_database, pg_server), config.inprocess_postgres)
        )
    for name, make, count in kinds:
        with contextlib.ExitStack() as stack:
            url, reference_url = stack.enter_context(make("served")), stack.enter_context(make("reference"))
            say(f"server: {name}, {config.tasks:,} tasks to serve, as many for the in-process reference")
            ids = _made(_open(url), config.tasks)
            reference = stack.enter_context(Reference(_open(reference_url), config.tasks, count))
            first = 0
            for workers in config.workers:
                say(f"server: {name}, {workers} worker(s), the null app and in-process, in turns")
                with _serve(url, workers) as port:
                    served = Target(port, ids, first)
                    targets = {"null": Target(nulls[workers], ["x" * 36]), name: served}
                    loaded, passes = _interleaved(targets, directory, config, reference)
                taken[name, workers] = Taken(loaded[name], loaded["null"], passes)
                first = served.first


@dataclass
class Taken:
    """What one store at one worker count took, beside the references taken in turns with it."""

    served: Loaded
    null: Loaded
    inprocess: dict[str, list[float]]  # µs per callback by mode, pass by pass

    def inprocess_us(self, mode: str) -> float:
        return statistics.median(self.inprocess[mode])

    def ratio(self, mode: str) -> float:
        """The median of the rounds' ratios: each round's µs per served callback to the sum of its
        null app's and its in-process pass's."""
        return statistics.median(
            (1e6 / ours) / (1e6 / null + inprocess)
            for ours, null, inprocess in zip(
                self.served.rates[mode], self.null.rates[mode], self.inprocess[mode], strict=True
            )
        )


def run(config: ServerConfig) -> Section:
    section = Section(
        "server",
        "Ingest through the production server: serve --server uvicorn, loaded by wrk",
        f"{config.tasks:,} live tasks; wrk (one thread, {config.connections} connections) POSTs new final "
        f"segments for {config.seconds:g} s a run after {config.warmup:g} s of warm-up, keep-alive and with "
        "`Connection: close` (a new connection each). SQLite and PostgreSQL: `streamlife serve --server "
        f"uvicorn --workers N` (N = {', '.join(map(str, config.workers))}) on a store holding the tasks; "
        "memory: one worker only (a memory store is one process's), by bench.server_target. References "
        "in the same run: the same server and worker count with a null ASGI application, and "
        "Fleet.handle_callback in-process, one thread, on a store of the same kind holding as many live "
        f"tasks (passes of {config.inprocess:,} callbacks, {config.inprocess_postgres:,} on PostgreSQL). "
        f"Each measure takes {config.rounds} runs (passes) in turns, round by round; the tables give the "
        "median run, and the goal is judged by the median of the rounds' ratios (each round's served µs "
        "per callback to the sum of that round's null app µs and in-process µs). wrk and the server share "
        "the machine's cores.",
        REFS,
    )
    if shutil.which("wrk") is None:
        section.notes.append("NOT MEASURED: wrk is not installed (Debian: apt-get install wrk)")
        section.goals.append(
            Goal("server.budget", f"HTTP cost ≤ {BUDGET}x (null + in-process)", "wrk missing", None)
        )
        return section
    directory = Path(tempfile.mkdtemp(prefix="streamlife-bench-server-"))
    rows: list[list[str]] = []
    taken: dict[tuple[str, int], Taken] = {}
    nothing = ["x" * 36]  # the task_id a null app's requests name
    try:
        with contextlib.ExitStack() as servers:
            # Up for the whole section (idle between their turns), so each runs in turns with every
            # figure held against it.
            nulls = {w: servers.enter_context(_target("null", directory, workers=w)) for w in config.workers}

            say(f"server: memory, in-process reference, {config.tasks:,} tasks")
            reference = servers.enter_context(Reference(None, config.tasks, config.inprocess))
            spin_us = statistics.median(reference.pass_us() for _ in range(config.rounds))
            say("server: memory (1 worker), two null apps as slow as the Fleet, the null app, in turns")
            with (
                _target("memory", directory, tasks=config.tasks) as memory_port,
                _target("spin", directory, spin_us=spin_us) as spin_port,
                _target("work", directory, spin_us=spin_us) as work_port,
            ):
                ids = (directory / "memory.ids").read_text().split()
                work_us = float((directory / "work.us").read_text())
                loaded, passes = _interleaved(
                    {
                        "null": Target(nulls[1], nothing),
                        "memory": Target(memory_port, ids),
                        "spin": Target(spin_port, nothing),
                        "work": Target(work_port, ids),
                    },
                    directory,
                    config,
                    reference,
                )
            taken["memory", 1] = Taken(loaded["memory"], loaded["null"], passes)
            spin, work = loaded["spin"], loaded["work"]
            _measure_stores(section, config, directory, nulls, taken)
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    for (name, workers), took in taken.items():
        for mode in MODES:
            ours, ref = took.served.runs[mode], took.null.runs[mode]
            us_null, us_inproc = 1e6 / ref.per_second, took.inprocess_us(mode)
            connection = "keep-alive" if mode == "keepalive" else "new connection each"
            label = f"{name}, {workers} worker{'s' if workers > 1 else ''}, {connection}"
            section.add(
                Figure(
                    f"server.{name}.{workers}.{mode}.callbacks_per_second",
                    f"{label}: callbacks/s",
                    "/s",
                    ours.per_second,
                    {
                        "null": ref.per_second,
                        "inproc": 1e6 / us_inproc,
                        "budget": 1e6 / (us_null + us_inproc),
                    },
                    better="higher",
                    note="the ratio the goal is judged by, the median over the rounds of each round's "
                    f"to the references of the same turn: {took.ratio(mode):.2f}x",
                )
            )
            rows.append(
                [label, f"{1e6 / ours.per_second:,.1f}", f"{us_null:,.1f}", f"{us_inproc:,.1f}",
                 f"{took.ratio(mode):.2f}x", f"{ours.p50_ms:.2f}", f"{ours.p99_ms:.2f}",
                 f"{ours.non_2xx + ours.socket_errors:,}"]
            )  # fmt: skip
            if ours.non_2xx or ours.socket_errors:
                section.notes.append(
                    f"WARNING: {label}: {ours.non_2xx:,} answers not 2xx,"
                    f" {ours.socket_errors:,} socket errors"
                )
    section.tables.append(
        Table(
            "µs per callback (1 / rate) beside the references; the goal's ratio; latency under load",
            ["run", "µs/callback", "null app µs", "in-process µs", "ratio (rounds' median)", "p50 ms",
             "p99 ms", "errors"],
            rows,
        ),
    )  # fmt: skip
    section.extra["inprocess_us"] = {f"{n}.{w}": took.inprocess for (n, w), took in taken.items()}
    section.extra["ratios"] = {
        f"{n}.{w}": {m: took.ratio(m) for m in MODES} for (n, w), took in taken.items()
    }
    memory = taken.get(("memory", 1))
    if memory is not None:
        section.extra["spin"], section.extra["work"] = _runs(spin), _runs(work)
        section.extra["spin_us"], section.extra["work_us"] = spin_us, work_us
        for mode in MODES:
            connection = "keep-alive" if mode == "keepalive" else "a new connection each"
            bare = 1e6 / memory.null.runs[mode].per_second
            fleet_us = 1e6 / memory.served.runs[mode].per_second
            spun, worked = 1e6 / spin.runs[mode].per_second, 1e6 / work.runs[mode].per_second
            section.notes.append(
                f"A null app that keeps the CPU busy for the in-process µs ({spin_us:.1f}) before it"
                f" answers, {connection}: {spun:.1f} µs per request, {spun / (bare + spin_us):.2f}x (null +"
                " in-process): the server's own cost around an application as slow as the Fleet;"
                f" streamlife on the memory store, {fleet_us / spun:.2f}x that (median runs)."
            )
            section.notes.append(
                "A null app that first does Python work of the Fleet's kind, none of its code, as costly"
                f" in-process (the dict-FSM floor in copies: {work_us:.1f} µs), {connection}:"
                f" {worked:.1f} µs per request, {worked / (bare + work_us):.2f}x (null + in-process): what"
                " the server's work between two requests costs an application whose work touches memory;"
                f" streamlife on the memory store, {fleet_us / worked:.2f}x that (median runs)."
            )
    section.extra["null"] = {f"{n}.{w}": _runs(took.null) for (n, w), took in taken.items()}
    section.extra["rates"] = {
        f"{n}.{w}": {"served": took.served.rates, "null": took.null.rates} for (n, w), took in taken.items()
    }
    section.extra["runs"] = {f"{n}.{w}": _runs(took.served) for (n, w), took in taken.items()}

    # Judged at every worker count and in both modes measured: a deployment picks its worker count
    # and its clients pick keep-alive or not, so the goal must hold for each.
    for name in ("memory", "sqlite", "postgres"):
        counts = sorted(w for n, w in taken if n == name)
        for mode in MODES:
            measured = [(w, taken[name, w].ratio(mode)) for w in counts]
            at = ", ".join(map(str, counts)) if counts else "1"
            connection = "keep-alive" if mode == "keepalive" else "a new connection each"
            section.goals.append(
                Goal(
                    f"server.{name}.{mode}.budget",
                    f"HTTP cost per callback ≤ {BUDGET}x (null app + in-process), {name} store,"
                    f" {connection}, at {at} worker{'s' if at != '1' else ''}",
                    "; ".join(f"{r:.2f}x at {w}" for w, r in measured) + " (the median of the rounds' ratios)"
                    if measured
                    else "not measured",
                    None if not measured else all(r <= BUDGET for _, r in measured),
                )
            )
    section.goals.append(
        Goal(
            "server.memory.rate",
            f"≥ {MEMORY_GOAL:,} callbacks/s with keep-alive, memory store (1 worker)",
            "not measured" if memory is None else f"{memory.served.runs['keepalive'].per_second:,.0f}/s",
            None if memory is None else memory.served.runs["keepalive"].per_second >= MEMORY_GOAL,
        )
    )
    sqlite = [
        (w, took.served.runs["keepalive"].per_second) for (n, w), took in taken.items() if n == "sqlite"
    ]
    best = max(sqlite, key=lambda pair: pair[1], default=None)
    section.goals.append(
        Goal(
            "server.sqlite.rate",
            f"≥ {SQLITE_GOAL:,} callbacks/s with keep-alive, SQLite store (best worker count)",
            "not measured" if best is None else f"{best[1]:,.0f}/s at {best[0]} worker(s)",
            None if best is None else best[1] >= SQLITE_GOAL,
        )
    )
    return section


def _runs(loaded: Loaded) -> dict[str, Any]:
    return {mode: vars(run) for mode, run in loaded.runs.items()}


@contextlib.contextmanager
def _postgres_database(server: str, what: str) -> Iterator[str]:
    """A new database on ``server`` while the block runs, as a store URL."""
    from tests.pg import fresh_database

    with fresh_database(server, prefix=f"streamlife_bench_{what}") as dsn:
        yield f"postgres:{dsn}"


def _open(url: str) -> Store:
    from streamlife.store import open_store

    return open_store(url)
