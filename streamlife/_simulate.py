"""A whole simulated run: many streams on memories.ai's simulator, faults on, checked as it goes.

``simulate(Run(...))`` starts ``streams`` streams, lets ``minutes`` of virtual time pass (the user
stops about a third of them along the way), then stops them all and lets the run settle: until
every task is terminal, nothing is parked and the simulator bills no stream, or until
``settle_limit`` virtual seconds pass. In-process, the Fleet talks to the simulator directly; with
``http=True`` everything crosses loopback sockets for real: ``HttpTransport`` to the simulator's
HTTP face (a port per host: audio and video, and Live Video Understanding), and its callbacks to
one ``WebhookReceiver`` in a WSGI server: the webhook's, and each understand task's own callback
URL's. Understand starts give no ``callback=``: the Fleet's ``CallbackUrls`` gives each task its
own signed URL, and its results come routed by the task's key, which names a task whose start
answer was lost (in-process, the key is read from the URL the simulator addresses, as the receiver
reads it). ``Run.mode`` is the simulator's: audio streams send 5-second segments (``"segments"``)
or forward their provider's own messages (``"passthrough"``). Every audio start names a provider,
chosen from the seed.

The Fleet journals every event in the store ``Run.store`` names (``memory:`` by default;
``sqlite:PATH`` or ``postgres:DSN`` keep the run's tasks for ``streamlife status`` and
``streamlife journal`` to read afterwards). The store must hold no task when the run begins: the
simulator's task_ids follow from the seed, so a second run into the same store would meet the
first run's tasks under the same task_ids. The report counts the tasks the store holds at the end.

The run checks the invariants itself and reports what broke in ``Report.violations``: a task not
terminal after settling; a task filed as terminal while its stream still bills; a final applied
twice; a history that is not a path through the lifecycle table; a callback the Fleet was handed
that its task's history does not record exactly once; a callback the Fleet refused (in-process, as
the webhook's 400 over HTTP, or 403 for one its task's URL does not open); an orphan adopted under
a task_id that names no stream of the simulator (a callback of another product, say); a
transcript that does not account for every segment up to the last final the simulator sent (each
is a final, or inside one of the task's gaps); an understand stream whose start answer was lost,
and whose results came, that its task's URL did not name (running, then terminal) or that was
adopted as an orphan instead.
"""

from __future__ import annotations

import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from ._callbacks import parse_callback
from ._clock import ManualClock
from ._events import (
    ForeignCallback,
    Outcome,
    OutcomeKind,
    ProviderEvent,
    StatusCallback,
    StatusMeaning,
    StreamKind,
)
from ._policy import Policy
from ._task import StreamTask
from ._task_urls import CallbackUrls, posted_route, task_route
from .errors import CallbackError
from .fleet import Fleet
from .lifecycle import CELLS, TERMINAL, Source, TaskState
from .protocol import PROVIDERS, SEGMENT_SECONDS, URL_FIELD
from .sim import Faults, SimTransport, SimulatedService, serve_http
from .sim._records import SIM_MODES, Delivery, SimMode
from .sim.http import WebhookPoster
from .store import Store, mask_store_url, open_store
from .transport.base import Transport
from .transport.http import HttpTransport, RetryPolicy
from .webhook import WebhookReceiver, serve_webhook

FAULT_PRESETS: Final[dict[str, Callable[[int], Faults]]] = {
    "none": Faults.none,
    "default": Faults.default,
    "all": Faults.all,
}
_STEP: Final = 1.0  # virtual seconds between two ticks of the Fleet
_API_KEY: Final = "sk-mai-simulated-run"
_EPOCH: Final = 1_700_000_000.0
# In-process, where the task URLs would point: nothing listens there, the sink reads the key itself.
_IN_PROCESS_RECEIVER: Final = "https://hooks.sim.invalid/streamlife"


@dataclass(frozen=True, slots=True)
class Run:
    streams: int = 50
    minutes: float = 2.0
    faults: str | Faults = "default"  # a preset's name (seeded from ``seed``), or faults of your own
    seed: int = 0
    http: bool = False
    speed: float | None = None  # virtual seconds per real second; None runs flat out
    settle_limit: float = 900.0
    store: str = "memory:"  # where the Fleet journals: a store URL (see ``streamlife.store.open_store``)
    mode: SimMode = "segments"  # what the simulator's audio streams send (see ``SimulatedService``)
    kinds: tuple[StreamKind, ...] = (StreamKind.AUDIO, StreamKind.VIDEO)  # the products the run starts

    def __post_init__(self) -> None:
        if not isinstance(self.streams, int) or self.streams < 1:
            raise ValueError(f"streams must be a positive whole number, got {self.streams!r}")
        if not self.minutes > 0:
            raise ValueError(f"minutes must be positive, got {self.minutes!r}")
        if not isinstance(self.faults, Faults) and self.faults not in FAULT_PRESETS:
            raise ValueError(f"faults must be one of {', '.join(FAULT_PRESETS)}, got {self.faults!r}")
        if self.mode not in SIM_MODES:
            raise ValueError(f"mode must be one of {', '.join(SIM_MODES)}, got {self.mode!r}")
        if self.speed is not None and not self.speed > 0:
            raise ValueError(f"speed must be positive, got {self.speed!r}")
        kinds = set(self.kinds)
        if not kinds or not kinds <= set(StreamKind) or len(kinds) != len(self.kinds):
            raise ValueError(f"kinds must name stream kinds, each once, got {self.kinds!r}")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """How the run stands, every few virtual seconds."""

    seconds: float  # virtual seconds since the run began
    phase: str  # "running", "stopping" or "settled"
    tasks_by_state: dict[str, int]
    callbacks: dict[str, int]
    orphans: int
    billed_seconds: float
    billing_now: int


@dataclass
class Report:
    seed: int
    streams: int
    minutes: float
    faults: str  # the preset's name, or "custom"
    http: bool
    mode: str
    tasks_by_state: dict[str, int]
    callbacks: dict[str, int]
    malformed_callbacks: int
    orphans_reaped: int
    orphan_billed_seconds: float
    billed_seconds: float
    stops_sent: int
    stop_failures: int
    streams_billing_after_settle: int
    settle_seconds: float
    invariant_violations: int
    violations: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    store: str = "memory:"  # the store's URL, any password masked
    tasks_in_store: dict[str, int] = field(default_factory=dict)  # rows by state, read back at the end
    tasks_by_kind: dict[str, int] = field(default_factory=dict)  # the Fleet's tasks by product
    # Tasks a result on their own callback URL named (before, or instead of, their start answer).
    tasks_named: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def ok(self) -> bool:
        return self.invariant_violations == 0 and self.streams_billing_after_settle == 0


def simulate(run: Run, on_progress: Callable[[Snapshot], None] | None = None) -> Report:
    """Play the run and check it. Raises ``ValueError`` for a store URL that names no store, or a
    store that already holds tasks; ``StoreError`` if the store cannot be opened or written."""
    began = time.monotonic()
    store = open_store(run.store)
    try:
        held = next(store.rows(terminal=True), None)
        if held is not None:
            raise ValueError(
                f"the store {mask_store_url(run.store)} already holds tasks: a simulated run needs an"
                " empty one (its task_ids follow from the seed, so they would meet the old ones)"
            )
        report = _simulate(run, store, on_progress)
        report.store = mask_store_url(run.store)
        report.tasks_in_store = dict(sorted(Counter(row.state for row in store.rows(terminal=True)).items()))
    finally:
        store.close()
    report.wall_seconds = round(time.monotonic() - began, 3)
    return report


def _simulate(run: Run, store: Store, on_progress: Callable[[Snapshot], None] | None) -> Report:
    clock = ManualClock(_EPOCH)
    faults = run.faults if isinstance(run.faults, Faults) else FAULT_PRESETS[run.faults](run.seed)
    service = SimulatedService(
        clock=clock,
        faults=faults,
        api_key=_API_KEY,
        max_streams=2 * run.streams,
        mode=run.mode,
        require_provider=True,
    )
    # No worker threads: the run replays exactly from its seed.
    # history_limit=None: the checks after the run read every task's whole history; keep_terminal
    # None: they read every task, those that ended long before the run did too.
    policy = Policy(seed=run.seed, stop_concurrency=0, history_limit=None, keep_terminal=None)
    with _wired(service, run.http) as (transport, handed):
        fleet = Fleet(transport, clock=clock, policy=policy, store=store, callback_urls=handed.callback_urls)
        handed.fleet = fleet
        try:
            return _Driver(run, clock, service, fleet, handed, on_progress).drive()
        finally:
            fleet.close()


class _Handed:
    """Stands between the callbacks and the Fleet: counts what the Fleet took, per task_id, and keeps
    what it refused.

    ``callback_urls`` is the one place where understand results are sent: each task's own URL,
    under the receiver's base URL (over HTTP) and signed with its token. The receiver checks that
    the ``callback_urls`` of the sink it is given sign with its own token, and gives task URLs only
    to a sink that takes ``key``: this one does, and passes it on to the Fleet."""

    def __init__(self, base: str = _IN_PROCESS_RECEIVER, token: str | None = None) -> None:
        self.fleet: Fleet | None = None
        self.by_task: Counter[str] = Counter()
        self.refused: list[tuple[object, str]] = []  # in-process: (task_id, why), as a webhook's 400
        self.poster: WebhookPoster | None = None  # over HTTP: what the simulator could not deliver
        token = secrets.token_urlsafe(24) if token is None else token
        self.callback_urls = CallbackUrls(base, token=token)
        self._token = token.encode()  # (in-process: to verify a delivery's URL as the receiver does)

    def handle_callback(self, payload: bytes | str | Mapping[str, Any], *, key: str | None = None) -> Outcome:
        """The Fleet's, counted: raises ``CallbackError`` as the Fleet does (the receiver answers
        400, or 403 for a task URL that does not open the callback's task)."""
        assert self.fleet is not None, "the Fleet is handed over before the first callback"
        # A refused callback is in no history: not counted.
        outcome = self.fleet.handle_callback(payload, key=key)
        event = parse_callback(payload, statuses=self.fleet.policy.statuses)
        # A provider message, or a status the policy calls ongoing, is news and no event: no history
        # has it; nor has another product's result, which belongs to no task.
        # A redelivery of a callback still parked is kept once, so no history has it either.
        ongoing = isinstance(event, StatusCallback) and event.meaning is StatusMeaning.ONGOING
        collapsed = outcome is Outcome.PARKED_ALREADY
        if not isinstance(event, ProviderEvent | ForeignCallback) and not ongoing and not collapsed:
            self.by_task[event.task_id] += 1
        return outcome

    def take(self, payload: Mapping[str, Any], callback: str | None = None) -> None:
        """The in-process sink: a callback as the receiver would take it at ``callback``, the URL
        the simulator addresses (a task's own URL: routed by its key; None: the account's webhook).
        A refused callback is kept, as the webhook's 400 (or 401, 403) would answer it, where
        raising would stop the simulator's delivery of everything else."""
        key, refusal = posted_route(self._token, callback)
        if refusal is not None:
            self.refused.append((payload.get("task_id"), refusal))
            return
        try:
            self.handle_callback(payload, key=key)
        except CallbackError as error:
            self.refused.append((payload.get("task_id"), str(error)))

    def take_delivery(self, delivery: Delivery) -> None:
        """``take``, for the simulator's ``on_delivery``: each callback with the URL it goes to."""
        self.take(delivery.payload, delivery.callback)


@contextmanager
def _wired(service: SimulatedService, http: bool) -> Iterator[tuple[Transport, _Handed]]:
    token = secrets.token_urlsafe(24)
    # In-process the task URLs point nowhere (the sink reads their keys); over HTTP, at the receiver.
    handed = _Handed(_IN_PROCESS_RECEIVER, token)
    if not http:
        service.on_delivery(handed.take_delivery)
        yield SimTransport(service, _API_KEY), handed
        return
    receiver = WebhookReceiver(handed, token=token)  # (it checks that the sink's URLs sign with its token)
    with serve_webhook(receiver) as hook:
        webhook = f"{hook.url}/hooks/{token}"
        # Its address is known once it listens: the Fleet, made after, gives URLs that reach it.
        handed.callback_urls = CallbackUrls(f"{hook.url}/hooks", token=token)
        with serve_http(service, webhook_url=webhook) as face:
            handed.poster = face.poster
            # One attempt per stop: the Fleet retries on virtual time, as in-process, not in real sleeps.
            once = RetryPolicy(attempts=1, deadline=10.0)
            transport = HttpTransport(
                _API_KEY,
                base_url=face.base_url,
                understand_url=face.understand_url,
                timeout=(2.0, 5.0),
                retry=once,
            )
            try:
                yield transport, handed
            finally:
                transport.close()


class _Driver:
    def __init__(
        self,
        run: Run,
        clock: ManualClock,
        service: SimulatedService,
        fleet: Fleet,
        handed: _Handed,
        on_progress: Callable[[Snapshot], None] | None,
    ) -> None:
        self.run, self.clock, self.service, self.fleet, self.handed = run, clock, service, fleet, handed
        self.on_progress = on_progress
        self.dice = random.Random(run.seed)
        self.violations: list[str] = []  # the first hundred
        self.violations_total = 0
        self._places: dict[int, int] = {}  # task ref -> its place among the run's tasks
        self.paced_from = time.monotonic()

    def drive(self) -> Report:
        run, dice = self.run, self.dice
        duration = run.minutes * 60.0
        ramp = min(60.0, duration / 2)  # streams start spread over the first minute
        starts = sorted(dice.uniform(0.0, ramp) for _ in range(run.streams))
        user_stops = {n: dice.uniform(ramp, duration) for n in range(run.streams) if dice.random() < 1 / 3}
        started: list[StreamTask] = []
        while self._seconds() < duration:
            while starts and starts[0] <= self._seconds():
                starts.pop(0)
                started.append(self._start(len(started)))
            for n, when in list(user_stops.items()):
                if n < len(started) and when <= self._seconds():
                    del user_stops[n]
                    self.fleet.stop(started[n])
            self._step("running")
        self.fleet.stop_all()
        settle_began = self._seconds()
        while not self._settled() and self._seconds() - settle_began < run.settle_limit:
            self._step("stopping")
        self._report_progress("settled")
        self._check_final()
        return self._report(self._seconds() - settle_began)

    def _start(self, n: int) -> StreamTask:
        dice = self.dice
        kind = StreamKind.VIDEO if dice.random() < 0.2 else StreamKind.AUDIO
        kinds = self.run.kinds
        # (Only a run that names other kinds throws more dice: the default run replays as before.)
        if StreamKind.UNDERSTAND in kinds and dice.random() < 0.3:
            kind = StreamKind.UNDERSTAND
        elif kind not in kinds:
            kind = dice.choice(kinds)
        params: dict[str, Any] = {URL_FIELD[kind]: f"rtmp://sim.invalid/live/{n}"}
        if kind is StreamKind.UNDERSTAND:  # no callback=: the Fleet gives the task's own URL
            params["user_prompt"] = "Describe what happens"
        if kind is StreamKind.AUDIO:  # the audio start page marks provider required
            params["provider"] = dice.choice(PROVIDERS)
            if self.run.mode == "passthrough" and params["provider"] == "assemblyai" and dice.random() < 0.5:
                params["format_turns"] = True
        return self.fleet.start(kind, **params)

    # -- time ------------------------------------------------------------------------------------
    def _seconds(self) -> float:
        return self.clock.now() - _EPOCH

    def _step(self, phase: str) -> None:
        self.service.advance(_STEP)
        self.fleet.tick()
        if self.run.speed is not None:  # keep virtual time at ``speed`` times real time
            ahead = self._seconds() / self.run.speed - (time.monotonic() - self.paced_from)
            if ahead > 0:
                time.sleep(ahead)
        if int(self._seconds()) % int(SEGMENT_SECONDS) == 0:
            self._check_billing()
            self._report_progress(phase)

    def _settled(self) -> bool:
        stats = self.fleet.stats()
        alive = sum(n for state, n in stats.tasks.items() if TaskState(state) not in TERMINAL)
        return alive == 0 and stats.parked == 0 and not self.service.billing()

    def _report_progress(self, phase: str) -> None:
        if self.on_progress is None:
            return
        stats = self.fleet.stats()
        self.on_progress(
            Snapshot(
                seconds=round(self._seconds(), 1),
                phase=phase,
                tasks_by_state=dict(stats.tasks),
                callbacks=dict(stats.callbacks),
                orphans=stats.orphans,
                billed_seconds=self._billed(),
                billing_now=len(self.service.billing()),
            )
        )

    def _billed(self) -> float:
        return sum(self.service.billed_seconds(task_id) for task_id in list(self.service.streams))

    # -- the invariants --------------------------------------------------------------------------
    def _violation(self, what: str) -> None:
        if len(self.violations) < 100:  # enough to see the pattern; the count says the rest
            self.violations.append(what)
        self.violations_total += 1

    def _label(self, task: StreamTask) -> str:
        """A task as a violation names it: by its place in the run, which the seed decides (a task's
        ref counts every task made in the process)."""
        if task.ref not in self._places:
            self._places = {made.ref: place for place, made in enumerate(self.fleet.tasks(), 1)}
        return f"task {self._places[task.ref]}"

    def _check_billing(self) -> None:
        for task in self.fleet.tasks():
            stream = self.service.streams.get(task.task_id or "")
            if task.terminal and stream is not None and stream.live:
                self._violation(
                    f"{self._label(task)} is {task.state} but its stream {task.task_id} still bills"
                )

    def _check_final(self) -> None:
        self._check_billing()
        for task in self.fleet.tasks():
            if not task.terminal:
                self._violation(f"{self._label(task)} is {task.state} after settling")
            self._check_history(task)
            self._check_adopted(task)
            self._check_transcript(task)
        self._check_named()
        poster = self.handed.poster
        for payload, why in [] if poster is None else poster.failures:
            self._violation(f"a webhook for {payload.get('task_id')} was not taken: {why}")
        # Over HTTP each callback is posted once (no redelivery here), to the webhook or to its
        # start's callback URL: one posted nowhere reached no receiver.
        unposted = (
            0
            if poster is None
            else len(self.service.deliveries) - len(poster.delivered) - len(poster.failures)
        )
        if unposted:
            self._violation(f"{unposted} callbacks were posted to no receiver")
        for task_id, why in self.handed.refused:
            self._violation(f"a callback for {task_id} was refused: {why}")
        for task_id, handed in self.handed.by_task.items():
            holder = self.fleet.get(task_id)
            if holder is None:
                continue
            # (``named`` is no callback of its own: the first routed one names the stream with it)
            recorded = sum(
                entry.source is Source.CALLBACK and entry.trigger != "named" for entry in holder.history
            )
            if recorded != handed:
                self._violation(f"{self._label(holder)}: {handed} callbacks handed over, {recorded} recorded")

    def _check_named(self) -> None:
        """An understand stream whose start answer was lost, and whose results were delivered, is
        named by them on its task's own URL: that task runs, then ends, and no orphan is adopted
        in its place."""
        by_key = {task.key: task for task in self.fleet.tasks()}
        delivered = {delivery.task_id for delivery in self.service.deliveries}
        for stream in self.service.streams.values():
            if stream.kind is not StreamKind.UNDERSTAND or stream.named or stream.task_id not in delivered:
                continue
            key = None if stream.callback is None else task_route(urlsplit(stream.callback).path)
            task = None if key is None else by_key.get(key[0])
            if task is None:
                self._violation(
                    f"understand stream {stream.task_id}, its answer lost, has no task by its URL"
                )
                continue
            named = [entry for entry in task.history if entry.trigger == "named"]
            if task.task_id != stream.task_id or not named or named[0].to_state is not TaskState.RUNNING:
                self._violation(
                    f"{self._label(task)}: its start answer was lost and its results came by its own URL,"
                    f" but they did not name it (it is {task.state}, task_id {task.task_id})"
                )
            if any(other.adopted and other.task_id == stream.task_id for other in by_key.values()):
                self._violation(f"{self._label(task)}: its stream {stream.task_id} was adopted as an orphan")

    def _check_adopted(self, task: StreamTask) -> None:
        """An orphan is a stream nobody here named: its task_id must be one of the simulator's streams."""
        if not task.adopted or task.task_id in self.service.streams:
            return
        what = "another product's task" if task.task_id in self.service.foreign_ids else "not a stream"
        self._violation(f"{self._label(task)} adopted {task.task_id}, which is {what}")

    def _check_transcript(self, task: StreamTask) -> None:
        """Each segment up to the last final the simulator sent (while the stream lived) is a final in
        the transcript, or inside one of its gaps: the transcript accounts for every segment."""
        task_id = task.task_id
        if task_id is None or self.fleet.get(task_id) is not task:
            return  # no stream, or another task holds it (and is checked)
        last = self.service.last_final_sent(task_id)
        if last is None:
            return
        finals = {segment.index for segment in task.transcript.finals()}
        gaps = task.gaps
        missing = [n for n in range(last + 1) if n not in finals and not any(n in gap for gap in gaps)]
        if missing:
            shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
            self._violation(
                f"{self._label(task)}: the service sent finals up to segment {last}, and segments {shown}"
                " are neither finals in its transcript nor in its gaps"
            )

    def _check_history(self, task: StreamTask) -> None:
        where: TaskState | None = None
        finals: Counter[tuple[int, bool]] = Counter()  # (index, formatted): a formatted final may follow
        for entry in task.history:
            if where is not None and entry.from_state is not where:
                self._violation(f"{self._label(task)}: history jumps from {where} to {entry.from_state}")
            cell = CELLS[entry.from_state, entry.trigger]
            applied = entry.outcome.kind is OutcomeKind.APPLIED
            if applied and (not isinstance(cell, TaskState) or cell is not entry.to_state):
                self._violation(
                    f"{self._label(task)}: {entry.trigger} moved {entry.from_state} to {entry.to_state}"
                )
            if entry.trigger == "segment" and applied and entry.data and entry.data.get("final"):
                finals[entry.data["index"], bool(entry.data.get("formatted"))] += 1
            where = entry.to_state
        for (index, _), count in finals.items():
            if count > 1:
                self._violation(f"{self._label(task)}: the final of segment {index} applied {count} times")

    def _report(self, settle_seconds: float) -> Report:
        stats = self.fleet.stats()
        adopted = [task.task_id for task in self.fleet.tasks() if task.adopted and task.task_id]
        return Report(
            seed=self.run.seed,
            streams=self.run.streams,
            minutes=self.run.minutes,
            faults=self.run.faults if isinstance(self.run.faults, str) else "custom",
            http=self.run.http,
            mode=self.run.mode,
            tasks_by_state=dict(sorted(stats.tasks.items())),
            callbacks=dict(stats.callbacks),
            malformed_callbacks=stats.malformed,
            orphans_reaped=len(adopted),
            orphan_billed_seconds=sum(
                self.service.billed_seconds(task_id) for task_id in adopted if task_id in self.service.streams
            ),
            billed_seconds=self._billed(),
            stops_sent=stats.stops_sent,
            stop_failures=stats.stop_failures,
            streams_billing_after_settle=len(self.service.billing()),
            settle_seconds=round(settle_seconds, 1),
            invariant_violations=self.violations_total,
            violations=list(self.violations),
            tasks_by_kind=dict(sorted(Counter(task.kind.value for task in self.fleet.tasks()).items())),
            tasks_named=sum(
                any(entry.trigger == "named" for entry in task.history) for task in self.fleet.tasks()
            ),
        )
