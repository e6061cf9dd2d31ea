"""Intake: webhook payloads in, each applied to its task or parked, journaled before it returns.

A payload that came by a task's own callback URL (``CallbackUrls``; the receiver verified the URL
and passes the task's key) goes to that task and nowhere else (``deliver_routed``): it is never
parked. If the task has no task_id yet (its start answer is on its way, or was lost) the callback
names the stream (``named``); if it names another stream than the task's, or one another task
holds, it is refused (``MisroutedCallbackError``) and nothing changes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

from streamlife._callbacks import CallbackEvent, parse_callback
from streamlife._clock import Clock
from streamlife._events import ForeignCallback, Outcome, OutcomeKind
from streamlife._jsontext import dead_letter_body
from streamlife._logging import get_logger
from streamlife._policy import Policy
from streamlife.errors import CallbackError, MisroutedCallbackError
from streamlife.lifecycle import CELLS, STATES, TaskState
from streamlife.store import ParkedCallback, Store

from ._apply import Applier
from ._moves import Mover
from ._notices import Notices
from ._orphans import Orphans
from ._registry import Registry
from ._stopper import Stopper
from ._tracked import Tracked

_log = get_logger()

Payload = bytes | str | Mapping[str, Any]

# The states in which a callback on the task's own URL names its stream: derived from the table.
_NAMEABLE: Final = frozenset(state for state in STATES if isinstance(CELLS[state, "named"], TaskState))
# What naming returns for a task that was not to be named after all (another process named it, or
# it left the states that may be named): not applied, so nothing is journaled.
_NOT_NAMED: Final = Outcome.rejected("not named: the task has a name, or may not be named now")
_HELD: Final = Outcome.rejected("not named: another task holds the task_id")
_KEY: Final = itemgetter(0)  # a batch item's task key


@dataclass(slots=True, eq=False)
class Intake:
    store: Store
    registry: Registry
    mover: Mover
    applier: Applier
    orphans: Orphans
    notices: Notices
    clock: Clock
    policy: Policy
    stopper: Stopper

    def parse(self, payload: Payload, *, routed: bool = False) -> CallbackEvent:
        """The callback in ``payload``; a payload the parser refuses is kept as a dead letter first,
        unless it came by a task's own URL (``routed``): see ``_refused``."""
        try:
            return self.ours_if_known(parse_callback(payload, statuses=self.policy.statuses))
        except CallbackError as error:
            self._refused(payload, error, routed=routed)
            raise

    def handle_many(
        self, payloads: Iterable[Payload], keys: Sequence[str | None] | None = None
    ) -> list[Outcome | CallbackError]:
        """``Fleet.handle_callbacks``: the batch's tasks applied under one store commit. ``keys``:
        for each payload, the key of the task whose own URL it came by, or None."""
        results: list[Outcome | CallbackError | None] = []
        # (key, task, position, event): the task's key first, by which the batch is sorted.
        held: list[tuple[str, Tracked, int, CallbackEvent]] = []
        others: list[tuple[int, CallbackEvent, str | None]] = []
        registry = self.registry
        for n, payload in enumerate(payloads):
            key = None if keys is None else keys[n]
            try:
                event = self.parse(payload, routed=key is not None)
            except CallbackError as error:
                results.append(error)
                continue
            if isinstance(event, ForeignCallback):
                tracked = None
            elif key is None:
                tracked = self._held_or_stored(event.task_id)
            else:
                tracked = registry.by_id.get(event.task_id)
                if tracked is None or tracked is not registry.by_key.get(key):
                    tracked = None  # routed, and not plainly its named task's: alone, after the batch
            if tracked is None:
                others.append((len(results), event, key))
            else:
                held.append((tracked.task.key or "", tracked, len(results), event))
            results.append(None)
        if held:
            self._apply_batch(held, results)
        for position, event, key in others:
            if key is None:
                results[position] = self.deliver(event)
                continue
            try:
                results[position] = self.deliver_routed(key, event)
            except MisroutedCallbackError as error:
                results[position] = error
        return [result for result in results if result is not None]

    def _held_or_stored(self, task_id: str) -> Tracked | None:
        """The task that holds ``task_id`` here, else the one the store knows, held now: a task
        another process started (or took back) joins the batch's commit instead of taking a commit
        of its own after it. None when neither knows the id, or when loading it fails: ``deliver``
        then handles that callback alone, after the batch, its error its own."""
        tracked = self.registry.by_id.get(task_id)
        if tracked is not None:
            return tracked
        try:
            return self.mover.load(task_id)
        except Exception:  # (deliver loads it again, and raises what it raises for this callback)
            return None

    def ours_if_known(self, event: CallbackEvent) -> CallbackEvent:
        """A callback that looks like another product's, but names a stream this Fleet or its store
        knows, is that stream's: read as a stream callback (the docs' field lists are incomplete,
        so a new field must not lose a callback), or refused if it cannot be (a non-integer status,
        say), and so kept as a dead letter. Any other callback is what it looked like."""
        if not isinstance(event, ForeignCallback) or event.task_id is None:
            return event
        if self.registry.by_id.get(event.task_id) is None and self.store.find(event.task_id) is None:
            return event
        if event.stream is None:
            raise CallbackError("data", "not in the shape of a stream callback, for a stream of ours")
        return event.stream

    def _refused(self, payload: Payload, error: CallbackError, *, routed: bool = False) -> None:
        """Keep a payload the parser refused as a dead letter, and say so: a payload of a shape this
        version does not read is not lost, and ``replay_dead_letters`` applies it once one does. A
        store that cannot keep it raises (the receiver answers 500, not 400).

        One that came by a task's own URL (``routed``) is counted and logged, not kept: a replay
        delivers a letter by the task_id it names, as the account-wide URL's callbacks are, and a
        task's URL opens that one task only. Kept, what a leaked URL brought could reach any task
        once a newer parser read it."""
        self.registry.count("malformed")
        body = dead_letter_body(payload)
        if routed:
            _log.warning(
                "streamlife.callback_refused",
                reason=str(error),
                field=error.field,
                size=len(body),
                letter=None,
                by_task_url=True,
            )
            return
        letter = self.store.dead_letter(self.clock.now(), str(error), error.field, body)
        _log.warning(
            "streamlife.callback_refused", reason=str(error), field=error.field, size=len(body), letter=letter
        )

    def _apply_batch(
        self,
        batch: list[tuple[str, Tracked, int, CallbackEvent]],
        results: list[Outcome | CallbackError | None],
    ) -> None:
        # By task (in key order, so two processes' batches lock rows in one order), each task's
        # callbacks in arrival order (the sort is stable). Keyed by the key each item carries, read
        # in C, not by a Python function called for each callback.
        batch.sort(key=_KEY)
        tasks = list({id(tracked): tracked for _, tracked, _, _ in batch}.values())
        outcomes: list[Outcome] = []
        # Held by hand, not with an ExitStack, whose entering and leaving cost a share of a batched
        # callback (bench/RESULTS.md).
        held: list[threading.Lock] = []
        try:
            for tracked in tasks:  # task locks before the store's: the order every path keeps
                tracked.lock.acquire()
                held.append(tracked.lock)
            versions = [tracked.version for tracked in tasks]
            owed = [0 if tracked.notices is None else len(tracked.notices) for tracked in tasks]
            try:
                with self.store.batch():
                    for _, tracked, position, event in batch:
                        results[position] = outcome = self.applier.apply(tracked, event)
                        outcomes.append(outcome)
            except BaseException:
                for tracked, version, before in zip(tasks, versions, owed, strict=True):
                    if tracked.version != version:  # applied here, and not kept by the store
                        # Hooks hear of nothing that was not kept; what other threads applied
                        # before the batch (queued for them) they still hear of.
                        if tracked.notices is not None:
                            del tracked.notices[before:]
                        self.mover.put_back(tracked)
                raise
        finally:
            for lock in held:
                lock.release()
        self.registry.count_all([outcome.kind for outcome in outcomes])
        for tracked in tasks:
            if tracked.notices is not None:
                self.notices.deliver(tracked)

    def deliver(self, event: CallbackEvent) -> Outcome:
        """``Fleet.deliver``: apply one parsed callback, or park it, journaled before this returns."""
        if isinstance(event, ForeignCallback) and event.stream is not None:  # (parsed by a caller)
            event = self.ours_if_known(event)
        if isinstance(event, ForeignCallback):  # another product's result: no task of ours to apply it to
            self.registry.count(OutcomeKind.FOREIGN)
            _log.debug("streamlife.foreign_callback", task_id=event.task_id)
            self.notices.tell_foreign(event)
            return Outcome.FOREIGN
        registry = self.registry
        while True:
            tracked = registry.by_id.get(event.task_id)  # one dict read: atomic, so taken without the lock
            if tracked is None:
                # A task this Fleet does not hold may be in the store: one another process started,
                # or one that ended before a restart (its late callbacks are LATE, not orphans).
                tracked = self.mover.load(event.task_id)
            if tracked is None:
                now = self.clock.now()
                with registry.lock:
                    tracked = registry.by_id.get(event.task_id)  # its start answer may have come meanwhile
                    if tracked is None:
                        ticket = self.orphans.park(event, now)
                if tracked is None:
                    return self.orphans.keep(event, now, ticket)
            with tracked.lock:
                # A start answer names its task before it is journaled; if that write failed, the
                # task let the id go again (it is uncertain): the callback is parked instead.
                holds = registry.by_id.get(event.task_id) is tracked
                if holds:
                    outcome = self.applier.apply(tracked, event)
            if holds:
                break
        registry.count(outcome.kind)  # (a StrEnum member counts under its value's name)
        if tracked.notices is not None:
            self.notices.deliver(tracked)
        return outcome

    # -- by a task's own callback URL ---------------------------------------------------------------
    def deliver_routed(self, key: str, event: CallbackEvent) -> Outcome:
        """``Fleet.handle_callback(payload, key=)``: apply a callback that came by the callback URL
        of task ``key`` to that task, naming its stream if nothing has yet; never park it.

        Raises ``MisroutedCallbackError`` (nothing changes) when no task has the key, or when the
        callback names another stream than the task's, or a stream another task holds, or is no
        stream's result at all (another product's: no hook hears of it). A task that
        may not be named (``pending``, or ended with no task_id: a start whose answer was lost, that
        expired) hands the callback on as the account-wide URL would, to be parked and, if no start
        names its stream, reaped as an orphan: that stream may be billing."""
        if isinstance(event, ForeignCallback):
            if event.stream is None:  # another product's result has no business on a task's URL
                self.registry.count("misrouted")
                raise MisroutedCallbackError(
                    "not a stream's result: a task's own URL takes its stream's only"
                )
            event = event.stream  # a stream callback in a shape not known: this URL says it is ours
        tracked = self._task_of(key)
        if tracked is None:
            raise MisroutedCallbackError("no task of this Fleet has the key its callback URL names")
        task_id = event.task_id
        if tracked.task.task_id is None:  # (named below, or handed on: unless another task holds the id)
            self._check_unclaimed(tracked, task_id)
        named, claimed = False, None
        with tracked.lock:
            unnamed = tracked.task.task_id is None
            try:
                if unnamed:
                    named, claimed = self._name(tracked, task_id)
                known = tracked.task.task_id
                if known is not None and known != task_id:
                    self._misrouted(tracked, task_id)
                outcome = None if known is None else self.applier.apply(tracked, event)
            except BaseException:  # named, then a write failed: the stop asked for goes out all the same
                if unnamed and tracked.task.task_id is not None:
                    self.stopper.fire_asked_while_starting(tracked)
                    self.stopper.timers.take_over_stop(tracked, after=0.0)  # (sent by the next tick)
                raise
            if named:
                self.stopper.fire_asked_while_starting(tracked)
        if outcome is None:  # not to be named: the account-wide URL's way (nobody holds the id,
            return self.deliver(event)  # or an orphan does)
        if claimed is not None:
            self.orphans.unpark(task_id, *claimed)
        self.registry.count(outcome.kind)
        if tracked.notices is not None:
            self.notices.deliver(tracked)
        if named:  # a stop asked for while it started goes out now
            self.stopper.send(tracked)
        return outcome

    def _task_of(self, key: str) -> Tracked | None:
        """The task whose key is ``key``: held here, or read from the store and held."""
        tracked = self.registry.by_key.get(key)  # one dict read: atomic, so taken without the lock
        if tracked is not None:
            return tracked
        row = self.store.row(key)
        return None if row is None else self.mover.hold_kept(row)

    def _check_unclaimed(self, tracked: Tracked, task_id: str) -> None:
        """Refuse a name another task holds, here or in the store (another process's). An orphan's
        does not count: a stream no start named, adopted (this task's, its answer lost, perhaps)
        and being stopped; both tasks then stop it, as when a start answer names an orphan."""
        holder = self.registry.by_id.get(task_id)
        if holder is None:
            row = self.store.find(task_id)
            if row is None or row.key == tracked.task.key:
                return
            holder = self._task_of(row.key)
        if holder is None or holder is tracked or holder.task.adopted:
            return
        self._misrouted(tracked, task_id)

    def _name(
        self, tracked: Tracked, task_id: str
    ) -> tuple[bool, tuple[list[CallbackEvent], list[ParkedCallback] | None] | None]:
        """Name the task's stream ``task_id``, journaled, and apply what was parked for it; whether
        it was named, and what ``Orphans.unpark`` then forgets. Caller holds the task's lock."""
        task, registry = tracked.task, self.registry

        def name_unless_named(task_id: str) -> Outcome:  # (its argument is what the journal keeps)
            # Asked after the ledger's catch-up: another process may have named it meanwhile.
            if task.task_id is not None or task.state not in _NAMEABLE:
                return _NOT_NAMED
            with registry.lock:
                holder = registry.by_id.setdefault(task_id, tracked)
            if holder is not tracked and not holder.task.adopted:
                return _HELD
            return task.named(task_id)

        try:
            outcome = self.mover.fire(tracked, name_unless_named, task_id)
        except BaseException:
            self._let_go(tracked, task_id)
            raise
        if outcome is _HELD:
            self._misrouted(tracked, task_id)
        if outcome is not Outcome.APPLIED:
            self._let_go(tracked, task_id)
            return False, None
        _log.info("streamlife.named", task=task.ref, task_id=task_id, kind=task.kind.value)
        with registry.lock:
            parked = self.orphans.lot.claim(task_id)
        read = self.orphans.apply_parked(tracked, task_id, parked)  # (and other processes' kept ones)
        return True, ([] if parked is None else parked.events, read)

    def _let_go(self, tracked: Tracked, task_id: str) -> None:
        with self.registry.lock:
            if self.registry.by_id.get(task_id) is tracked and tracked.task.task_id != task_id:
                del self.registry.by_id[task_id]

    def _misrouted(self, tracked: Tracked, task_id: str) -> None:
        self.registry.count("misrouted")
        _log.warning(
            "streamlife.callback_misrouted",
            task=tracked.task.ref,
            task_id=task_id,
            named=tracked.task.task_id,
        )
        raise MisroutedCallbackError(
            "the callback names another stream than the task whose callback URL it came by"
        )
