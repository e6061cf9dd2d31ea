"""Applier: one parsed callback at the task it names, as the trigger ``lifecycle`` maps it to."""

from __future__ import annotations

from dataclasses import dataclass

from streamlife._callbacks import CallbackEvent
from streamlife._clock import Clock
from streamlife._events import Outcome, Segment, StatusCallback, StatusMeaning
from streamlife._logging import get_logger
from streamlife._policy import Policy
from streamlife.lifecycle import STATUS_TRIGGERS, TERMINAL

from ._moves import Mover
from ._notices import Notices
from ._tracked import Tracked

_log = get_logger()


@dataclass(slots=True, eq=False)
class Applier:
    mover: Mover
    notices: Notices
    clock: Clock
    policy: Policy

    def apply(self, tracked: Tracked, event: CallbackEvent) -> Outcome:
        """One callback at its task; the caller holds the task's lock."""
        heard, version = tracked.task.state not in TERMINAL, tracked.version
        if heard:
            tracked.last_heard = self.clock.now()  # before the fire: it may re-arm the silence timer
        try:
            return self._apply(tracked, event)
        finally:
            if heard and tracked.version == version:  # heard, and the store's row did not move
                tracked.heard_unjournaled = True

    def _apply(self, tracked: Tracked, event: CallbackEvent) -> Outcome:
        task = tracked.task
        if isinstance(event, Segment):
            outcome = self.mover.fire(tracked, task.segment, event)
            if outcome is Outcome.APPLIED and self.notices.segment:
                # (A segment forwarded with no index is handed over with the number it took.)
                numbered = event if event.index is not None else task.transcript.numbered(event)
                self.notices.queue(tracked, self.notices.segment, (task, numbered))
            return outcome
        if isinstance(event, StatusCallback):
            meaning = event.meaning or self.policy.statuses.meaning(event.status)
            trigger = STATUS_TRIGGERS.get(meaning)
            if trigger is not None:
                outcome = self.mover.fire(tracked, getattr(task, trigger), event)
                if meaning is StatusMeaning.UNKNOWN and outcome is Outcome.APPLIED:
                    _log.warning(
                        "streamlife.unknown_status", task=task.ref, task_id=task.task_id, status=event.status
                    )
                return outcome
        # A provider message, or a status declared ONGOING: news that the stream lives, no more.
        return Outcome.LATE if task.terminal else Outcome.APPLIED
