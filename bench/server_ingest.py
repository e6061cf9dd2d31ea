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
alone; and ``Fleet.handle_callback`` in-process, one thread, on the very store and tasks served
afterwards: the Fleet's cost alone. The goal asks that the HTTP cost per callback stay within 1.2
times the sum of the two, at every worker count and in both modes. wrk and the server share the
machine's two cores.

A figure and the null app it is held against are measured in turns (null, served, null, served,
...), ``rounds`` runs each, and each keeps its median run: a moment when the machine is slower
then weighs on both sides alike, and one odd run on neither. The in-process reference keeps the
median of as many timed passes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamlife.store import SqliteStore, Store

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
    inprocess: int  # callbacks through handle_callback for the in-process reference, a pass
    rounds: int  # runs of each server (passes of the in-process reference), in turns: the median kept


FULL = ServerConfig(
    tasks=2_000, seconds=3.0, warmup=1.0, connections=32, workers=(1, 2, 4), inprocess=4_000, rounds=3
)
QUICK = ServerConfig(
    tasks=200, seconds=1.0, warmup=1.0, connections=16, workers=(1, 2), inprocess=800, rounds=1
)


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
               "--ids-file", str(directory / "memory.ids"), "--spin-us", str(spin_us)]  # fmt: skip
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


def _interleaved(targets: dict[str, Target], directory: Path, config: ServerConfig) -> dict[str, Loaded]:
    """Each target loaded in turn, ``config.rounds`` times a mode, after a warm-up run each: the
    median run of each is kept (see the module's docstring)."""
    runs: dict[str, dict[str, list[Run]]] = {name: {} for name in targets}
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
    return {
        name: Loaded(
            {mode: _median(taken) for mode, taken in by_mode.items()},
            {mode: [run.per_second for run in taken] for mode, taken in by_mode.items()},
            targets[name].first,
        )
        for name, by_mode in runs.items()
    }


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


def _inprocess_us(store: Store | None, config: ServerConfig) -> tuple[float, list[str], int]:
    """µs per callback through handle_callback on a Fleet of ``config.tasks`` live tasks on ``store``
    (None: memory); the task_ids (left in the store) and the next free segment index."""
    # At the time now: serve reads the tasks on the real clock. From a clock at 0, every row would
    # be decades overdue there: each worker's timers would take the tasks over and fire their
    # silence deadlines during the runs, as no live deployment's would.
    live = live_fleet(config.tasks, store, clock_at=time.time())
    try:
        stream = CallbackStream(live.task_ids)
        handle = live.fleet.handle_callback
        for body in stream.fresh(config.inprocess // 4):  # warm-up
            handle(body)
        passes = []
        for _ in range(config.rounds):
            timed = stream.fresh(config.inprocess)
            started = time.perf_counter()
            for body in timed:
                handle(body)
            passes.append((time.perf_counter() - started) / len(timed) * 1e6)
        us = sorted(passes)[len(passes) // 2]
        return us, list(live.task_ids), stream.position // len(live.task_ids) + 1
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
    inproc: dict[str, float],
    results: dict[tuple[str, int], Loaded],
    null: dict[tuple[str, int], Loaded],
) -> None:
    """SQLite and PostgreSQL, each through ``serve --workers N``, in turns with the null app of as
    many workers; their in-process references."""
    stores: list[tuple[str, str, Any]] = [("sqlite", f"sqlite:{directory / 'tasks.db'}", None)]
    pg_server = _postgres_server()
    if pg_server is None:
        section.notes.append(
            "PostgreSQL not measured: no server answers (STREAMLIFE_PG_DSN, or 127.0.0.1:5432)"
        )
    else:
        from tests.pg import fresh_database

        stores.append(("postgres", "", fresh_database(pg_server)))
    for name, url, database in stores:
        with contextlib.ExitStack() as stack:
            if database is not None:
                url = f"postgres:{stack.enter_context(database)}"
            say(f"server: {name}, in-process reference, {config.tasks:,} tasks")
            store: Store = SqliteStore(url[7:]) if name == "sqlite" else _open(url)
            inproc[name], ids, first = _inprocess_us(store, config)
            for workers in config.workers:
                say(f"server: {name}, {workers} worker(s), and the null app, in turns")
                with _serve(url, workers) as port:
                    served = Target(port, ids, first)
                    targets = {"null": Target(nulls[workers], ["x" * 36]), name: served}
                    loaded = _interleaved(targets, directory, config)
                results[name, workers], null[name, workers] = loaded[name], loaded["null"]
                first = served.first


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
        f"Fleet.handle_callback in-process on the same store and tasks ({config.inprocess:,} callbacks, "
        "one thread). The budget is 1 / (the null app's µs + the in-process µs) per callback. wrk and the "
        "server share the machine's cores.",
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
    results: dict[tuple[str, int], Loaded] = {}
    null: dict[tuple[str, int], Loaded] = {}  # the null app's runs, taken in turns with each figure's
    inproc: dict[str, float] = {}
    nothing = ["x" * 36]  # the task_id a null app's requests name
    try:
        with contextlib.ExitStack() as servers:
            # Up for the whole section (idle between their turns), so each runs in turns with every
            # figure held against it.
            nulls = {w: servers.enter_context(_target("null", directory, workers=w)) for w in config.workers}

            say(f"server: memory, in-process reference, {config.tasks:,} tasks")
            inproc["memory"], _, _ = _inprocess_us(None, config)
            say("server: memory (1 worker), a null app as slow as the Fleet, and the null app, in turns")
            with (
                _target("memory", directory, tasks=config.tasks) as memory_port,
                _target("spin", directory, spin_us=inproc["memory"]) as spin_port,
            ):
                ids = (directory / "memory.ids").read_text().split()
                taken = _interleaved(
                    {
                        "null": Target(nulls[1], nothing),
                        "memory": Target(memory_port, ids),
                        "spin": Target(spin_port, nothing),
                    },
                    directory,
                    config,
                )
            results["memory", 1], null["memory", 1], spin = taken["memory"], taken["null"], taken["spin"]
            _measure_stores(section, config, directory, nulls, inproc, results, null)
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    for (name, workers), loaded in results.items():
        for mode in MODES:
            ours, ref = loaded.runs[mode], null[name, workers].runs[mode]
            us_null = 1e6 / ref.per_second if ref else None
            budget = 1e6 / (us_null + inproc[name]) if us_null else None
            connection = "keep-alive" if mode == "keepalive" else "new connection each"
            label = f"{name}, {workers} worker{'s' if workers > 1 else ''}, {connection}"
            section.add(
                Figure(
                    f"server.{name}.{workers}.{mode}.callbacks_per_second",
                    f"{label}: callbacks/s",
                    "/s",
                    ours.per_second,
                    {"null": ref.per_second if ref else None, "inproc": 1e6 / inproc[name], "budget": budget},
                    better="higher",
                )
            )
            rows.append(
                [label, f"{1e6 / ours.per_second:,.1f}", f"{us_null:,.1f}" if us_null else "—",
                 f"{inproc[name]:,.1f}", f"{ours.p50_ms:.2f}", f"{ours.p99_ms:.2f}",
                 f"{ours.non_2xx + ours.socket_errors:,}"]
            )  # fmt: skip
            if ours.non_2xx or ours.socket_errors:
                section.notes.append(
                    f"WARNING: {label}: {ours.non_2xx:,} answers not 2xx,"
                    f" {ours.socket_errors:,} socket errors"
                )
    section.tables.append(
        Table(
            "µs per callback (1 / rate) beside the references; latency under load",
            ["run", "µs/callback", "null app µs", "in-process µs", "p50 ms", "p99 ms", "errors"],
            rows,
        )
    )
    section.extra["inprocess_us"] = inproc
    section.extra["spin"] = _runs(spin)
    if ("memory", 1) in null:
        for mode in MODES:
            spun, bare = 1e6 / spin.runs[mode].per_second, 1e6 / null["memory", 1].runs[mode].per_second
            fleet_us = 1e6 / results["memory", 1].runs[mode].per_second
            section.notes.append(
                f"A null app that keeps the CPU busy for the in-process µs ({inproc['memory']:.1f}) before"
                f" it answers, {'keep-alive' if mode == 'keepalive' else 'a new connection each'}:"
                f" {spun:.1f} µs per request, {spun / (bare + inproc['memory']):.2f}x (null +"
                f" in-process): the server's own cost around an application as slow as the Fleet;"
                f" streamlife on the memory store, {fleet_us / spun:.2f}x that."
            )
    section.extra["null"] = {f"{n}.{w}": _runs(loaded) for (n, w), loaded in null.items()}
    section.extra["rates"] = {
        f"{n}.{w}": {"served": loaded.rates, "null": null[n, w].rates} for (n, w), loaded in results.items()
    }
    section.extra["runs"] = {f"{n}.{w}": _runs(loaded) for (n, w), loaded in results.items()}

    def ratio(name: str, workers: int, mode: str) -> float | None:
        figure = next(
            (f for f in section.figures if f.key == f"server.{name}.{workers}.{mode}.callbacks_per_second"),
            None,
        )
        return None if figure is None else figure.ratio("budget")

    # Judged at every worker count and in both modes measured: a deployment picks its worker count
    # and its clients pick keep-alive or not, so the goal must hold for each.
    for name in ("memory", "sqlite", "postgres"):
        counts = sorted(w for n, w in results if n == name)
        for mode in MODES:
            found = [(w, ratio(name, w, mode)) for w in counts]
            measured = [(w, r) for w, r in found if r is not None]
            at = ", ".join(map(str, counts)) if counts else "1"
            connection = "keep-alive" if mode == "keepalive" else "a new connection each"
            section.goals.append(
                Goal(
                    f"server.{name}.{mode}.budget",
                    f"HTTP cost per callback ≤ {BUDGET}x (null app + in-process), {name} store,"
                    f" {connection}, at {at} worker{'s' if at != '1' else ''}",
                    "; ".join(f"{r:.2f}x at {w}" for w, r in measured) if measured else "not measured",
                    None if not measured else all(r <= BUDGET for _, r in measured),
                )
            )
    memory = results.get(("memory", 1))
    section.goals.append(
        Goal(
            "server.memory.rate",
            f"≥ {MEMORY_GOAL:,} callbacks/s with keep-alive, memory store (1 worker)",
            "not measured" if memory is None else f"{memory.runs['keepalive'].per_second:,.0f}/s",
            None if memory is None else memory.runs["keepalive"].per_second >= MEMORY_GOAL,
        )
    )
    sqlite = [(w, loaded.runs["keepalive"].per_second) for (n, w), loaded in results.items() if n == "sqlite"]
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


def _open(url: str) -> Store:
    from streamlife.store import open_store

    return open_store(url)
