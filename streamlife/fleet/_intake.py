"""Intake: webhook payloads in, each applied to its task or parked, journaled before it returns."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streamlife._callbacks import CallbackEvent, parse_callback
from streamlife._clock import Clock
from streamlife._events import ForeignCallback, Outcome, OutcomeKind
from streamlife._jsontext import dead_letter_body
from streamlife._logging import get_logger
from streamlife._policy import Policy
from streamlife.errors import CallbackError
from streamlife.store import Store

from ._apply import Applier
from ._moves import Mover
from ._notices import Notices
from ._orphans import Orphans
from ._registry import Registry
from ._tracked import Tracked

_log = get_logger()

Payload = bytes | str | Mapping[str, Any]


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

    def parse(self, payload: Payload) -> CallbackEvent:
        """The callback in ``payload``; a payload the parser refuses is kept as a dead letter first."""
        try:
            return self.ours_if_known(parse_callback(payload, statuses=self.policy.statuses))
        except CallbackError as error:
            self._refused(payload, error)
            raise

    def handle_many(self, payloads: Iterable[Payload]) -> list[Outcome | CallbackError]:
        """``Fleet.handle_callbacks``: the batch's tasks applied under one store commit."""
        results: list[Outcome | CallbackError | None] = []
        held: list[tuple[Tracked, int, CallbackEvent]] = []
        others: list[tuple[int, CallbackEvent]] = []
        for payload in payloads:
            try:
                event = self.parse(payload)
            except CallbackError as error:
                results.append(error)
                continue
            tracked = None if isinstance(event, ForeignCallback) else self.registry.by_id.get(event.task_id)
            if tracked is None:
                others.append((len(results), event))
            else:
                held.append((tracked, len(results), event))
            results.append(None)
        if held:
            self._apply_batch(held, results)
        for position, event in others:
            results[position] = self.deliver(event)
        return [result for result in results if result is not None]

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

    def _refused(self, payload: Payload, error: CallbackError) -> None:
        """Keep a payload the parser refused as a dead letter, and say so: a payload of a shape this
        version does not read is not lost, and ``replay_dead_letters`` applies it once one does. A
        store that cannot keep it raises (the receiver answers 500, not 400)."""
        self.registry.count("malformed")
        body = dead_letter_body(payload)
        letter = self.store.dead_letter(self.clock.now(), str(error), error.field, body)
        _log.warning(
            "streamlife.callback_refused", reason=str(error), field=error.field, size=len(body), letter=letter
        )

    def _apply_batch(
        self, batch: list[tuple[Tracked, int, CallbackEvent]], results: list[Outcome | CallbackError | None]
    ) -> None:
        # By task (in key order, so two processes' batches lock rows in one order), each task's
        # callbacks in arrival order (the sort is stable).
        batch.sort(key=lambda item: item[0].task.key or "")
        tasks = list({id(tracked): tracked for tracked, _, _ in batch}.values())
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
                    for tracked, position, event in batch:
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
