"""The servers ``bench.server_ingest`` measures that ``streamlife serve`` cannot be: run as
``python -m bench.server_target KIND --port-file F [...]`` until SIGTERM.

* ``memory``: a Fleet of ``--tasks`` live tasks on the memory store (made here: a memory store is
  one process's alone), behind the very application and server ``serve --server uvicorn`` runs;
  its task_ids written to ``--ids-file``.
* ``null``: the same server, ``--workers`` processes sharing its socket as ``serve --workers`` does,
  with an ASGI application that reads the request and answers 200 at once: the server alone.
* ``spin``: the null application, one worker, that first keeps the CPU busy for ``--spin-us``
  microseconds (the in-process cost of a callback): what the server costs around an application
  as slow as the Fleet, whatever that application does.
* ``work``: the null application, one worker, that first does Python work of the Fleet's kind
  (none of its code) as costly in-process as ``--spin-us``: each body through the dict-FSM floor
  (``bench.references.DictIngest``) over the tasks ``--ids-file`` names, in as many copies as that
  takes (counted here, at the start). A busy loop touches no memory; this work, like the Fleet's,
  does, and loses as much to what the server does between two requests. The in-process µs the copies
  measured is written to ``--work-file``.

The port listened on is written to ``--port-file`` once the server accepts.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from streamlife import Policy
from streamlife._timer_loop import TimerLoop
from streamlife.aio import AsyncFleet
from streamlife.cli import production
from streamlife.cli.production import UvicornSettings
from streamlife.cli.running import until_signalled
from streamlife.cli.serve import _ops_application
from streamlife.webhook import WebhookReceiver

from .common import CallbackStream, configure_logging, live_fleet
from .references import DictIngest

TOKEN = "bench-token-0123456789abcdef"
SETTINGS = UvicornSettings(keep_alive=5, limit_concurrency=None, graceful=5)
_ANSWER = b'{"outcome": "applied"}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_ANSWER)).encode())]


async def null_app(
    scope: Mapping[str, Any],
    receive: Callable[[], Awaitable[Mapping[str, Any]]],
    send: Callable[[Mapping[str, Any]], Awaitable[None]],
) -> None:
    """Reads the request, answers 200: what any application costs the server at the least."""
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _ANSWER})


def spinning_app(microseconds: float) -> Callable[..., Awaitable[None]]:
    """``null_app``, after ``microseconds`` of busy work per request."""
    seconds = microseconds / 1e6

    async def app(
        scope: Mapping[str, Any],
        receive: Callable[[], Awaitable[Mapping[str, Any]]],
        send: Callable[[Mapping[str, Any]], Awaitable[None]],
    ) -> None:
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            pass
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": _ANSWER})

    return app


WORK_ROUNDS = 3  # timed passes of the work's in-process cost, the best kept, per copy count tried
WORK_BODIES = 2_000  # callbacks in a pass
WORK_FRESH_EVERY = 20_000  # callbacks after which each copy starts afresh: its memory stays flat


def working_app(microseconds: float, task_ids: Sequence[str]) -> tuple[Callable[..., Awaitable[None]], float]:
    """``null_app``, after the dict-FSM floor's work on each request's body in as many copies as
    cost ``microseconds`` in-process; and the µs they cost, measured."""
    # Above any segment index wrk's bodies reach in a run: those never repeat one measured here.
    stream = CallbackStream(task_ids, first_index=10**7)
    copies: list[DictIngest] = []
    took: list[float] = [0.0]  # µs with as many copies as the index says
    while took[-1] < microseconds and len(copies) < 100:
        copies.append(DictIngest(task_ids))
        for body in stream.fresh(WORK_BODIES // 4):  # warm-up
            for copy in copies:
                copy.handle(body)
        best = float("inf")
        for _ in range(WORK_ROUNDS):
            bodies = stream.fresh(WORK_BODIES)
            started = time.perf_counter()
            for body in bodies:
                for copy in copies:
                    copy.handle(body)
            best = min(best, (time.perf_counter() - started) / len(bodies) * 1e6)
        took.append(best)
    if len(copies) > 1 and microseconds - took[-2] < took[-1] - microseconds:
        copies.pop()  # one copy fewer comes nearer
    copies[:] = [DictIngest(task_ids) for _ in copies]  # afresh, the calibration's segments gone
    handled = 0

    async def app(
        scope: Mapping[str, Any],
        receive: Callable[[], Awaitable[Mapping[str, Any]]],
        send: Callable[[Mapping[str, Any]], Awaitable[None]],
    ) -> None:
        nonlocal handled
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        for copy in copies:
            copy.handle(body)
        handled += 1
        if handled % WORK_FRESH_EVERY == 0:
            copies[:] = [DictIngest(task_ids) for _ in copies]
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": _ANSWER})

    return app, took[len(copies)]


def _until_stopped(app: Any, sock: socket.socket, port_file: Path | None) -> None:
    stopping = threading.Event()
    with until_signalled(stopping), production.serving(app, sock, SETTINGS):
        if port_file is not None:
            port_file.write_text(str(sock.getsockname()[1]))
        stopping.wait()


def null_worker(settings: Any, sock: socket.socket, index: int) -> int:
    configure_logging()
    _until_stopped(null_app, sock, None)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["memory", "null", "spin", "work"])
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--ids-file", type=Path)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--spin-us", type=float, default=0.0)
    parser.add_argument("--work-file", type=Path)
    args = parser.parse_args()
    configure_logging()
    sock = production.bind("127.0.0.1", 0)
    production.raise_descriptor_limit()
    if args.kind == "spin":
        _until_stopped(spinning_app(args.spin_us), sock, args.port_file)
        return 0
    if args.kind == "work":
        app, took = working_app(args.spin_us, args.ids_file.read_text().split())
        args.work_file.write_text(str(took))
        _until_stopped(app, sock, args.port_file)
        return 0
    if args.kind == "null":
        if args.workers == 1:
            _until_stopped(null_app, sock, args.port_file)
            return 0
        stopping = threading.Event()
        with until_signalled(stopping):
            args.port_file.write_text(str(sock.getsockname()[1]))
            return production.supervise(null_worker, None, sock, args.workers, stopping)
    live = live_fleet(args.tasks, policy=Policy())  # serve's: stops sent by the Fleet's workers
    try:
        args.ids_file.write_text("\n".join(live.task_ids))
        store, fleet = live.fleet.store, live.fleet
        with TimerLoop(fleet) as timers:
            front = AsyncFleet.from_fleet(fleet)
            receiver = WebhookReceiver(front, token=TOKEN)  # as serve builds it
            try:
                with _ops_application(receiver, store, timers, fleet) as app:
                    _until_stopped(app, sock, args.port_file)
            finally:
                front.close()
    finally:
        live.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
