"""An asyncio application under uvicorn running many streams with an AsyncFleet, and how late its
event loop ran meanwhile: what tests/aio/test_aio_uvicorn.py asserts and bench/aio_lag.py reports.

Everything is real but the service: uvicorn serves ``WebhookReceiver(fleet).asgi`` on a loopback
socket, in the application's own loop; the simulator's HTTP face (``serve_http``), with seeded
faults, answers the AsyncFleet's ``HttpTransport`` and posts every callback to uvicorn. The
simulator's clock runs ``SPEED`` times faster than the wall clock (a thread moves it, as ``serve
--sim`` does), and the Fleet shares it, so minutes of streaming take seconds. A monitor task
sleeps ``BEAT`` again and again and records how late each sleep ended: the loop's lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import uvicorn

from streamlife import ManualClock, Policy
from streamlife.aio import AsyncFleet
from streamlife.sim import Faults, SimulatedService, serve_http
from streamlife.sim.http import WebhookPoster
from streamlife.store import MemoryStore, SqliteStore, Store
from streamlife.transport import Transport
from streamlife.transport.http import HttpTransport
from streamlife.webhook import WebhookReceiver

TOKEN = "aio-uvicorn-token-0123456789"
KEY = "sk-mai-aio-test"
URL = "rtmp://sim.invalid/live"
BEAT = 0.002  # seconds the monitor sleeps between two looks at the clock
SPEED = 20.0  # virtual seconds per real second
STEP = 0.01  # real seconds between two moves of the simulator's clock
POLICY = Policy(  # the test rig's timeouts (tests/conftest.py), stops from the Fleet's workers
    park_ttl=8,
    uncertain_ttl=20,
    final_callback_wait=5,
    silence_after=12,
    stop_retry_base=1.0,
    stop_retry_cap=8,
    seed=0,
    # Every ended task stays in memory, for the test to count them all: a run takes some 300 virtual
    # seconds, longer on a slow machine, and keep_terminal's default would let the first to end go.
    keep_terminal=None,
)
SETTLE_WITHIN = 240.0  # real seconds: settling takes a fraction of it unless something is lost


@dataclass
class Lag:
    """How late each of the monitor's sleeps ended, in seconds."""

    samples: list[float] = field(default_factory=list)

    @property
    def most(self) -> float:
        return max(self.samples, default=0.0)

    def percentile(self, share: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


class OffTheLoop:
    """``inner`` (a store or a transport), noting each of its methods called on the loop's thread:
    a call that may block, where nothing may."""

    def __init__(self, inner: object, name: str, loop_thread: int, found: list[str]) -> None:
        self._inner, self._name, self._loop_thread, self._found = inner, name, loop_thread, found

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._inner, attribute)
        if not callable(value):
            return value

        def watched(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == self._loop_thread:
                self._found.append(f"{self._name}.{attribute}")
            return value(*args, **kwargs)

        return watched


@dataclass
class Run:
    fleet: AsyncFleet
    service: SimulatedService
    lag: Lag
    streams: int
    callbacks: int  # callbacks uvicorn's receiver acknowledged
    settled: bool
    on_the_loop: list[str]  # store and transport calls made on the loop's thread


async def monitor(lag: Lag, running: asyncio.Event) -> None:
    while running.is_set():
        began = time.perf_counter()
        await asyncio.sleep(BEAT)
        lag.samples.append(max(0.0, time.perf_counter() - began - BEAT))


@contextlib.asynccontextmanager
async def uvicorn_serving(app: Any) -> AsyncIterator[int]:
    """uvicorn serving ``app`` on a loopback socket, in this loop; yields its port."""
    # Made with its protocol named: asyncio turns Nagle's algorithm off only on connections whose
    # listening socket says it is TCP (socket.create_server's says 0), and with it on, an answer
    # sent in two writes waits for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    async with uvicorn_on(app, sock):
        yield int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def uvicorn_on(app: Any, sock: socket.socket) -> AsyncIterator[None]:
    """uvicorn serving ``app`` on the listening socket ``sock``, in this loop; closes it after."""
    config = uvicorn.Config(
        app, http="httptools", lifespan="off", access_log=False, log_config=None, timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await serving
        sock.close()


def _moving(service: SimulatedService, stop: threading.Event) -> threading.Thread:
    """A thread that moves the simulator's clock ``SPEED`` times as fast as the wall clock."""

    def move() -> None:
        last = time.monotonic()
        while not stop.wait(STEP):
            now = time.monotonic()
            service.run_until(service.clock.now() + (now - last) * SPEED)
            last = now

    thread = threading.Thread(target=move, name="test-sim-clock", daemon=True)
    thread.start()
    return thread


async def _until(condition: Callable[[], bool], within: float) -> bool:
    give_up_at = time.monotonic() + within
    while not condition():
        if time.monotonic() > give_up_at:
            return False
        await asyncio.sleep(0.05)
    return True


async def streams_under_uvicorn(streams: int, seed: int, directory: Path | None = None) -> Run:
    """Start ``streams`` streams with an AsyncFleet (on SQLite in ``directory``, else in memory),
    let them stream for a while, stop them all, and settle: every task terminal, nothing parked,
    nothing billing (or ``SETTLE_WITHIN`` real seconds gone: ``settled`` says which)."""
    clock = ManualClock(1_700_000_000.0)
    service = SimulatedService(clock=clock, faults=Faults.default(seed), api_key=KEY)
    store: Store = MemoryStore() if directory is None else SqliteStore(str(directory / "tasks.db"))
    lag, running, moving = Lag(), asyncio.Event(), threading.Event()
    found: list[str] = []
    watched = cast(Store, OffTheLoop(store, "store", threading.get_ident(), found))
    running.set()
    watching = asyncio.create_task(monitor(lag, running))
    try:
        with serve_http(service) as face:
            transport = HttpTransport(KEY, base_url=face.base_url)
            sends = cast(Transport, OffTheLoop(transport, "transport", threading.get_ident(), found))
            async with AsyncFleet(sends, clock=clock, policy=POLICY, store=watched) as fleet:
                receiver = WebhookReceiver(fleet, token=TOKEN)
                async with uvicorn_serving(receiver.asgi) as port, fleet.run_timers(interval=0.02):
                    poster = WebhookPoster(f"http://127.0.0.1:{port}/hooks/{TOKEN}")
                    service.on_callback(poster)
                    mover = _moving(service, moving)
                    try:
                        starts = [
                            fleet.start("audio", audio_url=URL, provider="assemblyai") for _ in range(streams)
                        ]
                        await asyncio.gather(*starts)
                        streamed_until = clock.now() + 30.0
                        await _until(lambda: clock.now() >= streamed_until, SETTLE_WITHIN)
                        await fleet.stop_all(wait=5.0)
                        settled = await _until(lambda: _settled(fleet, service), SETTLE_WITHIN)
                    finally:
                        moving.set()
                        await asyncio.to_thread(mover.join)
                        service.off_callback(poster)
                        poster.close()
                running.clear()  # what follows is the test's teardown, on the loop: not the app's
                transport.close()
    finally:
        running.clear()
        await watching
        store.close()
    return Run(fleet, service, lag, streams, len(poster.delivered), settled, found)


def _settled(fleet: AsyncFleet, service: SimulatedService) -> bool:
    stats = fleet.stats()
    return not stats.parked and all(task.terminal for task in fleet.tasks()) and not service.billing()
