"""Three Fleet processes share one store; one is SIGKILLed and never restarted. The other two settle
what it left, and nobody calls ``recover()`` for it.

Each process (tests/fleet_worker.py) runs a Fleet on HttpTransport against the simulator's HTTP
face, with a webhook receiver of its own, and ticks its timers. Each stream's callbacks are POSTed
to the process that started it only, so the dead process's streams are heard by nobody: the
harshest case. When it dies it holds one stream of each kind a process can leave behind:

* running, and then silent (its callbacks go to a dead socket);
* mid-stop, the stop acknowledged and its status-14 callback lost with the process;
* mid-stop, the stop failed (a 500) and its retry armed in the dead process's memory;
* a stream none of them started (an orphan), whose first callback it parked and had not yet
  adopted (its parking TTL is longer than the others').

Then, within the policy's bounds: every task in the store is terminal, the simulator bills nothing,
every journal numbers 1..n with no gap, each deadline fired once, no stream was sent more stops than
one for each process that took it over, and the survivors' own streams, heard from all along, were
never taken for silent.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from streamlife import ManualClock, StreamKind
from streamlife.protocol import Payload
from streamlife.sim import SimTransport, SimulatedService, serve_http
from streamlife.store import Store
from tests.fleet.conftest import opened
from tests.fleet_worker import Worker

KEY = "sk-mai-takeover"
START_BODY = {"audio_url": "rtmp://sim.invalid/live/orphan", "provider": "assemblyai"}
TAKEOVER_AFTER = 1.0
SILENCE_AFTER = 2.0
FINAL_CALLBACK_WAIT = 2.0
STOP_TIMEOUT = 1.0
# The latest the survivors settle the dead process's tasks, in real seconds from its death: the
# longest wait a task may be in, the grace and a look's interval, and the wait of the state the
# takeover leads to (a stop's answer and its final callback), twice over for a machine under load.
WITHIN = 2 * (
    max(SILENCE_AFTER, 1.0 + STOP_TIMEOUT)  # (a failed stop's backoff is capped at 1 s here)
    + 1.25 * TAKEOVER_AFTER
    + STOP_TIMEOUT
    + FINAL_CALLBACK_WAIT
    + 1.25 * TAKEOVER_AFTER
)


class Webhooks:
    """The simulator's webhook: each callback to the receiver of the process that started its stream
    (any live one for a stream nobody started). A receiver gone away loses it."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.owner: dict[str, Worker] = {}
        self.anyone: Worker | None = None
        self.lost = 0

    def __call__(self, payload: Payload) -> None:
        worker = self.owner.get(str(payload.get("task_id")), self.anyone)
        if worker is None:
            return
        try:
            requests.post(
                f"{worker.url}/hooks/{self.token}",
                data=json.dumps(payload),
                headers={"Content-Type": "application/json"},
                timeout=10,
            )
        except requests.ConnectionError:
            self.lost += 1


class Clock:
    """Runs the simulator's time on, a second each 0.05 s of real time, unless paused."""

    def __init__(self, service: SimulatedService) -> None:
        self.service = service
        self.running = threading.Event()
        self.running.set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            self.running.wait(0.1)
            if self.running.is_set():
                self.service.advance(1)
            time.sleep(0.05)

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.running.clear()
        time.sleep(0.2)  # (an advance under way finishes)
        try:
            yield
        finally:
            self.running.set()

    def close(self) -> None:
        self._done.set()
        self._thread.join(10)


def spawn(store_url: str, base_url: str, token: str, log_path: Path, park_ttl: float = 1.0) -> Worker:
    return Worker.spawn(
        store=store_url,
        sim=base_url,
        api_key=KEY,
        token=token,
        log_path=log_path,
        park_ttl=park_ttl,
        uncertain_ttl=2.0,
        final_callback_wait=FINAL_CALLBACK_WAIT,
        silence_after=SILENCE_AFTER,
        stop_when_stalled=1,
        takeover_after=TAKEOVER_AFTER,
        stop_timeout=STOP_TIMEOUT,
    )


def unsettled(store: Store) -> list[tuple[str, str]]:
    return [(row.task_id or row.key, row.state) for row in store.rows()]


def test_the_survivors_settle_what_a_process_killed_for_good_left(tmp_path: Path, store_url: str) -> None:
    service = SimulatedService(clock=ManualClock(1_700_000_000.0), api_key=KEY)
    token = secrets.token_urlsafe(24)
    hooks = Webhooks(token)
    service.on_callback(hooks)
    with serve_http(service) as face:
        # The first dies with a parked callback it has not adopted: its parking TTL outlasts it.
        park_ttls = (600.0, 1.0, 1.0)
        workers = [
            spawn(store_url, face.base_url, token, tmp_path / f"worker-{n}.log", park_ttl)
            for n, park_ttl in enumerate(park_ttls)
        ]
        clock = Clock(service)
        try:
            dying, *survivors = workers
            hooks.anyone = survivors[0]
            silent, acknowledged, failed = (task["task_id"] for task in dying.command("start 3")["tasks"])
            kept = [survivor.command("start 1")["tasks"][0]["task_id"] for survivor in survivors]
            for task_id in (silent, acknowledged, failed):
                hooks.owner[task_id] = dying
            for survivor, task_id in zip(survivors, kept, strict=True):
                hooks.owner[task_id] = survivor
            time.sleep(1.0)  # segments flow, each to the process that started its stream

            assert dying.command(f"fail_stops {failed}") == {"failing": failed}
            assert dying.command(f"stop {failed}")["task"]["state"] == "stopping"  # its retry in memory
            # Last, so that it dies well within the others' parking TTL and grace.
            orphan = SimTransport(service, KEY).start(StreamKind.AUDIO, START_BODY).task_id
            hooks.owner[orphan] = dying
            started_at = time.monotonic()
            with opened(store_url) as store:
                while {kept.task_id for kept in store.parked()} != {orphan}:  # by the dying one
                    assert time.monotonic() - started_at < WITHIN, "the orphan's callback was not parked"
                    time.sleep(0.05)
            with clock.paused():  # nothing is delivered until the process is dead
                assert dying.command(f"stop {acknowledged}")["task"]["state"] == "stopping"
                dying.kill()
                assert dying.wait_dead() != 0
            died_at, killed_at = time.monotonic(), time.time()

            with opened(store_url) as store:
                while (
                    unsettled(store) != [(task_id, "running") for task_id in kept]
                    or service.billing() != kept
                    or store.parked()
                ):
                    assert time.monotonic() - died_at < WITHIN, (unsettled(store), service.billing())
                    time.sleep(0.1)
                for survivor in survivors:  # (their own streams: each is settled by its status-14 callback)
                    survivor.command("stop_all")
                while unsettled(store) or service.billing():
                    assert time.monotonic() - died_at < 2 * WITHIN, (unsettled(store), service.billing())
                    time.sleep(0.1)
                journals = {row.task_id: store.journal(row.key) for row in store.rows(terminal=True)}
            assert service.billing() == []
            for task_id, entries in journals.items():
                assert [entry.version for entry in entries] == list(range(1, len(entries) + 1)), task_id
            triggers = {
                task_id: [entry.trigger for entry in entries] for task_id, entries in journals.items()
            }
            for task_id, fired in triggers.items():
                deadlines = Counter(
                    t for t in fired if t in ("silence", "final_deadline", "uncertain_deadline")
                )
                assert all(count == 1 for count in deadlines.values()), (task_id, fired)
            assert "silence" in triggers[silent]
            assert "final_deadline" in triggers[acknowledged]
            # The dead process's stops failed (and its retry, if it came before the kill); a
            # survivor's went through.
            assert triggers[failed].count("stop_error") >= 1
            assert "stop_ok" in triggers[failed][triggers[failed].index("stop_error") :]
            assert all("silence" not in triggers[task_id] for task_id in kept)  # heard from all along
            assert triggers[orphan][:2] == ["adopt", "segment"]  # its parked callback, taken over
            assert journals[orphan][0].at > killed_at  # by a survivor, once the one that parked it died
            stops = Counter(request.task_id for request in service.stop_log)
            assert stops[acknowledged] == 1  # the dead process's own
            assert 1 <= stops[silent] <= len(survivors)
            assert 1 <= stops[failed] <= len(survivors)
            assert all(stops[task_id] == 1 for task_id in kept)  # stop_all's
            assert 1 <= stops[orphan] <= len(survivors)
            for survivor in survivors:
                survivor.quit()
        finally:
            clock.close()
            for worker in workers:
                worker.close()
