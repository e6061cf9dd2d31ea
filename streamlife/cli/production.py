"""``serve --server uvicorn``: the receiver under uvicorn (httptools, uvloop), in this process or in
``--workers N`` processes that share one listening socket and one store.

Why uvicorn: measured on loopback with a null application, uvicorn with httptools answers about 15
times what the standard library's server does, and steadily; granian as much, unsteadily; gunicorn's
sync workers 3 times (bench/RESULTS.md has this project's own figures). It has no timeout for a
request's head or body, though: put a proxy in front (the README's *Deploying*).

One process: uvicorn runs on a thread of its own, while the main thread waits for SIGTERM or SIGINT
as ``serve`` always has. On the signal, the caller stops what it must while callbacks still come
(a ``memory:`` store's tasks), then leaves the block: uvicorn stops accepting, lets each request in
flight finish (``--graceful-timeout`` at most) and closes idle keep-alive connections; only then
are the timers, the Fleet and the store closed. Tasks stay in a durable store for the next process.

Several processes: this process (the supervisor) binds the socket and starts ``--workers`` worker
processes (spawned, not forked: a fork of a process with threads and a store connection is unsafe).
Each opens its own store connection and Fleet, takes back its share of the store's unfinished
tasks (all of them for worker 0 on SQLite, none for the others there), runs its timers and serves
the shared socket as above; the kernel hands each new connection to one of them.
A worker that dies is started again, unless it died within moments of its start (then serve stops
the others and exits 1: a second try would fail the same way). On SIGTERM or SIGINT the supervisor
closes its copy of the socket and passes SIGTERM on to every worker, which shuts down gracefully,
and waits for them.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, Final

from .exits import EXIT_OK, Problem, Usage

if TYPE_CHECKING:
    import uvicorn

INSTALL_HINT: Final = "pip install 'streamlife[server]'"
DEFAULT_KEEP_ALIVE: Final = 5  # seconds an idle keep-alive connection stays open (uvicorn's default)
DEFAULT_GRACEFUL: Final = 30  # seconds the requests in flight get to finish on SIGTERM
ORPHAN_CHECK: Final = 0.5  # seconds between two looks of a worker at whether its supervisor lives
RESTART_PAUSE: Final = 1.0  # seconds before a worker that died is started again
STEADY_AFTER: Final = 10.0  # seconds: a worker that dies sooner after its start is not started again
_STARTED_WITHIN: Final = 30.0  # seconds uvicorn has to start listening
_MULTIPROCESS_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# Container objects allocated, less those freed, before a young collection (CPython's default is
# 700). Each request allocates hundreds that die with it, and a collection that comes while a turn's
# requests are in flight walks them all: collecting less often costs less per request, and a
# serving process may choose its own (bench/RESULTS.md).
SERVING_GC_THRESHOLD: Final = 10_000


@dataclass(frozen=True)
class UvicornSettings:
    keep_alive: int  # seconds
    limit_concurrency: int | None  # connections (idle ones too) or requests at which uvicorn answers 503
    graceful: int  # seconds


def check_installed() -> None:
    if importlib.util.find_spec("uvicorn") is None or importlib.util.find_spec("httptools") is None:
        raise Usage(f"--server uvicorn needs uvicorn and httptools: {INSTALL_HINT}")


def raise_descriptor_limit() -> int:
    """Raise this process's soft limit on open descriptors to its hard limit (each connection holds
    one; the default soft limit, often 1,024, is the first thing a burst of connections meets).
    Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or bad usage for an address that cannot be listened on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets it knows are TCP, and an
    # accepted socket takes its listener's proto. Without it, each answer on a kept-alive
    # connection waits for the client's delayed ACK under a loop other than uvloop.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if os.name == "posix":  # (on Windows SO_REUSEADDR lets another process take the port)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's own backlog; a burst of callbacks must not meet resets
    except OSError as error:
        sock.close()
        raise Usage(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass
class RunningUvicorn:
    server: uvicorn.Server
    thread: threading.Thread
    url: str


@contextmanager
def serving(app: Any, sock: socket.socket, settings: UvicornSettings) -> Iterator[RunningUvicorn]:
    """Run ``app`` under uvicorn on ``sock``, on a thread, until the block ends; then stop accepting,
    let the requests in flight finish (``settings.graceful`` seconds at most) and return."""
    import uvicorn

    config = uvicorn.Config(
        app,
        http="httptools",
        loop="uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio",
        lifespan="off",  # the Fleet's life is this block's, not the server's
        access_log=False,  # it would print the path, where the token rides: _ops logs its own
        log_config=None,  # the application (this command line) decides what is logged, not uvicorn
        timeout_keep_alive=settings.keep_alive,
        limit_concurrency=settings.limit_concurrency,
        timeout_graceful_shutdown=settings.graceful,
        server_header=False,
        date_header=True,
    )
    server = uvicorn.Server(config)
    url = url_of(sock)
    with _fewer_young_collections():
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="streamlife-uvicorn", daemon=True
        )
        thread.start()
        give_up_at = time.monotonic() + _STARTED_WITHIN
        while not server.started and thread.is_alive() and time.monotonic() < give_up_at:
            time.sleep(0.01)
        if not server.started:
            server.should_exit = True
            thread.join()
            raise Problem("the uvicorn server did not start")
        try:
            yield RunningUvicorn(server, thread, url)
        finally:
            server.should_exit = True
            thread.join()


@contextmanager
def _fewer_young_collections() -> Iterator[None]:
    """The collector's young-generation threshold at least ``SERVING_GC_THRESHOLD`` while the
    block runs (a process setting: this one serves), and as it was once it ends."""
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], SERVING_GC_THRESHOLD), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


# -- several processes -------------------------------------------------------------------------------
Worker = Callable[[Any, socket.socket, int], int]


def supervise(
    worker: Worker, settings: Any, sock: socket.socket, count: int, stopping: threading.Event
) -> int:
    """Run ``worker(settings, sock, index)`` in ``count`` spawned processes until ``stopping`` is set;
    start again any that dies meanwhile; then SIGTERM them all and wait. 0 if every worker ended
    well."""
    context = multiprocessing.get_context("spawn")
    metrics_dir = tempfile.mkdtemp(prefix="streamlife-metrics-")
    before = os.environ.get(_MULTIPROCESS_ENV)
    os.environ[_MULTIPROCESS_ENV] = metrics_dir  # the spawned workers inherit it
    workers: list[BaseProcess] = []
    try:

        def spawn(index: int) -> BaseProcess:
            process = context.Process(
                target=_worker_main,
                args=(worker, settings, sock, index),
                name=f"streamlife-serve-worker-{index}",
            )
            process.start()
            return process

        workers = [spawn(index) for index in range(count)]
        started = [time.monotonic()] * count
        failed: str | None = None
        while failed is None and not stopping.wait(0.2):
            for index, process in enumerate(workers):
                if process.is_alive() or stopping.is_set():
                    continue
                ended = f"worker {index} (pid {process.pid}) ended with {process.exitcode}"
                if time.monotonic() - started[index] < STEADY_AFTER:
                    # Within moments of its start: a store that cannot be opened, say. Starting it
                    # again would fail the same way, for ever.
                    failed = f"{ended} while starting; stopping the others"
                    break
                print(f"streamlife serve: {ended}; starting it again", file=sys.stderr, flush=True)
                _forget(metrics_dir, process.pid)
                time.sleep(RESTART_PAUSE)
                workers[index], started[index] = spawn(index), time.monotonic()
        sock.close()  # ours: the workers' copies go on until each shuts down
        for process in workers:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        codes = []
        for process in workers:
            process.join()
            codes.append(process.exitcode)
        # Killed by our SIGTERM: a worker still starting, before its handlers were set; it served
        # nothing yet.
        if failed is not None:
            raise Problem(failed)
        if any(code not in (EXIT_OK, -signal.SIGTERM) for code in codes):
            raise Problem(f"a worker ended badly: exit codes {codes}")
        return EXIT_OK
    finally:
        for process in workers:
            if process.is_alive():
                process.kill()
                process.join()
        if before is None:
            os.environ.pop(_MULTIPROCESS_ENV, None)
        else:
            os.environ[_MULTIPROCESS_ENV] = before
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _forget(metrics_dir: str, pid: int | None) -> None:
    """Let go of a dead worker's live gauges (its counters stay: they never go down)."""
    if pid is None or importlib.util.find_spec("prometheus_client") is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]


def _worker_main(worker: Worker, settings: Any, sock: socket.socket, index: int) -> None:
    # A Ctrl-C reaches the whole process group: the supervisor passes SIGTERM on, and the worker's
    # own handlers (serve's) are set before its server starts. Until then, the default would end it
    # with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _orphaned_ends(os.getppid())
    sys.exit(worker(settings, sock, index))


def _orphaned_ends(parent: int) -> None:
    """SIGTERM this worker, which then shuts down gracefully, once its supervisor is gone (killed
    with SIGKILL, say): nobody would stop it otherwise, and it would hold the port."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="streamlife-orphan-watch", daemon=True).start()
