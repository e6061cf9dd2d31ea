"""SimulatedService: memories.ai's stream API in-process, on a virtual clock, with seeded faults.

It speaks the documented protocol: ``POST /audio-stream/start`` (and ``/stream/start`` for video)
answers a task_id; every 5 s each live stream sends a partial then a final segment callback; stop
answers 200 and sends exactly one status-14 callback, then nothing; stop of an unknown or ended
task, or of the other product's (a video task_id at ``/audio-stream/stop``), answers 400;
starting past ``max_streams`` live streams answers status 16 (capacity). A ledger bills every
started 5-second cycle of every stream, so a run can prove that nothing is left billing.
``Faults`` bends all of this, reproducibly from its seed.

Callbacks go to the sinks given to ``on_callback`` (the webhook receiver, a Fleet, a list), and
every delivery is logged in ``deliveries``. Sinks are called without the service's lock held, so a
sink may call back into the service (a Fleet that stops a stream while handling a callback).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from streamlife.clock import ManualClock
from streamlife.events import StreamKind
from streamlife.transport.answers import PATHS, URL_FIELD

from .faults import Faults

SEGMENT_SECONDS: Final = 5.0
STOPPED_BY_USER: Final = 14
CAPACITY_REACHED: Final = 16
SOURCE_ENDED: Final = 12  # undocumented: the simulator's stand-in for "the service ended it"
START_PATHS: Final = {start: kind for kind, (start, _) in PATHS.items()}
STOP_PATHS: Final = {stop: kind for kind, (_, stop) in PATHS.items()}

Payload = dict[str, Any]
Sink = Callable[[Payload], object]  # what a sink returns is ignored


@dataclass(frozen=True, slots=True)
class Answer:
    """What the API answered. ``lost`` answers never reach the client (the stream exists anyway)."""

    status: int
    body: Payload | None
    headers: Mapping[str, str] = field(default_factory=dict)
    lost: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    at: float
    task_id: str
    payload: Payload


@dataclass(frozen=True, slots=True)
class StopRequest:
    """One stop the service was asked for, and the HTTP status it answered."""

    at: float
    task_id: str
    status: int


@dataclass(slots=True)
class SimStream:
    task_id: str
    kind: StreamKind
    started_at: float
    next_index: int = 0
    ended_at: float | None = None
    end_status: int | None = None
    named: bool = True  # its start answer reached the client
    quiet: bool = False  # stalled: it sends no more segments, and bills on

    @property
    def live(self) -> bool:
        return self.ended_at is None


class SimulatedService:
    def __init__(
        self,
        *,
        clock: ManualClock | None = None,
        faults: Faults | None = None,
        api_key: str = "sk-mai-simulated",
        max_streams: int = 10_000,
    ) -> None:
        self.clock = clock or ManualClock()
        self.faults = faults or Faults()
        self.max_streams = max_streams
        self._api_key = api_key
        self._dice = self.faults.dice()
        self._lock = threading.RLock()
        self._sinks: list[Sink] = []
        self._order = itertools.count()  # ties in the heaps break by arrival, never by payload
        self._ticks: list[tuple[float, int, str]] = []  # (when, order, task_id): next segment end
        self._outbox: list[tuple[float, int, str, Payload]] = []  # callbacks waiting to be delivered
        self.streams: dict[str, SimStream] = {}
        self.deliveries: list[Delivery] = []
        self.stop_log: list[StopRequest] = []
        self._lose_next_answer = False
        self.start_requests = 0
        self._live = 0  # streams not ended: counted, not summed, so a start stays O(1)

    def __repr__(self) -> str:
        return f"SimulatedService(streams={len(self.streams)}, now={self.clock.now()!r}, key=<redacted>)"

    def on_callback(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def off_callback(self, sink: Sink) -> None:
        self._sinks.remove(sink)

    def lose_next_start_answer(self) -> None:
        """Make the next start that creates a stream lose its answer, as ``start_timeout_created`` does."""
        with self._lock:
            self._lose_next_answer = True

    # -- the API ---------------------------------------------------------------------------------
    def request(self, path: str, headers: Mapping[str, str], body: object) -> Answer:
        """One POST to the API (path relative to the base URL, e.g. ``/audio-stream/stop``)."""
        if headers.get("Authorization") != self._api_key:
            return _error(401, "Unauthorized")
        if not isinstance(body, Mapping):
            return _error(400, "Invalid request parameters")
        early: list[Delivery] = []
        with self._lock:
            if path in START_PATHS:
                answer = self._start(START_PATHS[path], body, early)
            elif path in STOP_PATHS:
                answer = self._stop(STOP_PATHS[path], body)
                self.stop_log.append(StopRequest(self.clock.now(), str(body.get("task_id")), answer.status))
            else:
                return _error(404, "Not found")
        self._deliver(early)  # an early callback beats its own start answer
        return answer

    def _start(self, kind: StreamKind, body: Mapping[str, Any], early: list[Delivery]) -> Answer:
        self.start_requests += 1
        url = body.get(URL_FIELD[kind])
        if not isinstance(url, str) or not url:
            return _error(400, f"Invalid request parameters: {URL_FIELD[kind]} is required")
        if self.live_count() >= self.max_streams or self._roll(self.faults.capacity):
            return Answer(200, {"code": CAPACITY_REACHED, "msg": "Capacity Reached", "data": None})
        now = self.clock.now()
        task_id = str(uuid.UUID(int=self._dice.getrandbits(128), version=4))
        self.streams[task_id] = SimStream(task_id, kind, now)
        self._live += 1
        heapq.heappush(self._ticks, (now + SEGMENT_SECONDS, next(self._order), task_id))
        if self._roll(self.faults.early_callback):
            first = self._segment_payload(self.streams[task_id], 0, final=False)
            early.append(Delivery(now, task_id, first))
        started = "Audio stream transcription started" if kind is StreamKind.AUDIO else "Stream started"
        lost, self._lose_next_answer = (
            self._lose_next_answer or self._roll(self.faults.start_timeout_created),
            False,
        )
        self.streams[task_id].named = not lost
        return dataclasses.replace(_success(task_id, started), lost=lost)

    def _stop(self, kind: StreamKind, body: Mapping[str, Any]) -> Answer:
        stream = self.streams.get(str(body.get("task_id")))
        # Each product's API knows its own tasks only (the docs are silent; two products, two paths).
        if stream is None or not stream.live or stream.kind is not kind:
            return _error(400, "Invalid task_id or task not found")
        if self._roll(self.faults.stop_500):
            return _error(500, "Internal server error")
        if self._roll(self.faults.stop_429):
            return _error(429, "Rate limit exceeded", {"Retry-After": f"{self.faults.retry_after:g}"})
        now = self.clock.now()
        if self._roll(self.faults.stop_not_found):
            self._end(stream, now, SOURCE_ENDED, announce=False)  # it had ended without a word
            return _error(400, "Invalid task_id or task not found")
        self._end(stream, now, STOPPED_BY_USER, announce=True)
        if self._roll(self.faults.late_final) and stream.next_index > 0:
            late = self._segment_payload(stream, stream.next_index - 1, final=True)
            self._enqueue(now + 0.5, stream.task_id, late)
        stopped = "Audio stream stopped successfully" if stream.kind is StreamKind.AUDIO else "Stream stopped"
        return _success(stream.task_id, stopped)

    # -- time ------------------------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        """Move virtual time forward, sending every callback that falls due on the way."""
        self.run_until(self.clock.now() + seconds)

    def run_until(self, when: float) -> None:
        while True:
            with self._lock:
                due = self._next_due(when)
                if due is None:
                    if when > self.clock.now():
                        self.clock.set(when)
                    return
                if due > self.clock.now():
                    self.clock.set(due)
                self._emit_segments(due)
                ready = self._take_ready(due)
            self._deliver(ready)

    def _next_due(self, limit: float) -> float | None:
        candidates = [heap[0][0] for heap in (self._ticks, self._outbox) if heap]
        soonest = min(candidates, default=None)
        return soonest if soonest is not None and soonest <= limit else None

    def _emit_segments(self, now: float) -> None:
        while self._ticks and self._ticks[0][0] <= now:
            at, _, task_id = heapq.heappop(self._ticks)
            stream = self.streams[task_id]
            if not stream.live:
                continue
            index = stream.next_index
            stream.next_index += 1
            # Only a named stream stalls: one whose start answer was lost and that never calls back
            # is beyond any client (the API lists no streams), so the simulator does not make one.
            stream.quiet = stream.quiet or (stream.named and self._roll(self.faults.stall))
            if not stream.quiet:
                if stream.kind is StreamKind.AUDIO:  # transcription: a partial, then its final
                    self._enqueue(at, task_id, self._segment_payload(stream, index, final=False))
                self._enqueue(at, task_id, self._segment_payload(stream, index, final=True))
            if self._roll(self.faults.spontaneous_end):
                self._end(stream, at, SOURCE_ENDED, announce=True)
            else:
                heapq.heappush(self._ticks, (at + SEGMENT_SECONDS, next(self._order), task_id))

    def _take_ready(self, now: float) -> list[Delivery]:
        ready = []
        while self._outbox and self._outbox[0][0] <= now:
            at, _, task_id, payload = heapq.heappop(self._outbox)
            ready.append(Delivery(at, task_id, payload))
        return ready

    def _deliver(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            with self._lock:
                self.deliveries.append(delivery)
            for sink in self._sinks:
                sink(delivery.payload)

    # -- callbacks and faults --------------------------------------------------------------------
    def _enqueue(self, at: float, task_id: str, payload: Payload) -> None:
        """Queue one callback, bent by the delivery faults."""
        faults = self.faults
        if self._roll(faults.drop):
            return
        if self._roll(faults.delay):
            at += self._dice.uniform(0.0, faults.max_delay)
        if self._roll(faults.reorder):
            at += self._dice.uniform(SEGMENT_SECONDS, 2 * SEGMENT_SECONDS)  # behind the next segment
        heapq.heappush(self._outbox, (at, next(self._order), task_id, payload))
        if self._roll(faults.duplicate):
            again = at + self._dice.uniform(0.0, 2.0)
            heapq.heappush(self._outbox, (again, next(self._order), task_id, payload))

    def _end(self, stream: SimStream, at: float, status: int, *, announce: bool) -> None:
        if stream.live:
            self._live -= 1
        stream.ended_at, stream.end_status = at, status
        if announce:
            self._enqueue(at, stream.task_id, self._status_payload(stream, status))

    def _roll(self, rate: float) -> bool:
        return rate > 0.0 and self._dice.random() < rate

    def _segment_payload(self, stream: SimStream, index: int, *, final: bool) -> Payload:
        if stream.kind is StreamKind.VIDEO:
            return self._moderation_payload(stream, index)
        start = index * SEGMENT_SECONDS
        words = f"segment {index} of {stream.task_id[:8]}"
        return {
            "code": "200",
            "message": "SUCCESS",
            "task_id": stream.task_id,
            "data": {
                "segment_index": index,
                "segment_start_time": f"{start:.1f}",
                "segment_end_time": f"{start + SEGMENT_SECONDS:.1f}",
                "status": 0,
                "message": "final" if final else "partial",
                "transcript": {"text": words if final else words[: len(words) // 2], "is_final": final},
            },
        }

    def _moderation_payload(self, stream: SimStream, index: int) -> Payload:
        """Video moderation: one result per segment, under ``data.data`` (null on error statuses)."""
        start = index * SEGMENT_SECONDS
        return {
            "code": 200,
            "message": "success",
            "task_id": stream.task_id,
            "data": {
                "segment_index": index,
                "start_time": f"{start:.1f}",
                "end_time": f"{start + SEGMENT_SECONDS:.1f}",
                "status": 0,
                "data": {"moderation": {"flagged": index % 7 == 3, "labels": []}, "logos": []},
            },
        }

    def _status_payload(self, stream: SimStream, status: int) -> Payload:
        last = max(stream.next_index - 1, 0)
        message = "Stream stopped by user" if status == STOPPED_BY_USER else "Stream source ended"
        return {
            "code": "200",
            "message": "SUCCESS",
            "task_id": stream.task_id,
            "data": {
                "segment_index": last,
                "segment_start_time": f"{last * SEGMENT_SECONDS:.1f}",
                "segment_end_time": f"{(last + 1) * SEGMENT_SECONDS:.1f}",
                "status": status,
                "message": message,
                "transcript": None,
            },
        }

    # -- the ledger ------------------------------------------------------------------------------
    @property
    def stop_requests(self) -> int:
        return len(self.stop_log)

    def live_count(self) -> int:
        """How many streams live (and bill) now."""
        return self._live

    def billing(self) -> list[str]:
        """The task_ids still billing now: the streams nobody has stopped."""
        with self._lock:
            return [task_id for task_id, stream in self.streams.items() if stream.live]

    def billed_seconds(self, task_id: str) -> float:
        """Every started 5-second cycle, from the start (pre-charged) to the end or now."""
        with self._lock:
            stream = self.streams[task_id]
            end = stream.ended_at if stream.ended_at is not None else self.clock.now()
            cycles = max(1, math.ceil((end - stream.started_at) / SEGMENT_SECONDS - 1e-9))
            return cycles * SEGMENT_SECONDS


def _success(task_id: str, message: str) -> Answer:
    return Answer(200, {"code": 200, "message": "success", "data": {"task_id": task_id, "message": message}})


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Answer:
    return Answer(status, {"code": status, "msg": message, "data": None}, headers or {})
