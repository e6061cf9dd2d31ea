"""Orphans: callbacks for task_ids nobody has named yet, and the streams they turn out to be.

A callback can beat its own start answer, so one for an unknown task_id is parked (in the
``ParkingLot`` and in the store) and handed to the task once its start answer names it. A task_id
still unclaimed after ``Policy.park_ttl`` is an orphan: a stream that bills and that no start of
ours named. It is adopted into a task of its own and, with ``Policy.reap_orphans``, stopped.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from streamlife._callbacks import CallbackEvent, StreamEvent, is_understand_payload
from streamlife._clock import Clock
from streamlife._events import ForeignCallback, Outcome, OutcomeKind, ProviderEvent, Segment, StreamKind
from streamlife._journal import decode_event, encode_event
from streamlife._logging import get_logger
from streamlife._parking import Parked, ParkingLot, Ticket
from streamlife._policy import Policy
from streamlife._task import StreamTask
from streamlife.errors import ParkingFullError, StoreConflict
from streamlife.lifecycle import StopReason
from streamlife.store import ParkedCallback, Store

from ._apply import Applier
from ._moves import Mover
from ._notices import Notices
from ._registry import Registry
from ._stopper import Stopper
from ._tracked import Tracked

_log = get_logger()


@dataclass(frozen=True, slots=True)
class Orphan:
    """A stream no start of ours named, adopted once its callbacks outlived the parking TTL."""

    task: StreamTask  # the adopted task: its history starts with ``adopt``
    first_parked: float  # when its first callback arrived
    callbacks: int  # how many were parked (and replayed into the task)


@dataclass(slots=True, eq=False)
class Orphans:
    store: Store
    registry: Registry  # its lock guards the lot
    mover: Mover
    applier: Applier
    stopper: Stopper
    notices: Notices
    clock: Clock
    policy: Policy
    lot: ParkingLot[CallbackEvent] = field(init=False)

    def __post_init__(self) -> None:
        self.lot = ParkingLot(
            max_task_ids=self.policy.max_parked, max_per_task=self.policy.max_parked_per_task
        )

    # -- parking -----------------------------------------------------------------------------------
    def park(self, event: StreamEvent, now: float) -> Ticket[CallbackEvent] | None:
        """Park a callback (the caller holds the registry's lock), and say what its store write
        owes. Raises ``ParkingFullError`` past ``Policy.max_parked`` or ``max_parked_per_task``:
        nothing parked is dropped to make room, and a callback refused is one the sender may
        deliver again."""
        try:
            return self.lot.park(event.task_id, event, now)
        except ParkingFullError as error:
            self.registry.counts["parking_full"] += 1
            _log.warning("streamlife.parking_full", task_id=event.task_id, reason=str(error))
            raise

    def keep(self, event: StreamEvent, now: float, ticket: Ticket[CallbackEvent] | None) -> Outcome:
        """Keep a callback just parked in the store too, unless a write of it returned already: it
        is answered "parked" only once the store holds it. If the write fails, the callback leaves
        the lot (unless another delivery's write of it holds), and the error goes on: the receiver
        answers 503, and its redelivery parks it anew."""
        if ticket is None:  # a redelivery of a parked callback: kept once
            self.registry.count(OutcomeKind.DUPLICATE)
            return Outcome.PARKED_ALREADY
        try:
            self.store.park(event.task_id, now, encode_event(event))
        except BaseException:
            with self.registry.lock:
                self.lot.withdraw(ticket)
            raise
        with self.registry.lock:
            self.lot.kept(ticket)
        if not ticket.first:  # (kept twice, then: the lot takes the second back as a repeat)
            self.registry.count(OutcomeKind.DUPLICATE)
            return Outcome.PARKED_ALREADY
        self.registry.count(OutcomeKind.PARKED)
        return Outcome.PARKED

    # -- handing parked callbacks to their task ----------------------------------------------------
    def apply_parked(
        self, tracked: Tracked, task_id: str, parked: Parked[CallbackEvent] | None
    ) -> list[ParkedCallback] | None:
        """Apply the callbacks the lot handed over for ``task_id`` to the task that now holds it,
        then those other processes kept (``_apply_kept``, whose read this returns). If the store
        fails on one, those not yet applied go back in the lot, and the error goes on: they were
        answered "parked", and the lot's next pass hands them to the task. Caller holds the task's
        lock."""
        slots = [] if parked is None else parked.slots
        done = 0
        try:
            for slot in slots:
                self.applier.apply(tracked, slot.event)
                done += 1
        except BaseException:
            assert parked is not None, "a callback failed, so one was handed over"
            parked.slots = slots[done:]
            with self.registry.lock:
                self.lot.put_back(parked)
            raise
        return self._apply_kept(tracked, task_id, [slot.event for slot in slots])

    def _apply_kept(
        self, tracked: Tracked, task_id: str, own: Sequence[CallbackEvent]
    ) -> list[ParkedCallback] | None:
        """In a shared store, apply the callbacks other processes kept for ``task_id`` (this
        process's ``own`` are among them, applied already), and return what was read, for
        ``unpark``. None for a store no other process writes. Caller holds the task's lock."""
        if not self.store.shared:
            return None
        read = self.store.parked(task_id)
        mine = [encode_event(event) for event in own]
        for other in read:
            if other.payload not in mine:
                self.applier.apply(tracked, decode_event(other.payload))
        return read

    def unpark(self, task_id: str, own: Sequence[CallbackEvent], read: list[ParkedCallback] | None) -> None:
        """Forget the kept callbacks a task has now applied: those ``read`` from a shared store (one
        another process parks meanwhile stays, for whoever applies it), else this process's own.
        After they are journaled: a crash before replays them, as duplicates. So a failure here
        is logged, not raised: the events it would forget are journaled already."""
        nothing = not own if read is None else not read
        if nothing:
            return
        try:
            self.store.unpark(task_id, upto=None if read is None else max(kept.seq for kept in read))
        except Exception:
            _log.exception("streamlife.store_failed", task_id=task_id, kind="unpark")

    # -- adopting ----------------------------------------------------------------------------------
    def adopt(
        self, parked: Parked[CallbackEvent], now: float, *, reap: bool, kind: StreamKind | None = None
    ) -> Tracked | None:
        """Take on the stream behind parked callbacks as a task of its own, and (``reap``) stop it.
        ``kind``: the stream's product when the caller knows it (a start answer named the stream);
        else the callbacks tell it, or it is guessed.

        Returns the task that now holds the task_id: the adopted one, or the one whose start answer
        named it in the meantime, here or in another process (the callbacks are replayed to it);
        None if another process adopted it at the same moment (they wait for the next tick).
        """
        registry, events = self.registry, parked.events
        try:
            self.mover.load(parked.task_id)  # a task the store knows (another process's) now holds the id
        except BaseException:  # the store failed: the callbacks wait in the lot for the next tick
            with registry.lock:
                self._put_back(parked)
            raise
        certain = kind is not None
        if kind is None:
            kind, certain = kind_of_orphan(events, registry.started_kinds())
        task = StreamTask(kind, None, clock=self.clock)
        task.key = uuid.uuid4().hex
        task.history_limit = self.policy.history_limit
        self.mover.bound_transcript(task)
        tracked = Tracked(task, now)
        tracked.kind_guessed = not certain
        with tracked.lock:
            with registry.lock:
                holder = registry.by_id.setdefault(parked.task_id, tracked)
                if holder is tracked:
                    registry.add(tracked)
                    registry.counts["orphans"] += 1
                # Callbacks that came after the lot let this id go, while this ran, were parked
                # again: they follow the others.
                later = self.lot.claim(parked.task_id)
                if later is not None:
                    parked.slots.extend(later.slots)
                    events.extend(later.events)
            if holder is tracked:
                try:
                    self.mover.fire(tracked, task.adopt, parked.task_id)
                except BaseException as error:  # not journaled: no task after all; park them again
                    with registry.lock:
                        del registry.by_id[parked.task_id]
                        registry.drop(tracked)
                        registry.counts["orphans"] -= 1
                        self._put_back(parked)
                    if not isinstance(error, StoreConflict):
                        raise
                    # Another process adopted it a moment ago: the next tick finds its task in the
                    # store and hands these callbacks to it.
                    _log.info("streamlife.orphan_taken", task_id=parked.task_id)
                    return None
                read = self._take_in(tracked, parked, reap=reap)
        if holder is not tracked:  # its start answer named it after all, after the lot let it go
            with holder.lock:
                read = self.apply_parked(holder, parked.task_id, parked)
            self.unpark(parked.task_id, events, read)
            self.notices.deliver(holder)
            return holder
        self.unpark(parked.task_id, events, read)  # (journaled: the stop they call for goes out anyway)
        self.notices.deliver(tracked)
        self.stopper.send_soon(tracked, None)
        return tracked

    def _put_back(self, parked: Parked[CallbackEvent]) -> None:
        """Hand parked callbacks back to the lot, for the next tick to adopt (the caller holds the
        registry's lock). A stream adopted with none (named by a start answer) leaves nothing
        behind: its caller stops it another way."""
        if parked.slots:
            self.lot.put_back(parked)

    def _take_in(
        self, tracked: Tracked, parked: Parked[CallbackEvent], *, reap: bool
    ) -> list[ParkedCallback] | None:
        """Apply an adopted task's callbacks, tell the hooks, and (``reap``) fire its stop. Caller
        holds the task's lock."""
        task = tracked.task
        try:
            read = self.apply_parked(tracked, parked.task_id, parked)
        except BaseException:  # (a stream adopted to be reaped is stopped all the same)
            if reap and not task.terminal:
                self.stopper.want(tracked, StopReason.ORPHAN)
            raise
        stopping = reap and not task.terminal
        _log.warning(
            "streamlife.orphan",
            task=task.ref,
            task_id=parked.task_id,
            callbacks=len(parked.slots),
            first_parked=parked.first_parked,
            reaping=stopping,
        )
        if self.notices.orphan:
            orphan = Orphan(task, parked.first_parked, len(parked.slots))
            self.notices.queue(tracked, self.notices.orphan, (orphan,))
        if stopping:
            try:
                self.mover.fire(tracked, task.stop, StopReason.ORPHAN)
            except BaseException:
                self.stopper.want(tracked, StopReason.ORPHAN)
                raise
        return read

    # -- after a restart ---------------------------------------------------------------------------
    def recover(self, only: Callable[[str], bool] | None = None) -> None:
        """Put the kept callbacks back: to their task if it is known now, else in the parking lot,
        as of when they first arrived (so orphans are reaped on time). ``only``: just those whose
        task_id it accepts."""
        kept = self.store.parked()
        self._take_back(kept if only is None else [each for each in kept if only(each.task_id)])

    def take_over(self, now: float) -> None:
        """Take back the callbacks another process kept in a shared store and left there: those
        kept ``Policy.park_ttl`` and ``Policy.takeover_after`` ago or more, for task_ids this
        process has not parked itself. The process that parks a callback adopts its stream when it
        is due, and unparks it; one that died first left it to whichever live process looks first.
        They are put back as ``recover`` puts them: this tick adopts those no task holds."""
        before = now - self.policy.park_ttl - self.policy.takeover_after
        kept = self.store.parked(before=before)
        with self.registry.lock:
            left = [each for each in kept if each.task_id not in self.lot]
        taken = self._take_back(left)
        if taken:
            _log.info("streamlife.parked_taken_over", callbacks=taken)

    def _take_back(self, callbacks: Sequence[ParkedCallback]) -> int:
        """Apply each kept callback to the task that holds its task_id, here or in the store, and
        forget it there; park the others in the lot, as of when they first arrived. Returns how
        many were taken back."""
        registry = self.registry
        delivered: dict[str, int] = {}  # task_id -> the last seq applied
        unknown: set[str] = set()  # task_ids the store holds no task for (looked up once)
        taken = 0
        for kept in callbacks:
            event = decode_event(kept.payload)
            if isinstance(event, ForeignCallback):  # (never parked: ``deliver`` answers one at once)
                continue
            taken += 1
            with registry.lock:
                tracked = registry.by_id.get(event.task_id)
            if tracked is None and event.task_id not in unknown:
                tracked = self.mover.load(event.task_id)
            if tracked is None:
                unknown.add(event.task_id)
                with registry.lock:  # (answered "parked" once: never refused now)
                    self.lot.park(event.task_id, event, kept.at, put_back=True)
                continue
            with tracked.lock:
                self.applier.apply(tracked, event)
            self.notices.deliver(tracked)
            delivered[event.task_id] = kept.seq
        for task_id, upto in delivered.items():  # (only those read: another process may park more)
            self.store.unpark(task_id, upto=upto)
        return taken


def kind_of_orphan(events: Sequence[CallbackEvent], started: set[StreamKind]) -> tuple[StreamKind, bool]:
    """Which product an orphan's stream belongs to, so its stop goes to the right path, and
    whether its callbacks showed it (True) or it is a guess (False).

    Callbacks do not name their product. Live Video Understanding's have an envelope of their own;
    of the others, a transcript (text) or a provider message means audio;
    a moderation result (a segment with no text) means video; with only status callbacks to go
    on, the one kind this Fleet starts (else audio) is a guess, and the stop tries the other path
    when the first answers "not found".
    """
    for event in events:
        if is_understand_payload(event.raw):  # its own envelope: a status at the top, no code
            return StreamKind.UNDERSTAND, True
        if isinstance(event, Segment):
            return (StreamKind.AUDIO if event.text is not None else StreamKind.VIDEO), True
        if isinstance(event, ProviderEvent):
            return StreamKind.AUDIO, True
    return (next(iter(started)) if len(started) == 1 else StreamKind.AUDIO), False
