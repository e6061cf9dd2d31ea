"""A Fleet in a process of its own, driven line by line from stdin: for tests that kill it, or run
several side by side on one store.

    python -m tests.fleet_worker --store sqlite:/tmp/x.db --sim http://127.0.0.1:8123/serve/api/v2 \\
        --api-key sk-mai-... --token <16+ chars> [--port 0] [--hold] [--park-ttl 1.0] ...

It opens the store, makes a Fleet on ``HttpTransport`` (one attempt per request, short timeouts,
the system clock), calls ``fleet.recover()``, then serves a ``WebhookReceiver`` on ``--port`` (0
picks one; a fixed port is taken as soon as it is free, so a restarted worker answers at the same
URL) and prints ``ready <port>``. It then ticks the Fleet's timers every 0.05 s, unless ``--hold``:
then the timers start with the ``go`` command (so a test can redeliver what a dead worker missed
before the recovered Fleet resends anything).

Commands, one a line; each is answered by one JSON line on stdout:

    start N                 start N audio streams        -> {"tasks": [task, ...]}
    stop TASK_ID            Fleet.stop(TASK_ID)          -> {"task": task}
    fail_stops TASK_ID      from now on, each stop of TASK_ID fails here with a 500, before it
                            reaches the service          -> {"failing": TASK_ID}
    start_then_die          start one stream, and SIGKILL this process as soon as the start
                            request returns, before the Fleet journals its answer
                                                         -> {"dying": task_id} (then nothing)
    die_after_callbacks N   SIGKILL this process once N more callbacks are applied (journaled),
                            before the webhook is answered -> {"armed": N}
    stop_all                Fleet.stop_all()             -> {"unsettled": [task, ...]}
    status                                               -> {"tasks": [...], "parked": n, ...}
    go                      start the timers (``--hold``) -> {"timers": true}
    quit                    close the Fleet and the store, exit 0 -> {"bye": true}

A task is {"key", "task_id", "state", "adopted", "triggers"}. Logs: warnings and worse, as JSON
lines on stderr.

``Worker`` is the test's side: it spawns this program, waits for ``ready``, sends commands and
reads their answers (never blocking past a timeout), and kills it.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import IO, Any

import structlog

from streamlife import Fleet, Outcome, Policy, StreamKind, StreamTask
from streamlife._events import StartResult, StopResult
from streamlife.errors import ServiceError
from streamlife.store import open_store
from streamlife.transport import HttpTransport, RetryPolicy
from streamlife.webhook import RunningReceiver, WebhookReceiver, serve_webhook

READY = "ready"
REPO_ROOT = Path(__file__).resolve().parent.parent

Say = Callable[[Mapping[str, Any]], None]


def _die() -> None:
    """End this process at once, as a crash or an OOM kill would: nothing is flushed or closed."""
    os.kill(os.getpid(), signal.SIGKILL)


class _DyingTransport:
    """``HttpTransport``, with a switch that kills the process right after a start returns: the
    stream exists at the service (and bills), but the Fleet never journals its task_id; and the
    task_ids whose stops fail here, as a 500 would."""

    def __init__(self, inner: HttpTransport, say: Say) -> None:
        self.inner = inner
        self.say = say
        self.die_after_start = False
        self.failing: set[str] = set()

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        result = self.inner.start(kind, params)
        if self.die_after_start:
            self.say({"dying": result.task_id})
            _die()
        return result

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        if task_id in self.failing:
            raise ServiceError("internal error (a test)", operation=f"{kind}.stop", status=500, code=None)
        return self.inner.stop(kind, task_id, within=within)

    def close(self) -> None:
        self.inner.close()


class _Sink:
    """What the receiver hands callbacks to: the Fleet, with a switch that kills the process after
    the n-th callback is applied (and journaled) and before its webhook is answered."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._lock = threading.Lock()
        self._die_after: int | None = None

    def die_after(self, callbacks: int) -> None:
        with self._lock:
            self._die_after = callbacks

    def handle_callback(self, payload: bytes) -> Outcome:
        outcome = self.fleet.handle_callback(payload)
        with self._lock:
            if self._die_after is not None:
                self._die_after -= 1
                if self._die_after <= 0:
                    _die()
        return outcome


def _describe(task: StreamTask) -> dict[str, Any]:
    return {
        "key": task.key,
        "task_id": task.task_id,
        "state": task.state.value,
        "adopted": task.adopted,
        "triggers": [entry.trigger for entry in task.history],
    }


def _serve(stack: ExitStack, receiver: WebhookReceiver, port: int, patience: float = 15.0) -> RunningReceiver:
    """``serve_webhook`` on ``port``, until ``stack`` closes; a fixed port that a dead predecessor
    held is tried again until it is free."""
    give_up_at = time.monotonic() + patience
    while True:
        try:
            return stack.enter_context(serve_webhook(receiver, port=port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > give_up_at:
                raise
            time.sleep(0.05)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fleet_worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--store", required=True, help="a store URL: sqlite:PATH, postgres:DSN")
    parser.add_argument("--sim", required=True, help="the simulator's base URL (HttpTransport's base_url)")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--token", required=True, help="the webhook receiver's token")
    parser.add_argument("--port", type=int, default=0, help="the receiver's port (0: any free one)")
    parser.add_argument("--hold", action="store_true", help="start the timers on 'go' only")
    parser.add_argument("--park-ttl", type=float, default=1.0)
    parser.add_argument("--uncertain-ttl", type=float, default=1.0)
    parser.add_argument("--final-callback-wait", type=float, default=5.0)
    parser.add_argument("--stop-concurrency", type=int, default=4)
    # Streams here are quiet for as long as a test pleases, unless it says otherwise.
    parser.add_argument("--silence-after", type=float, default=3600.0)
    parser.add_argument("--stop-when-stalled", type=int, choices=(0, 1), default=0)
    parser.add_argument("--takeover-after", type=float, default=Policy().takeover_after)
    parser.add_argument("--stop-timeout", type=float, default=Policy().stop_timeout)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    out_lock = threading.Lock()

    def say(answer: Mapping[str, Any]) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()

    policy = Policy(
        park_ttl=args.park_ttl,
        uncertain_ttl=args.uncertain_ttl,
        final_callback_wait=args.final_callback_wait,
        silence_after=args.silence_after,
        stop_when_stalled=bool(args.stop_when_stalled),
        stop_retry_base=0.2,
        stop_retry_cap=1.0,
        stop_concurrency=args.stop_concurrency,
        takeover_after=args.takeover_after,
        stop_timeout=args.stop_timeout,
    )
    http = HttpTransport(
        args.api_key,
        base_url=args.sim,
        timeout=(1.0, 3.0),
        retry=RetryPolicy(attempts=1, deadline=5.0),  # the Fleet retries stops on its own timers
    )
    transport = _DyingTransport(http, say)
    store = open_store(args.store)
    with ExitStack() as stack:
        stack.callback(store.close)
        stack.callback(transport.close)
        fleet = stack.enter_context(Fleet(transport, policy=policy, store=store))
        fleet.recover()
        sink = _Sink(fleet)
        running = _serve(stack, WebhookReceiver(sink, token=args.token), args.port)
        with out_lock:
            sys.stdout.write(f"{READY} {running.server.server_address[1]}\n")
            sys.stdout.flush()
        ticking = not args.hold
        if ticking:
            stack.enter_context(fleet.run_timers(interval=0.05))
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            command, rest = words[0], words[1:]
            if command == "start":
                count = int(rest[0]) if rest else 1
                tasks = [
                    fleet.start("audio", audio_url=f"rtmp://sim.invalid/live/{n}", provider="assemblyai")
                    for n in range(count)
                ]
                say({"tasks": [_describe(task) for task in tasks]})
            elif command == "stop":
                say({"task": _describe(fleet.stop(rest[0]))})
            elif command == "fail_stops":
                transport.failing.add(rest[0])
                say({"failing": rest[0]})
            elif command == "start_then_die":
                transport.die_after_start = True
                fleet.start("audio", audio_url="rtmp://sim.invalid/live/doomed", provider="assemblyai")
                say({"error": "still alive after start_then_die"})
            elif command == "die_after_callbacks":
                sink.die_after(int(rest[0]))
                say({"armed": int(rest[0])})
            elif command == "stop_all":
                say({"unsettled": [_describe(task) for task in fleet.stop_all()]})
            elif command == "status":
                stats = fleet.stats()
                say(
                    {
                        "tasks": [_describe(task) for task in fleet.tasks()],
                        "parked": stats.parked,
                        "callbacks": dict(stats.callbacks),
                        "orphans": stats.orphans,
                    }
                )
            elif command == "go":
                if not ticking:
                    stack.enter_context(fleet.run_timers(interval=0.05))
                    ticking = True
                say({"timers": True})
            elif command == "quit":
                say({"bye": True})
                break
            else:
                say({"error": f"unknown command {command!r}"})
    return 0


# -- the test's side ---------------------------------------------------------------------------------


class WorkerDied(Exception):
    """The worker's stdout ended: it exited, or was killed, before answering."""


class Worker:
    """One ``fleet_worker`` process: ``Worker.spawn(...)`` returns once it is ready."""

    def __init__(self, process: subprocess.Popen[str], log_path: Path, log: IO[str]) -> None:
        self.process = process
        self.log_path = log_path
        self._log = log
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="fleet-worker-stdout", daemon=True)
        self._reader.start()
        self.port = 0

    @classmethod
    def spawn(
        cls,
        *,
        store: str,
        sim: str,
        api_key: str,
        token: str,
        log_path: Path,
        port: int = 0,
        hold: bool = False,
        ready_within: float = 30.0,
        **options: float,
    ) -> Worker:
        """Start a worker (``options``: park_ttl=..., uncertain_ttl=..., final_callback_wait=...,
        stop_concurrency=...) and wait for its ``ready`` line."""
        # --name=value: a value may begin with "-" (a token from secrets.token_urlsafe may).
        argv = [sys.executable, "-m", "tests.fleet_worker", f"--store={store}", f"--sim={sim}"]
        argv += [f"--api-key={api_key}", f"--token={token}", f"--port={port}"]
        argv += ["--hold"] if hold else []
        for name, value in options.items():
            argv.append(f"--{name.replace('_', '-')}={value}")
        log = log_path.open("a")
        try:
            process = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
            )
        except BaseException:
            log.close()
            raise
        worker = cls(process, log_path, log)
        try:
            line = worker._line(ready_within)
            word, _, port_text = line.partition(" ")
            if word != READY:
                raise AssertionError(f"the worker said {line!r} instead of {READY!r}")
            worker.port = int(port_text)
        except BaseException:
            worker.close()
            raise
        return worker

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, line: str) -> None:
        """Send a command without waiting for its answer (the worker may die on it)."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise WorkerDied(f"the worker is gone; it could not be sent {line!r}") from None

    def answer(self, timeout: float = 30.0) -> dict[str, Any]:
        """The next JSON line the worker writes."""
        answer: dict[str, Any] = json.loads(self._line(timeout))
        return answer

    def command(self, line: str, timeout: float = 30.0) -> dict[str, Any]:
        self.send(line)
        return self.answer(timeout)

    def kill(self) -> None:
        """SIGKILL the worker, if it still runs (``Popen.kill`` checks, so no other process is hit)."""
        self.process.kill()

    def wait_dead(self, timeout: float = 15.0) -> int:
        return self.process.wait(timeout)

    def quit(self, timeout: float = 30.0) -> None:
        """Ask the worker to close down, and check it exits 0."""
        assert self.command("quit", timeout) == {"bye": True}
        code = self.process.wait(timeout)
        assert code == 0, f"the worker exited {code}; its log:\n{self.log_text()}"
        self.close()

    def close(self) -> None:
        """Kill the worker if it still runs, reap it, and close its pipes and log."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(15)
        self._reader.join(15)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with suppress(BrokenPipeError):
                    stream.close()
        self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _line(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"the worker said nothing for {timeout} s; its log:\n{self.log_text()}"
            ) from None
        if line is None:
            self._lines.put(None)  # every later read sees the end too
            raise WorkerDied(f"the worker exited ({self.process.poll()}); its log:\n{self.log_text()}")
        return line


if __name__ == "__main__":
    sys.exit(main())
