"""SimulatedService: memories.ai's stream API in-process, on a virtual clock, with seeded faults.

It speaks the documented protocol: ``POST /audio-stream/start`` (and ``/stream/start`` for video)
answers a task_id; every 5 s each live stream sends its results by callback; stop answers 200 and
sends exactly one status-14 callback, then nothing; stop of an unknown or ended task, or of the
other product's (a video task_id at ``/audio-stream/stop``), answers 400; starting past
``max_streams`` live streams answers status 16 (capacity). A ledger bills every started 5-second
cycle of every stream until it ended, so a run can prove that nothing is left billing. ``Faults``
bends all of this, reproducibly from its seed.

What an audio stream sends depends on the ``mode``, the two revisions of the audio start page:

* ``"segments"`` (the default): memories.ai cuts the stream into 5-second segments and sends a
  partial then a final transcript callback for each, segment fields under ``data``.
* ``"passthrough"``: memories.ai streams the audio to the provider the start body names
  (``provider``: ``"assemblyai"`` or ``"elevenlabs"``) and forwards each of its messages verbatim:
  AssemblyAI's ``Begin``, ``Turn`` and ``Termination``, ElevenLabs' ``session_started``,
  ``partial_transcript`` and ``committed_transcript``. A stop still ends with the status-14 callback.

A video stream sends one moderation result per segment in either mode, its segment fields under
``data.data`` as the video start page documents them.

Live Video Understanding (``POST /v1/understand/streamConnect``, ``POST /v1/understand/stop/{id}``
with no body, on a host of its own) answers ``{status, task_id, text}`` on HTTP 200: 0 started, 14
stopped (and nothing follows), -1 invalid or not found, 5000 a server error (``stop_500``), 1001
past ``understand_cap`` live tasks (4 per key, documented) or on the ``capacity`` fault, 2001 on
the ``credit_start`` fault (1001 and 2001 are known from a third party only). Each live task sends
one result every 5 s, stamped and with no index, to the sinks; each ``Delivery`` names the
``callback`` URL its start gave, where the HTTP face posts it (``serve_http``). It ends by itself
and tells nobody on the ``spontaneous_end`` and ``credit_end`` faults, as the docs say its source's
end does.

Callbacks go to the sinks given to ``on_callback`` (the webhook receiver, a Fleet, a list): every
callback, wherever the product sends it, as one process would hear them all. Sinks given to
``on_delivery`` get each ``Delivery`` with where it goes (its ``callback``: the start's own URL, or
None for the account's webhook), to post it there. Every delivery is logged in ``deliveries``.
Sinks are called without the service's lock held, so a sink may call back into the service (a
Fleet that stops a stream while handling a callback).

This module keeps the service's time, faults and ledger. ``messages`` writes what a stream sends,
and ``records`` holds the values the service hands out (a stream, an answer, a delivery).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import unquote

from streamlife._billing import billed_seconds
from streamlife._clock import ManualClock
from streamlife._events import StreamKind
from streamlife.protocol import (
    CAPACITY_REACHED,
    PATHS,
    PROVIDERS,
    SEGMENT_SECONDS,
    START_MESSAGES,
    STATUS_MESSAGES,
    STOP_MESSAGES,
    STOPPED_BY_USER,
    UNDERSTAND_CONCURRENCY,
    UNDERSTAND_CREDIT,
    UNDERSTAND_INVALID,
    UNDERSTAND_MAX_TASKS,
    UNDERSTAND_OK,
    UNDERSTAND_REQUIRED,
    UNDERSTAND_SERVER_ERROR,
    URL_FIELD,
    Payload,
    error_answer,
    success_answer,
    understand_answer,
)

from . import _messages as messages
from ._records import (
    CREDIT_EXHAUSTED,
    SIM_MODES,
    SOURCE_ENDED,
    Answer,
    Delivery,
    SimMode,
    SimStream,
    StopRequest,
)
from .faults import Faults

START_PATHS: Final = {start: kind for kind, (start, _) in PATHS.items()}
STOP_PATHS: Final = {stop: kind for kind, (_, stop) in PATHS.items() if "{" not in stop}
# Live Video Understanding's stop names the task in its path: everything after this prefix.
UNDERSTAND_STOP_PREFIX: Final = PATHS[StreamKind.UNDERSTAND][1].partition("{")[0]

DEFAULT_API_KEY: Final = "sk-mai-simulated"  # the key a simulator takes unless given another
Sink = Callable[[Payload], object]  # what a sink returns is ignored
DeliverySink = Callable[[Delivery], object]


def path_kind(path: str) -> StreamKind | None:
    """The product whose API a request's path (relative to its host's base URL) belongs to, or None."""
    if path.startswith(UNDERSTAND_STOP_PREFIX):
        return StreamKind.UNDERSTAND
    return START_PATHS.get(path, STOP_PATHS.get(path))


class SimulatedService:
    """memories.ai's stream API. ``mode`` picks what audio streams send (see the module's docs).

    The current audio start page marks ``provider`` required: a start without a valid one answers
    400 in ``"passthrough"`` mode, where the provider decides every message, and in
    ``"segments"`` mode with ``require_provider=True``. Without it, segments mode takes a start
    with no ``provider``, as the older revision of the page (AssemblyAI only) did.
    """

    def __init__(
        self,
        *,
        clock: ManualClock | None = None,
        faults: Faults | None = None,
        api_key: str = DEFAULT_API_KEY,
        max_streams: int = 10_000,
        mode: SimMode = "segments",
        require_provider: bool = False,
        understand_cap: int = UNDERSTAND_MAX_TASKS,
    ) -> None:
        if mode not in SIM_MODES:
            raise ValueError(f"mode must be one of {', '.join(SIM_MODES)}, got {mode!r}")
        self.clock = clock or ManualClock()
        self.faults = faults or Faults()
        self.max_streams = max_streams
        self.mode: SimMode = mode
        self.require_provider = require_provider or mode == "passthrough"
        self._api_key = api_key
        self._dice = self.faults.dice()
        self._lock = threading.RLock()
        self._sinks: list[Sink] = []
        self._delivery_sinks: list[DeliverySink] = []
        self._order = itertools.count()  # ties in the heaps break by arrival, never by payload
        self._ticks: list[tuple[float, int, str]] = []  # (when, order, task_id): next segment end
        # Callbacks waiting to be delivered: (when, order, task_id, payload, final_of).
        self._outbox: list[tuple[float, int, str, Payload, int | None]] = []
        self.streams: dict[str, SimStream] = {}
        self.foreign_ids: set[str] = set()  # task_ids of the other products' callbacks: never streams
        self.deliveries: list[Delivery] = []
        self.stop_log: list[StopRequest] = []
        self._lose_next_answer = False
        self.start_requests = 0
        self._live = 0  # streams not ended: counted, not summed, so a start stays O(1)
        self._live_understanding = 0  # of those, Live Video Understanding's (its cap is per key)
        self.understand_cap = understand_cap
        self._last_final: dict[str, int] = {}  # task_id -> highest final index delivered while it lived

    def __repr__(self) -> str:
        return f"SimulatedService(streams={len(self.streams)}, now={self.clock.now()!r}, key=<redacted>)"

    def on_callback(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def off_callback(self, sink: Sink) -> None:
        self._sinks.remove(sink)

    def on_delivery(self, sink: DeliverySink) -> None:
        """Call ``sink`` with each ``Delivery``, after the ``on_callback`` sinks: it names where the
        callback goes (``Delivery.callback``), for a sink that posts it there."""
        self._delivery_sinks.append(sink)

    def off_delivery(self, sink: DeliverySink) -> None:
        self._delivery_sinks.remove(sink)

    def lose_next_start_answer(self) -> None:
        """Make the next start that creates a stream lose its answer, as ``start_timeout_created`` does."""
        with self._lock:
            self._lose_next_answer = True

    # -- the API ---------------------------------------------------------------------------------
    def request(self, path: str, headers: Mapping[str, str], body: object) -> Answer:
        """One POST to the API (path relative to the base URL, e.g. ``/audio-stream/stop``)."""
        if headers.get("Authorization") != self._api_key:
            return _error(401, "Unauthorized")
        if path.startswith(UNDERSTAND_STOP_PREFIX):  # no body: the task_id is the path's last segment
            task_id = unquote(path.removeprefix(UNDERSTAND_STOP_PREFIX))
            with self._lock:
                answer = self._stop_understanding(task_id)
                said = None if answer.body is None else answer.body.get("status")
                self.stop_log.append(StopRequest(self.clock.now(), task_id, answer.status, said))
            return answer
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
        if kind is StreamKind.UNDERSTAND:
            return self._start_understanding(body, early)
        url = body.get(URL_FIELD[kind])
        if not isinstance(url, str) or not url:
            return _error(400, f"Invalid request parameters: {URL_FIELD[kind]} is required")
        provider = body.get("provider") if kind is StreamKind.AUDIO else None
        checked = kind is StreamKind.AUDIO and (provider is not None or self.require_provider)
        if checked and provider not in PROVIDERS:
            return _error(400, "Invalid request parameters: provider must be elevenlabs or assemblyai")
        if self._roll(self.faults.credit_start):
            return _error(402, "Insufficient balance")  # the error page's 402: nothing is created
        if self.live_count() >= self.max_streams or self._roll(self.faults.capacity):
            return Answer(200, error_answer(CAPACITY_REACHED, STATUS_MESSAGES[CAPACITY_REACHED]))
        now = self.clock.now()
        task_id = str(uuid.UUID(int=self._dice.getrandbits(128), version=4))
        fps = body.get("fps")
        stream = SimStream(
            task_id,
            kind,
            now,
            provider=provider if isinstance(provider, str) else None,
            format_turns=body.get("format_turns") is True,
            fps=fps if isinstance(fps, int) and not isinstance(fps, bool) and fps > 0 else 1,
            passthrough=self.mode == "passthrough" and kind is StreamKind.AUDIO,
        )
        self.streams[task_id] = stream
        self._live += 1
        heapq.heappush(self._ticks, (now + SEGMENT_SECONDS, next(self._order), task_id))
        # A provider's session opens as the stream starts: its first message comes at once.
        opening = self._opening(stream) if stream.passthrough else None
        if self._roll(self.faults.early_callback):
            if opening is not None:
                early.append(self._addressed(now, task_id, opening))
                opening = None
            elif kind is StreamKind.VIDEO:
                early.append(self._addressed(now, task_id, messages.moderation(stream, 0), 0))
            else:
                early.append(self._addressed(now, task_id, messages.transcript(stream, 0, final=False)))
        if opening is not None:
            self._enqueue(now, task_id, opening)
        lost, self._lose_next_answer = (
            self._lose_next_answer or self._roll(self.faults.start_timeout_created),
            False,
        )
        stream.named = not lost
        return dataclasses.replace(_success(task_id, START_MESSAGES[kind]), lost=lost)

    def _stop(self, kind: StreamKind, body: Mapping[str, Any]) -> Answer:
        stream = self.streams.get(str(body.get("task_id")))
        # Each product's API knows its own tasks only (the docs are silent; two products, two paths).
        if stream is None or stream.kind is not kind:
            return _error(400, "Invalid task_id or task not found")
        if not stream.live:
            # The stop page documents 400 for a task not found, and calls stop "safe to call even if
            # the stream has already ended": the other reading answers 200, and sends no status-14
            # callback, since the stream had already sent its last.
            if self._roll(self.faults.stop_ended_ok):
                return _success(stream.task_id, STOP_MESSAGES[kind])
            return _error(400, "Invalid task_id or task not found")
        if self._roll(self.faults.stop_500):
            return _error(500, "Internal server error")
        if self._roll(self.faults.stop_429):
            # Fixed-point, as delay-seconds are written: "1e+06" would be no Retry-After at all.
            seconds = f"{self.faults.retry_after:.3f}".rstrip("0").rstrip(".")
            return _error(429, "Rate limit exceeded", {"Retry-After": seconds})
        now = self.clock.now()
        if self._roll(self.faults.stop_not_found):
            self._end(stream, now, SOURCE_ENDED, announce=False)  # it had ended without a word
            return _error(400, "Invalid task_id or task not found")
        self._end(stream, now, STOPPED_BY_USER, announce=True)
        if self._roll(self.faults.late_final) and stream.next_index > 0:
            late, final_of = messages.final_message(stream, stream.next_index - 1)
            self._enqueue(now + 0.5, stream.task_id, late, final_of)
        return _success(stream.task_id, STOP_MESSAGES[kind])

    # -- Live Video Understanding ----------------------------------------------------------------
    # Its own envelope, ``{status, task_id, text}``, always on HTTP 200 here: the docs give its
    # codes in the body and say nothing of the HTTP status, so the simulator takes the reading that
    # costs a client the most (a client reading HTTP alone would take every refusal for success).
    def _start_understanding(self, body: Mapping[str, Any], early: list[Delivery]) -> Answer:
        for name in UNDERSTAND_REQUIRED:
            value = body.get(name)
            if not isinstance(value, str) or not value:
                return _understand(UNDERSTAND_INVALID, text=f"invalid request: {name} is required")
        if self._roll(self.faults.credit_start):
            return _understand(UNDERSTAND_CREDIT, text="credit deduction failed")  # nothing is created
        if self._live_understanding >= self.understand_cap or self._roll(self.faults.capacity):
            return _understand(UNDERSTAND_CONCURRENCY, text="maximum concurrent streams reached")
        now = self.clock.now()
        task_id = str(uuid.UUID(int=self._dice.getrandbits(128), version=4))
        callback = body.get("callback")
        stream = SimStream(task_id, StreamKind.UNDERSTAND, now, callback=str(callback))
        self.streams[task_id] = stream
        self._live += 1
        self._live_understanding += 1
        heapq.heappush(self._ticks, (now + SEGMENT_SECONDS, next(self._order), task_id))
        if self._roll(self.faults.early_callback):
            early.append(self._addressed(now, task_id, messages.understanding(stream, 0)))
        lost, self._lose_next_answer = (
            self._lose_next_answer or self._roll(self.faults.start_timeout_created),
            False,
        )
        stream.named = not lost
        return dataclasses.replace(_understand(UNDERSTAND_OK, task_id), lost=lost)

    def _stop_understanding(self, task_id: str) -> Answer:
        stream = self.streams.get(task_id)
        if stream is None or stream.kind is not StreamKind.UNDERSTAND:
            return _understand(UNDERSTAND_INVALID, text="task not found")
        if not stream.live:
            # Documented: -1 for a task not found. The other reading (stop is safe on an ended
            # stream) answers 14, and nothing follows, as after any stop of this product.
            if self._roll(self.faults.stop_ended_ok):
                return _understand(STOPPED_BY_USER, task_id, text=None)  # documented without text
            return _understand(UNDERSTAND_INVALID, text="task not found")
        if self._roll(self.faults.stop_500):
            return _understand(UNDERSTAND_SERVER_ERROR, text="internal server error")
        if self._roll(self.faults.stop_429):  # undocumented for this product: the generic 429
            seconds = f"{self.faults.retry_after:.3f}".rstrip("0").rstrip(".")
            return _error(429, "Rate limit exceeded", {"Retry-After": seconds})
        now = self.clock.now()
        if self._roll(self.faults.stop_not_found):
            self._end(stream, now, SOURCE_ENDED, announce=False)  # its source had ended, unsaid
            return _understand(UNDERSTAND_INVALID, text="task not found")
        self._end(stream, now, STOPPED_BY_USER, announce=False)  # no callback follows the answer
        if self._roll(self.faults.late_final) and stream.next_index > 0:
            self._enqueue(now + 0.5, stream.task_id, messages.understanding(stream, stream.next_index - 1))
        return _understand(STOPPED_BY_USER, task_id, text=None)  # documented without text

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
        faults = self.faults
        while self._ticks and self._ticks[0][0] <= now:
            at, _, task_id = heapq.heappop(self._ticks)
            stream = self.streams[task_id]
            if not stream.live:
                continue
            # Live Video Understanding ends by itself and tells nobody (its source stopped, or a
            # charge failed): the client's silence watchdog has to find it.
            announce = stream.kind is not StreamKind.UNDERSTAND
            if self._roll(faults.credit_end):
                # The charge for the cycle that begins now failed: the stream ends before it.
                self._end(stream, at, CREDIT_EXHAUSTED, announce=announce)
                continue
            index = stream.next_index
            stream.next_index += 1
            # Only a named stream stalls: one whose start answer was lost and that never calls back
            # is beyond any client (the API lists no streams), so the simulator does not make one.
            stream.quiet = stream.quiet or (stream.named and self._roll(faults.stall))
            if not stream.quiet:
                for payload, final_of in self._segment_messages(stream, index):
                    self._enqueue(at, task_id, payload, final_of)
                # The docs do not say what a status-16 callback means for a stream that runs: the
                # simulator takes the costly reading, and the stream goes on (and bills).
                if announce and self._roll(faults.capacity_callback):
                    self._enqueue(at, task_id, messages.status_message(stream, CAPACITY_REACHED))
                # Likewise the provider's end of session forwarded while the stream runs (AssemblyAI's
                # Termination, an ElevenLabs error): the stream goes on.
                if stream.passthrough and self._roll(faults.provider_termination):
                    self._enqueue(at, task_id, messages.session_end(stream, at))
            if self._roll(faults.foreign):
                self._send_foreign(at)
            if self._roll(faults.spontaneous_end):
                self._end(stream, at, SOURCE_ENDED, announce=announce)
            else:
                heapq.heappush(self._ticks, (at + SEGMENT_SECONDS, next(self._order), task_id))

    def _take_ready(self, now: float) -> list[Delivery]:
        ready = []
        while self._outbox and self._outbox[0][0] <= now:
            at, _, task_id, payload, final_of = heapq.heappop(self._outbox)
            ready.append(self._addressed(at, task_id, payload, final_of))
        return ready

    def _addressed(self, at: float, task_id: str, payload: Payload, final_of: int | None = None) -> Delivery:
        """A delivery, addressed where its stream's start said (another product's: the webhook)."""
        stream = self.streams.get(task_id)
        return Delivery(at, task_id, payload, final_of, None if stream is None else stream.callback)

    def _deliver(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            with self._lock:
                self.deliveries.append(delivery)
                self._note_final(delivery)
            for sink in self._sinks:
                sink(delivery.payload)
            for addressed in self._delivery_sinks:
                addressed(delivery)

    def _note_final(self, delivery: Delivery) -> None:
        """Keep the highest final index delivered while its stream lived. A final delivered after the
        end (``late_final``, or delayed past a stop) may follow the callback that ended its task, which
        files it as late: the transcript does not owe it."""
        stream = self.streams.get(delivery.task_id)
        if delivery.final_of is None or stream is None:
            return
        if stream.ended_at is not None and delivery.at > stream.ended_at:
            return
        known = self._last_final.get(delivery.task_id)
        if known is None or delivery.final_of > known:
            self._last_final[delivery.task_id] = delivery.final_of

    # -- callbacks and faults --------------------------------------------------------------------
    def _enqueue(self, at: float, task_id: str, payload: Payload, final_of: int | None = None) -> None:
        """Queue one callback, bent by the delivery faults."""
        faults = self.faults
        if self._roll(faults.drop):
            return
        if self._roll(faults.delay):
            at += self._dice.uniform(0.0, faults.max_delay)
        if self._roll(faults.reorder):
            at += self._dice.uniform(SEGMENT_SECONDS, 2 * SEGMENT_SECONDS)  # behind the next segment
        heapq.heappush(self._outbox, (at, next(self._order), task_id, payload, final_of))
        if self._roll(faults.duplicate):
            again = at + self._dice.uniform(0.0, 2.0)
            heapq.heappush(self._outbox, (again, next(self._order), task_id, payload, final_of))

    def _end(self, stream: SimStream, at: float, status: int, *, announce: bool) -> None:
        if stream.live:
            self._live -= 1
            if stream.kind is StreamKind.UNDERSTAND:
                self._live_understanding -= 1
        stream.ended_at, stream.end_status = at, status
        if not announce:
            return
        if stream.passthrough and stream.provider == "assemblyai":
            # memories.ai closes the provider's session, and AssemblyAI answers with its Termination,
            # forwarded before memories.ai's own status callback.
            self._enqueue(at, stream.task_id, messages.termination(stream, at))
        self._enqueue(at, stream.task_id, messages.status_message(stream, status))

    def _roll(self, rate: float) -> bool:
        return rate > 0.0 and self._dice.random() < rate

    def _segment_messages(self, stream: SimStream, index: int) -> list[messages.Message]:
        """The callbacks of one segment, in order, each with the index it is the final of (if any)."""
        silent_ok = stream.kind is StreamKind.AUDIO and not stream.passthrough
        if silent_ok and self._roll(self.faults.silent_segment):
            return [(messages.silent_segment(stream, index), None)]
        return messages.segment_messages(stream, index)

    def _opening(self, stream: SimStream) -> Payload:
        """The provider's first message, with a session id from the dice."""
        session = uuid.UUID(int=self._dice.getrandbits(128), version=4)
        return messages.opening(stream, session, self.clock.now())

    # -- the other products ----------------------------------------------------------------------
    def _send_foreign(self, at: float) -> None:
        """A callback of another memories.ai product: the webhook is one per account, and gets every
        product's async results. The webhooks guide gives the envelope, task_id at the top; what
        ``data`` holds differs per product (``messages.foreign_results``)."""
        while True:  # a task_id like the guide's (32 hex digits), and never a stream's
            task_id = uuid.UUID(int=self._dice.getrandbits(128), version=4).hex
            if task_id not in self.streams and task_id not in self.foreign_ids:
                break
        self.foreign_ids.add(task_id)
        results = messages.foreign_results(task_id)
        data = results[self._dice.randrange(len(results))]
        self._enqueue(at, task_id, {"code": 200, "message": "SUCCESS", "data": data, "task_id": task_id})

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
            return billed_seconds(stream.started_at, end)

    def last_final_sent(self, task_id: str) -> int | None:
        """The highest segment index whose final the service delivered while the stream lived (None:
        no final, or only ElevenLabs transcripts, which name no index)."""
        with self._lock:
            return self._last_final.get(task_id)


def _success(task_id: str, message: str) -> Answer:
    return Answer(200, success_answer(task_id, message))


def _understand(status: int, task_id: str | None = None, *, text: str | None = "") -> Answer:
    return Answer(200, understand_answer(status, task_id, text))


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Answer:
    return Answer(status, error_answer(status, message), headers or {})
