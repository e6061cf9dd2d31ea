"""Ingest over HTTP: the webhook receiver on loopback, callbacks POSTed from another process.

``WebhookReceiver(fleet, token=...)`` runs in ``serve_webhook`` (the server that ships with
streamlife: one thread reads every connection, a pool of workers applies) in this process, in front
of a Fleet of live tasks on the memory store. A load generator in a separate process
(``multiprocessing``, spawned) POSTs pre-built requests from a few threads, each request on its own
connection: the server closes each connection after its answer, so keep-alive is not possible
against it. It stops after a bounded count or time. Reported: callbacks/s, and latency (connect
to the last byte of the answer) at p50 and p99, under load and one at a time.

Reference: the same receiver and server handing the callbacks to a sink that does nothing, so the
ratio shows what the Fleet adds to the cost of the HTTP server itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from streamlife import Outcome
from streamlife.webhook import CallbackSink, WebhookReceiver, serve_webhook

from .common import CallbackStream, Figure, Section, gc_settled, live_fleet, say

TOKEN = "bench-token-0123456789abcdef"
REFS = [("null", "null sink")]


@dataclass(frozen=True)
class HttpConfig:
    tasks: int  # live tasks behind the receiver
    loaded: tuple[int, float]  # (most requests, most seconds) of the run under load
    unloaded: tuple[int, float]  # the same, one request at a time
    concurrency: int  # client threads under load
    warmup: int
    repeat: int  # runs of each load against each sink


FULL = HttpConfig(
    tasks=10_000, loaded=(6_000, 2.5), unloaded=(1_500, 1.0), concurrency=8, warmup=200, repeat=3
)
QUICK = HttpConfig(tasks=1_000, loaded=(2_000, 1.0), unloaded=(500, 0.5), concurrency=8, warmup=100, repeat=2)


class NullSink:
    """Takes every callback and does nothing: the receiver and the server, alone."""

    def handle_callback(self, payload: bytes) -> Outcome:
        return Outcome.APPLIED


# -- the load generator (runs in the child process) ---------------------------------------------------
@dataclass(frozen=True)
class Load:
    name: str  # "loaded.fleet", "unloaded.null", ...
    port: int
    first_index: int  # segment index the bodies start at (each run to the Fleet sends new segments)
    count: int
    seconds: float
    concurrency: int
    warmup: int


@dataclass(frozen=True)
class Schedule:
    host: str
    task_ids: Sequence[str]
    loads: Sequence[Load]  # sent one after the other


def _request(host: str, port: int, body: bytes) -> bytes:
    head = (
        f"POST /callbacks/{TOKEN} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _post(address: tuple[str, int], request: bytes) -> bool:
    """One request on its own connection; True for a 200 answer."""
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    answer = b"".join(chunks)
    return answer[9:12] == b"200"


def generate(schedule: Schedule, results: Connection) -> None:
    """Entry point of the child process: send each load in turn, send back their summaries."""
    try:
        results.send([_generate(schedule, load) for load in schedule.loads])
    except BaseException as error:
        results.send({"error": repr(error)})
        raise
    finally:
        results.close()


def _generate(schedule: Schedule, load: Load) -> dict[str, Any]:
    address = (schedule.host, load.port)
    stream = CallbackStream(schedule.task_ids, first_index=load.first_index)
    requests = [_request(schedule.host, load.port, body) for body in stream.fresh(load.warmup + load.count)]
    for request in requests[: load.warmup]:
        _post(address, request)
    queue = iter(requests[load.warmup :])
    lock = threading.Lock()
    latencies: list[float] = []
    failures = [0]
    deadline = time.perf_counter() + load.seconds

    def client() -> None:
        mine = []
        while time.perf_counter() < deadline:
            with lock:
                request = next(queue, None)
            if request is None:
                break
            started = time.perf_counter()
            try:
                ok = _post(address, request)
            except OSError:
                ok = False
            mine.append(time.perf_counter() - started)
            if not ok:
                with lock:
                    failures[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(load.concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(int(p * len(latencies)), len(latencies) - 1)] if latencies else float("nan")

    return {
        "name": load.name,
        "sent": len(latencies),
        "failed": failures[0],
        "seconds": elapsed,
        "per_second": (len(latencies) - failures[0]) / elapsed,
        "p50_ms": percentile(0.50) * 1e3,
        "p90_ms": percentile(0.90) * 1e3,
        "p99_ms": percentile(0.99) * 1e3,
        "max_ms": (latencies[-1] if latencies else float("nan")) * 1e3,
        "concurrency": load.concurrency,
    }


# -- the server side (this process) -----------------------------------------------------------------
def _send(
    sinks: dict[str, CallbackSink], task_ids: Sequence[str], plan: Sequence[Load]
) -> list[dict[str, Any]]:
    """Serve each sink behind its own receiver on loopback while a child process sends the plan
    (each ``Load.name`` ends with the sink it goes to; its port is filled in here)."""
    context = multiprocessing.get_context("spawn")  # a clean child: not a fork of a big heap
    with contextlib.ExitStack() as servers:
        ports = {}
        host = ""
        for name, sink in sinks.items():
            running = servers.enter_context(serve_webhook(WebhookReceiver(sink, token=TOKEN)))
            address = running.server.server_address
            host, ports[name] = str(address[0]), int(address[1])
        loads = [dataclasses.replace(load, port=ports[load.name.rpartition(".")[2]]) for load in plan]
        receive, send = context.Pipe(duplex=False)
        child = context.Process(
            target=generate,
            args=(Schedule(host, list(task_ids), loads), send),
            name="streamlife-bench-load",
            daemon=True,
        )
        child.start()
        send.close()
        try:
            if not receive.poll(sum(load.seconds for load in loads) + 120):
                raise RuntimeError("the load generator did not answer in time")
            summaries: Any = receive.recv()
        finally:
            receive.close()
            child.join(10)
            if child.is_alive():
                child.terminate()
                child.join()
    if isinstance(summaries, dict):
        raise RuntimeError(f"the load generator failed: {summaries.get('error')}")
    return list(summaries)


def _best(summaries: Sequence[dict[str, Any]], name: str) -> dict[str, Any]:
    """The run of ``name`` with the highest rate: the one least disturbed by the rest of the machine."""
    return max((run for run in summaries if run["name"] == name), key=lambda run: float(run["per_second"]))


def run(config: HttpConfig) -> Section:
    section = Section(
        "http",
        "Ingest over HTTP: WebhookReceiver in serve_webhook, on loopback",
        f"{config.tasks:,} live tasks on the memory store behind the receiver; a spawned process POSTs "
        "new final-segment callbacks, one connection each (serve_webhook closes each after its answer). "
        f"Under load: {config.concurrency} client threads, at most {config.loaded[0]:,} requests or "
        f"{config.loaded[1]:g} s a run; one at a time: at most {config.unloaded[0]:,} or "
        f"{config.unloaded[1]:g} s; {config.warmup} requests of warm-up each. The Fleet and the null sink "
        f"take turns, {config.repeat} runs each; the best run of each is shown.",
        REFS,
    )
    say(f"http: making {config.tasks:,} live tasks")
    live = live_fleet(config.tasks)
    plan: list[Load] = []
    next_index = 0
    for _ in range(config.repeat):
        for name, (count, seconds), concurrency in (
            ("loaded", config.loaded, config.concurrency),
            ("unloaded", config.unloaded, 1),
        ):
            for sink in ("fleet", "null"):
                plan.append(Load(f"{name}.{sink}", 0, next_index, count, seconds, concurrency, config.warmup))
                if sink == "fleet":
                    next_index += (count + config.warmup) // len(live.task_ids) + 1
    try:
        say(f"http: {len(plan)} runs, the Fleet and the null sink in turns")
        before = live.fleet.stats().callbacks["applied"]
        summaries = _send({"fleet": live.fleet, "null": NullSink()}, live.task_ids, plan)
        applied = live.fleet.stats().callbacks["applied"] - before
    finally:
        live.close()
        del live
        gc_settled()

    section.extra["runs"] = summaries
    to_fleet = [run for run in summaries if run["name"].endswith(".fleet")]
    sent = sum(run["sent"] - run["failed"] + config.warmup for run in to_fleet)
    section.extra["applied_by_fleet"] = applied
    if applied != sent:
        section.notes.append(f"WARNING: the Fleet applied {applied:,} callbacks; {sent:,} were answered 200")
    for run_ in summaries:
        if run_["failed"]:
            section.notes.append(
                f"WARNING: {run_['name']}: {run_['failed']:,} of {run_['sent']:,} requests failed"
            )

    for name, clients in (("loaded", f"{config.concurrency} clients"), ("unloaded", "one client")):
        ours, null = _best(summaries, f"{name}.fleet"), _best(summaries, f"{name}.null")
        section.add(
            Figure(
                f"http.{name}.callbacks_per_second",
                f"callbacks/s, {clients}",
                "/s",
                ours["per_second"],
                {"null": null["per_second"]},
                better="higher",
            )
        )
        for p in ("p50", "p99"):
            section.add(
                Figure(
                    f"http.{name}.{p}_ms",
                    f"latency {p}, {clients}",
                    "ms",
                    ours[f"{p}_ms"],
                    {"null": null[f"{p}_ms"]},
                )
            )
    loaded, loaded_null = _best(summaries, "loaded.fleet"), _best(summaries, "loaded.null")
    fleet_us = 1e6 / loaded["per_second"] - 1e6 / loaded_null["per_second"]
    section.notes.append(
        f"Under load the Fleet adds about {fleet_us:,.0f} µs per callback to the server's own "
        f"{1e6 / loaded_null['per_second']:,.0f} µs: the server (a connection per request, read by one "
        "thread), not the Fleet, bounds HTTP ingest here. The load generator and the "
        "server share the machine's cores."
    )
    return section
