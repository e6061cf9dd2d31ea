"""Stopper: sends the stops a task owes, and retries them until one is acknowledged.

A stop is safe to repeat, and a stream left running bills, so the stopper errs towards sending. A
failed stop is journaled with the service's Retry-After and retried after a backoff
(``Timers.arm_stop_retry``); a stop the store could not journal is still honoured here (``want``)
and sent unjournaled; an orphan whose product is a guess is stopped on one path, then the other.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from streamlife._clock import Clock
from streamlife._events import Outcome, StreamKind
from streamlife._logging import get_logger
from streamlife._policy import Policy
from streamlife._task import StreamTask
from streamlife.errors import RecordedError, TaskNotFoundError, TransportError
from streamlife.lifecycle import AUTO_STOPS, STOP_ANSWER_FINAL, STOP_DUE, AutoStop, StopReason, TaskState
from streamlife.transport.base import Transport

from ._moves import Mover
from ._notices import Notices
from ._registry import Registry
from ._timers import Timers
from ._tracked import Tracked
from ._workers import Backoff, Workers

_log = get_logger()


@dataclass(slots=True, eq=False)
class Stopper:
    transport: Transport
    mover: Mover
    timers: Timers
    notices: Notices
    registry: Registry
    workers: Workers
    backoff: Backoff
    clock: Clock
    policy: Policy

    # -- a stop the store could not keep -----------------------------------------------------------
    def want(self, tracked: Tracked, *reason: StopReason) -> None:
        """Remember a stop the store could not journal. Once the task has a task_id, a stop retry
        journals it (or sends it unjournaled again), so that it is never dropped for want of time.
        The task may be stale (ahead of its store), so its state in memory decides nothing here."""
        tracked.stop_wanted = reason
        if tracked.task.task_id is not None and not tracked.task.terminal:
            self.timers.arm_stop_retry(tracked, self.backoff.wait(1, None))

    def fire_asked_while_starting(self, tracked: Tracked) -> None:
        """Fire the stop asked for while the task started (journaled, or only wanted), once its
        start answer is journaled. Caller holds the task's lock."""
        if tracked.task.stop_requested or tracked.stop_wanted is not None:
            self.fire(tracked, *(tracked.stop_wanted or ()))

    def fire(self, tracked: Tracked, *reason: StopReason) -> None:
        """Fire a running task's stop; if the store refuses it, want it and let the error go on.
        Caller holds the task's lock."""
        if tracked.task.state is not TaskState.RUNNING:
            return
        try:
            self.mover.fire(tracked, tracked.task.stop, *reason)
        except BaseException:
            self.want(tracked, *reason)
            raise
        tracked.stop_wanted = None

    def journal_wanted(self, tracked: Tracked) -> None:
        """Journal a stop the store refused before, now that a retry is due (``Mover.fire`` first
        puts back a task left ahead of its store). While the store still refuses it, the stop goes
        out unjournaled again, and so on with the stop backoff: a stream left running bills."""
        task, reason = tracked.task, tracked.stop_wanted or ()
        try:
            with tracked.lock:
                if not task.terminal:
                    self.mover.fire(tracked, task.stop, *reason)
            self.notices.deliver(tracked)
        except Exception:
            _log.exception("streamlife.store_failed", task=task.ref, key=task.key)
            self.timers.arm_stop_retry(tracked, self.backoff.wait(task.stop_failures + 1, None))
            if task.task_id is not None and not task.terminal:
                self.send_unjournaled(task.task_id, (task.kind,), None)
            return
        tracked.stop_wanted = None

    def send_unjournaled(self, task_id: str, kinds: tuple[StreamKind, ...], give_up_at: float | None) -> None:
        """Stop a stream whose stop the journal could not keep: one left running bills, and stop is
        safe to repeat. The answer is logged, not applied; the status-14 callback settles the task.
        ``kinds``: the paths to try in turn, for an orphan whose product is a guess."""
        within = self.within(give_up_at)
        if within <= 0:
            _log.warning("streamlife.unjournaled_stop", task_id=task_id, answer="no_time")
            return
        answer = "not_found"
        for kind in kinds:
            self.registry.count("stops_sent")
            try:
                self.transport.stop(kind, task_id, within=within)
            except TaskNotFoundError:
                continue
            except Exception as error:
                answer = type(error).__name__
                break
            answer = "ok"
            break
        _log.warning("streamlife.unjournaled_stop", task_id=task_id, answer=answer)

    # -- sending -----------------------------------------------------------------------------------
    def send_soon(self, tracked: Tracked, give_up_at: float | None, *, asked: bool = False) -> None:
        """Send the stop from a worker thread, or on this one when the policy keeps no workers."""
        if self.workers.threaded:
            self.workers.submit(self.send_logged, tracked, give_up_at, asked)
        else:
            self.send(tracked, give_up_at, asked=asked)

    def send_logged(self, tracked: Tracked, give_up_at: float | None = None, asked: bool = False) -> None:
        """``send`` for a worker thread: what it raises is logged (it is already on the task)."""
        try:
            self.send(tracked, give_up_at, asked=asked)
        except Exception:
            _log.exception("streamlife.stop_failed", task=tracked.task.ref, task_id=tracked.task.task_id)

    def confirm_end(self, tracked: Tracked) -> None:
        """Send the stop that confirms an end the task only inferred: the stream may still bill, and
        stop is safe to call on a stream that has already ended."""
        task = tracked.task
        _log.info("streamlife.confirming_end", task=task.ref, task_id=task.task_id, status=task.end_status)
        self.send_soon(tracked, None)

    def send(self, tracked: Tracked, give_up_at: float | None = None, *, asked: bool = False) -> None:
        """Send the task's stop unless none is due: not stopping, already acknowledged, a request in
        flight, or a retry armed for later (that retry, once due, sends it). A stop ``asked`` for by
        the caller goes out at once all the same, unless the service asked for the wait
        (Retry-After, journaled with the failed stop and capped by ``Policy.max_retry_after``):
        backoff spares the service, a caller's stop is worth a request."""
        task = tracked.task
        with tracked.lock:
            if task.state not in STOP_DUE or task.stop_acknowledged or tracked.stop_in_flight:
                return
            if not self.timers.stop_may_go(tracked, asked=asked):
                return
            within = self.within(give_up_at)
            if within <= 0:  # no time left for a request: the next tick sends it
                self.timers.arm_stop_retry(tracked, 0.0)
                return
            tracked.stop_in_flight = True
            kinds = (task.kind, other_kind(task.kind)) if tracked.kind_guessed else (task.kind,)
            task_id = task.task_id
        assert task_id is not None, "a stopping task was running, so it has a task_id"
        landed, failure, final = None, None, False
        try:
            for kind in kinds:  # an orphan of unsure product: "not found" on one path, try the other
                self.registry.count("stops_sent")
                try:
                    result = self.transport.stop(kind, task_id, within=within)
                except TaskNotFoundError:
                    continue
                landed, final = kind, result.final and kind in STOP_ANSWER_FINAL
                break
        except BaseException as error:  # recorded, and retried; anything but a TransportError re-raised
            failure = error
        with tracked.lock:
            tracked.stop_in_flight = False
            try:
                self._record(tracked, landed, failure, final=final)
            except BaseException:
                # The answer could not be journaled: the task is as stored, stopping and
                # unacknowledged. Send the stop again later (it is safe to repeat), then let the
                # error go on.
                self.timers.arm_stop_retry(tracked, self.backoff.wait(task.stop_failures + 1, None))
                raise
        self.notices.deliver(tracked)
        if failure is not None and not isinstance(failure, TransportError | RecordedError):
            raise failure

    def _record(
        self,
        tracked: Tracked,
        landed: StreamKind | None,
        failure: BaseException | None,
        *,
        final: bool = False,
    ) -> None:
        """Fire what the stop's answer says. Caller holds the task's lock. ``final``: the answer
        says the stream stopped, for a product whose stop answer settles the task
        (``lifecycle.KIND_RULES``)."""
        task, fire = tracked.task, self.mover.fire
        if failure is not None:
            retry_after = self.backoff.retry_after(failure)
            if retry_after:  # journaled with the failure: every process, and a restart, waits too
                held_back_until = self.clock.now() + retry_after
                failure = RecordedError(RecordedError.text_of(failure), not_before=held_back_until)
            if fire(tracked, task.stop_error, failure) is Outcome.APPLIED:
                self.registry.count("stop_failures")
                self.timers.arm_stop_retry(tracked, self.backoff.wait(task.stop_failures, retry_after))
        elif landed is None:
            fire(tracked, task.stop_not_found)
        elif final and not tracked.kind_guessed:
            fire(tracked, task.stop_confirmed)
        elif not tracked.kind_guessed:
            fire(tracked, task.stop_ok)
        else:
            # An orphan whose product was a guess: the path that took the stop settles it,
            # journaled (another process's copy, or a rebuild, learns it by replay), with a row that
            # says it is no guess. If that is not kept, the task is put back as stored, a guess
            # still: a stop retried tries both paths again.
            tracked.kind_guessed = False
            try:
                fire(tracked, task.stop_ok, landed)
            finally:
                tracked.kind_guessed = not (task.kind is landed and task.stop_acknowledged)

    def within(self, give_up_at: float | None) -> float:
        """How long one stop may take, the transport's retries included: ``Policy.stop_timeout``, or
        less to end by ``give_up_at``. The cap keeps a slow answer for some streams from holding
        every worker while the stops of the others wait behind them."""
        timeout = self.policy.stop_timeout
        return timeout if give_up_at is None else min(timeout, give_up_at - time.monotonic())


def other_kind(kind: StreamKind) -> StreamKind:
    """The other product: the second path to try for an orphan whose product is a guess."""
    return StreamKind.VIDEO if kind is StreamKind.AUDIO else StreamKind.AUDIO


def due_stop(
    task: StreamTask, policy: Policy, rules: Iterable[AutoStop] = AUTO_STOPS.values()
) -> tuple[StopReason, ...] | None:
    """The argument of the stop the Fleet owes a running task of its own accord, by the first of
    ``rules`` (``lifecycle.AUTO_STOPS``) that the task's facts and the policy call for; None if none
    does."""
    for rule in rules:
        switched_on = rule.switch is None or task.kind in rule.always_for or getattr(policy, rule.switch)
        if getattr(task, rule.fact) and switched_on:
            return () if rule.reason is None else (rule.reason,)
    return None
