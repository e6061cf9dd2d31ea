"""AsyncFleet in an asyncio application: how late its event loop runs, and whether threads or an
async HTTP client should carry its requests.

    python -m bench.run --only aio

Loop lag: the scenario of tests/aio/test_aio_uvicorn.py (tests/aio/under_uvicorn.py), ``runs``
times: uvicorn serving the receiver in the application's loop; the simulator's HTTP face with the
``default`` faults posting every callback to it; ``streams`` streams started at once with an
AsyncFleet on SQLite, streamed, stopped with ``stop_all`` and settled. A task sleeps 2 ms again
and again and records how late each sleep ends. The reference: the same monitor on an idle loop
for as long, in the same process (what the machine alone does to a loop). Beside it, the same
application with the simulator in a process of its own (``streamlife sim serve``), as memories.ai
would be: what is left is the application's own threads and the machine's scheduling.

Requests in threads or on the loop: ``streams`` starts against the simulator's HTTP face, at once,
through ``AsyncFleet.start`` (``HttpTransport`` in the requests lane's threads, each start journaled
in a MemoryStore) and, as the reference, bare start requests from an ``httpx.AsyncClient`` on the
loop (no Fleet, no journal: the floor an async transport could reach). The reference needs httpx,
which streamlife does not depend on: without it, it is not measured.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from streamlife import Policy
from streamlife.aio import AsyncFleet
from streamlife.sim import SimulatedService, serve_http
from streamlife.transport.http import HttpTransport
from streamlife.webhook import WebhookReceiver
from tests.aio.under_uvicorn import KEY, POLICY, TOKEN, URL, Lag, monitor, streams_under_uvicorn, uvicorn_on

from .common import Figure, Goal, Section, Table, say

LAG_GOAL = 0.005  # seconds: the loop's 99th-percentile lag, the "a few milliseconds"
REFS = [("idle", "idle loop"), ("httpx", "httpx on the loop")]


@dataclass(frozen=True)
class AioConfig:
    streams: int
    runs: int


FULL = AioConfig(streams=200, runs=3)
QUICK = AioConfig(streams=200, runs=1)


async def _idle(seconds: float) -> Lag:
    lag, running = Lag(), asyncio.Event()
    running.set()
    watching = asyncio.create_task(monitor(lag, running))
    await asyncio.sleep(seconds)
    running.clear()
    await watching
    return lag


async def _sim_elsewhere(streams: int, seed: int) -> Lag:
    """The loop's lag with the simulator in a process of its own (``streamlife sim serve``, faults
    ``default``, 20 times real time) posting to uvicorn in this loop: start, stream, stop_all."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    webhook = f"http://127.0.0.1:{sock.getsockname()[1]}/hooks/{TOKEN}"
    command = [sys.executable, "-m", "streamlife", "sim", "serve", "--webhook", webhook, "--port", "0"]
    command += ["--faults", "default", "--seed", str(seed), "--speed", "20"]
    command += ["--max-streams", str(streams * 2)]
    env = dict(os.environ, MEMORIES_API_KEY=KEY)
    quiet = subprocess.DEVNULL
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=quiet, text=True, env=env) as sim:
        try:
            assert sim.stdout is not None
            base_url = sim.stdout.readline().split()[-1]  # its first line ends with its API URL
            lag, running = Lag(), asyncio.Event()
            transport = HttpTransport(KEY, base_url=base_url)
            fleet = AsyncFleet(transport, policy=POLICY)
            async with fleet, uvicorn_on(WebhookReceiver(fleet, token=TOKEN).asgi, sock):
                running.set()
                watching = asyncio.create_task(monitor(lag, running))
                await asyncio.gather(*(fleet.start("audio", audio_url=URL, provider="assemblyai")
                                       for _ in range(streams)))  # fmt: skip
                await asyncio.sleep(1.5)  # 30 s of streaming at 20 times real time
                await fleet.stop_all(wait=10.0)
                running.clear()
                await watching
            transport.close()
        finally:
            sim.terminate()
    return lag


async def _starts_in_threads(streams: int) -> float:
    service = SimulatedService(api_key=KEY)
    with serve_http(service) as face:
        transport = HttpTransport(KEY, base_url=face.base_url)
        async with AsyncFleet(transport, policy=Policy(seed=0)) as fleet:
            began = time.perf_counter()
            await asyncio.gather(
                *(fleet.start("audio", audio_url=URL, provider="assemblyai") for _ in range(streams))
            )
            took = time.perf_counter() - began
        transport.close()
    return streams / took


async def _starts_with_httpx(streams: int) -> float | None:
    try:
        import httpx
    except ImportError:
        return None
    service = SimulatedService(api_key=KEY)
    body = {"audio_url": URL, "provider": "assemblyai"}
    with serve_http(service) as face:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(limits=limits, headers={"Authorization": KEY}) as client:
            began = time.perf_counter()
            answers = await asyncio.gather(
                *(client.post(f"{face.base_url}/audio-stream/start", json=body) for _ in range(streams))
            )
            took = time.perf_counter() - began
    assert all(answer.status_code == 200 for answer in answers)
    return streams / took


def run(config: AioConfig) -> Section:
    section = Section(
        "aio",
        "AsyncFleet under uvicorn: the event loop's lag, and requests in threads",
        f"Loop lag: tests/aio/under_uvicorn.py, {config.runs} run(s): {config.streams} streams started at "
        "once with an AsyncFleet on SQLite, the simulator's HTTP face (faults: default) posting every "
        "callback to uvicorn in the same loop, the streams stopped with stop_all and settled; a 2 ms "
        "sleep, again and again, records how late the loop runs. Reference: the same monitor on an idle "
        f"loop. Starts: {config.streams} at once through AsyncFleet.start (HttpTransport in 16 threads, "
        "journaled in memory) against bare httpx.AsyncClient start requests on the loop (16 "
        "connections, no Fleet). The simulator shares the process, its threads the interpreter lock.",
        REFS,
    )
    samples: list[float] = []
    seconds = 0.0
    for n in range(config.runs):
        say(f"aio: run {n + 1} of {config.runs}, {config.streams} streams")
        with tempfile.TemporaryDirectory(prefix="streamlife-bench-aio-") as directory:
            began = time.perf_counter()
            result = asyncio.run(streams_under_uvicorn(config.streams, seed=n, directory=Path(directory)))
            seconds += time.perf_counter() - began
        if not result.settled or result.on_the_loop:
            section.notes.append(
                f"WARNING: run {n + 1}: settled {result.settled}, on the loop {result.on_the_loop}"
            )
        samples += result.lag.samples
    lag = Lag(samples)
    elsewhere = Lag()
    for n in range(config.runs):
        say(f"aio: run {n + 1} of {config.runs}, the simulator in a process of its own")
        elsewhere.samples += asyncio.run(_sim_elsewhere(config.streams, seed=n)).samples
    say("aio: idle loop")
    idle = asyncio.run(_idle(min(seconds, 20.0)))
    p99, idle_p99 = lag.percentile(0.99), idle.percentile(0.99)
    section.add(
        Figure("aio.lag.p99_ms", "loop lag, 99th percentile", "ms", p99 * 1e3, {"idle": idle_p99 * 1e3})
    )
    section.add(
        Figure("aio.lag.p999_ms", "loop lag, 99.9th percentile", "ms", lag.percentile(0.999) * 1e3,
               {"idle": idle.percentile(0.999) * 1e3})
    )  # fmt: skip
    section.add(Figure("aio.lag.max_ms", "loop lag, most", "ms", lag.most * 1e3, {"idle": idle.most * 1e3}))
    say("aio: starts in threads, and with httpx on the loop")
    threads = asyncio.run(_starts_in_threads(config.streams))
    floor = asyncio.run(_starts_with_httpx(config.streams))
    section.add(Figure("aio.starts_per_second", "starts/s", "/s", threads, {"httpx": floor}, better="higher"))
    section.tables.append(
        Table(
            "the loop's lag over every run",
            ["the simulator", "samples", "p50 ms", "p99 ms", "p99.9 ms", "max ms"],
            [[where, f"{len(run.samples):,}", f"{run.percentile(0.5) * 1e3:.2f}",
              f"{run.percentile(0.99) * 1e3:.2f}", f"{run.percentile(0.999) * 1e3:.2f}",
              f"{run.most * 1e3:.2f}"]
             for where, run in (("in this process", lag), ("in a process of its own", elsewhere))],
        )
    )  # fmt: skip
    section.goals.append(
        Goal("aio.lag", f"the loop's lag ≤ {LAG_GOAL * 1e3:g} ms at the 99th percentile",
             f"{p99 * 1e3:.2f} ms", p99 <= LAG_GOAL)
    )  # fmt: skip
    return section
