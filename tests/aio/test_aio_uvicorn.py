"""The issue's test of done: an asyncio application under uvicorn starts 200 streams with faults,
takes their callbacks through the ASGI receiver and stops them all, and its event loop is never
held up for long; nothing bills once it has settled (tests/aio/under_uvicorn.py runs it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from .under_uvicorn import streams_under_uvicorn

STREAMS = 200
# The loop's longest lag allowed. Nothing of the AsyncFleet's that may block runs on the loop (the
# test checks each call of its durable store, SQLite, and of its transport for the thread it is
# made on: only a MemoryStore's callbacks are applied on the loop); what is left is a callback's answer at a
# time, and what the machine does to a process sharing two cores with other work and, here, with
# the simulator's threads (their interpreter lock too). Measured: tens of milliseconds at most, a
# few at the 99th percentile (python -m bench.run --only aio); the bound leaves room for a busy machine.
MOST_LAG = 0.25  # seconds


def test_200_faulted_streams_under_uvicorn_never_block_the_loop_and_settle(tmp_path: Path) -> None:
    run = asyncio.run(streams_under_uvicorn(STREAMS, seed=7, directory=tmp_path))
    tasks = run.fleet.tasks()
    assert run.settled, (run.fleet.stats(), run.service.billing())
    assert len([task for task in tasks if not task.adopted]) == STREAMS
    assert all(task.terminal for task in tasks)
    assert run.service.billing() == [], "streams still billing after stop_all and settling"
    assert run.callbacks > STREAMS * 5  # they streamed, through uvicorn and the receiver
    assert run.on_the_loop == []  # no call of a durable store, nor of the transport, on the loop's thread
    assert run.lag.most < MOST_LAG, f"the loop was {run.lag.most * 1e3:.1f} ms late"
    print(f"loop lag: max {run.lag.most * 1e3:.2f} ms, p99 {run.lag.percentile(0.99) * 1e3:.2f} ms,"
          f" {len(run.lag.samples)} samples, {run.callbacks} callbacks")  # fmt: skip
