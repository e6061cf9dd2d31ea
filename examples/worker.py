"""An orchestration worker: start a few audio streams, react to them with hooks, stop them, sum up.

This is the shape of a worker that transcribes a batch of live streams: it starts one task per
stream, lets hooks react as transitions and transcript segments come in, stops every stream when
its time is up, waits until each stop is confirmed (memories.ai bills a stream until then), and
prints a summary.

By default it runs against streamlife's simulator of memories.ai, in-process and on virtual time:
two simulated minutes pass in a moment, with no network::

    python examples/worker.py

Against memories.ai, give it the API key and a webhook token. It then takes the callbacks on its
own HTTP server, at ``http://<this host>:<port>/memories/<token>`` (the account's webhook URL,
through a TLS proxy), and lets the streams run for ``WORKER_SECONDS`` real seconds::

    export MEMORIES_API_KEY=sk-mai-... STREAMLIFE_WEBHOOK_TOKEN=<16 characters or more>
    export WORKER_STREAMS="rtmp://cams.example/live/a rtmp://cams.example/live/b"
    python examples/worker.py

``STREAMLIFE_WEBHOOK_PORT`` (8080) is the port it listens on, ``WORKER_SECONDS`` (60) how long the
streams run; ``MEMORIES_BASE_URL`` points it at another base URL (CI points it at the simulator's
HTTP face, so this path runs there too, on loopback).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable

from streamlife import Fleet, HistoryEntry, ManualClock, Policy, Segment, StreamTask
from streamlife.sim import SimTransport, SimulatedService
from streamlife.transport import DEFAULT_BASE_URL, HttpTransport
from streamlife.webhook import WebhookReceiver, serve_webhook

SIMULATED_STREAMS = {name: f"rtmp://example.invalid/live/{name}" for name in ("lobby", "stage", "street")}


def run(fleet: Fleet, streams: dict[str, str], seconds: float, wait: Callable[[float], None]) -> None:
    """The worker's job, the same against the simulator and against memories.ai: ``streams`` maps
    a name to each stream's URL, and ``wait(s)`` lets ``s`` seconds pass (virtual ones in the
    simulator, real ones otherwise)."""
    names = {url: name for name, url in streams.items()}  # never print a URL: it may hold a stream key
    finals: Counter[str] = Counter()

    def name(task: StreamTask) -> str:
        # An orphan (a stream whose start answer was lost, adopted from its callbacks) has no URL.
        return names.get((task.params or {}).get("audio_url", ""), f"orphan {task.task_id}")

    @fleet.on_transition
    def announce(task: StreamTask, entry: HistoryEntry) -> None:
        # Called after every applied event but segments; only the moves are worth a line here.
        if entry.from_state is not entry.to_state:
            print(f"{name(task)}: {entry.to_state.value} ({entry.trigger})")

    @fleet.on_segment
    def transcribe(task: StreamTask, segment: Segment) -> None:
        # Called once per new partial or final; a redelivered callback is not new. Keep hooks
        # quick: they run on the thread that delivered the callback (the webhook's).
        if segment.final:
            finals[name(task)] += 1
            if finals[name(task)] == 1:
                print(f"{name(task)}: first words: {segment.text!r}")

    tasks = [
        fleet.start("audio", audio_url=url, provider="assemblyai", language_code="en")
        for url in streams.values()
    ]

    try:
        wait(seconds)
    except KeyboardInterrupt:  # Ctrl-C (or SIGTERM): stop them all the same, or they bill on
        print("interrupted: stopping every stream")
    fleet.stop_all()  # every request answered; the status-14 callbacks follow
    for _ in range(60):  # a failed stop is retried by the timers; give the stops a minute
        if not fleet.unsettled():
            break
        wait(1)

    print("summary:")
    for task in tasks:
        missing = ", status 14 never came" if task.final_callback_missing else ""
        print(f"  {name(task)}: {task.state.value}, {finals[name(task)]} final segments{missing}")
    exposure = fleet.exposure()
    print(f"  billed: {exposure.billed_seconds} s, about ${exposure.dollars:.4f}")


def simulated() -> None:
    clock = ManualClock()
    service = SimulatedService(clock=clock)
    # stop_concurrency=0: stops go out on this thread, so a simulated run is the same every time.
    with Fleet(SimTransport(service), clock=clock, policy=Policy(stop_concurrency=0)) as fleet:
        service.on_callback(fleet.handle_callback)  # memories.ai's webhook, in-process

        def wait(seconds: float) -> None:
            for _ in range(int(seconds)):
                service.advance(1)  # the service's callbacks for this second
                fleet.tick()  # the Fleet's timers: stop retries, final-callback waits

        run(fleet, SIMULATED_STREAMS, 120, wait)
    print("  still billing:", service.billing())


def live(api_key: str) -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a supervisor's stop, as Ctrl-C
    token = os.environ["STREAMLIFE_WEBHOOK_TOKEN"]
    port = int(os.environ.get("STREAMLIFE_WEBHOOK_PORT", "8080"))
    streams = {f"stream {n}": url for n, url in enumerate(os.environ["WORKER_STREAMS"].split(), 1)}
    transport = HttpTransport(api_key, base_url=os.environ.get("MEMORIES_BASE_URL", DEFAULT_BASE_URL))
    # A MemoryStore (the default): this worker stops what it started before it exits. One that must
    # survive its own crash journals to SqliteStore and calls fleet.recover() first (README).
    with (
        Fleet(transport) as fleet,
        serve_webhook(WebhookReceiver(fleet, token=token), port=port),  # on 127.0.0.1, behind the proxy
        fleet.run_timers(),  # ticks from a thread: deadlines and retries, on the system clock
    ):
        run(fleet, streams, float(os.environ.get("WORKER_SECONDS", "60")), time.sleep)
    transport.close()


if __name__ == "__main__":
    key = os.environ.get("MEMORIES_API_KEY")
    if key:
        live(key)
    else:
        simulated()
