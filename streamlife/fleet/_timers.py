"""Timers: every task's deadlines in one heap, armed from the lifecycle's ``DEADLINES`` table.

After every event that may have moved a task, ``sync`` arms the deadlines its state needs and
cancels the rest, so a stale deadline never fires. A stop retry is armed apart: when a stop fails,
or when a task is found owing a stop that nobody here has sent. What a deadline does when it comes
due is ``_ticker``'s.

The same times go to the store with each row the task's events write (``due``), so that another
process can tell when this one should have written the task next and has not (``_takeover``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from streamlife._clock import Clock
from streamlife._deadlines import Deadlines
from streamlife._logging import get_logger
from streamlife._policy import Policy
from streamlife._task import StreamTask
from streamlife.lifecycle import STOP_DUE, TERMINAL, Deadline, TaskState, deadlines_for
from streamlife.store import NO_DUE, Due

from ._registry import Registry
from ._tracked import NO_DEADLINES, Tracked
from ._workers import longest_wait

_log = get_logger()


@dataclass(slots=True, eq=False)
class Timers:
    registry: Registry  # its lock guards the heap
    clock: Clock
    policy: Policy
    _deadlines: Deadlines[int] = field(init=False, default_factory=Deadlines)
    # Requests this process sends before a stop decided now (``Workers.waiting``): that stop's
    # answer comes so many turns of ``Policy.stop_concurrency`` requests later.
    requests_ahead: Callable[[], int] = field(default=lambda: 0)

    def limit(self, task: StreamTask) -> float | None:
        """The stream's cost ceiling in seconds: its start's own, else the policy's, else None."""
        return task.max_duration if task.max_duration is not None else self.policy.max_duration

    def wanted(self, task: StreamTask) -> frozenset[Deadline]:
        """The state-driven deadlines the task needs now (``lifecycle.DEADLINES``)."""
        return deadlines_for(
            task.state,
            stalled=task.stalled,
            has_limit=self.limit(task) is not None,
            stop_acknowledged=task.stop_acknowledged,
            holds_start_body=task.params is not None,
        )

    def sync(self, tracked: Tracked, since: float | None = None) -> None:
        """Arm the deadlines the task's state needs, cancel the rest. ``since``: when the state's
        deadlines count from (the task's last event, for a task taken over from another process);
        None: now. Caller holds the task's lock."""
        task = tracked.task
        self.registry.recount(tracked)  # (Policy.max_live's count follows the state, as timers do)
        want = self.wanted(task)
        if want is tracked.timers and task.state not in TERMINAL:  # (each set is one shared object)
            return
        now, ref, policy = self.clock.now(), task.ref, self.policy
        with self.registry.lock:
            if task.terminal:
                self._deadlines.cancel(ref)  # every kind, a pending stop retry included
                if policy.keep_terminal is not None:  # counted from its last event here
                    self._deadlines.arm(ref, Deadline.FORGET, now + policy.keep_terminal)
            for kind in tracked.timers - want:
                self._deadlines.cancel(ref, kind)
            for kind in want - tracked.timers:
                self._deadlines.arm(ref, kind, self._when(tracked, kind, now if since is None else since))
        tracked.timers = want

    def due(self, tracked: Tracked) -> Due:
        """When the task next needs this process, for the store (see ``Due``), the grace of
        ``Policy.takeover_after`` added: its deadlines' times, and for a state whose next event is
        a request's answer, the latest that answer can come. Caller holds the task's lock."""
        task = tracked.task
        if task.state in TERMINAL:
            return NO_DUE
        policy, now = self.policy, self.clock.now()
        want = self.wanted(task)
        times = [self._when(tracked, kind, now) for kind in want if kind is not Deadline.SILENCE]
        if task.state is TaskState.STARTING:  # its answer comes within park_ttl (see Policy.park_ttl)
            times.append(now + policy.park_ttl)
        elif task.state in STOP_DUE and not task.stop_acknowledged:  # sent, or to be sent again
            retry = max(now + longest_wait(policy, task.stop_failures), self.held_back_until(tracked))
            turns = 1 + self.requests_ahead() // max(policy.stop_concurrency, 1)
            times.append(retry + policy.stop_timeout * turns)
        grace = policy.takeover_after
        quiet = policy.silence_after + grace if Deadline.SILENCE in want else None
        return Due(min(times) + grace if times else None, quiet)

    def _when(self, tracked: Tracked, kind: Deadline, since: float) -> float:
        """When a state-driven deadline of the task falls, its state entered at ``since``."""
        task, policy = tracked.task, self.policy
        if kind is Deadline.SILENCE:
            return tracked.last_heard + policy.silence_after
        if kind is Deadline.FINAL_CALLBACK:
            return since + policy.final_callback_wait
        if kind is Deadline.START_RETRY:
            return max(since, tracked.start_not_before)
        if kind is Deadline.MAX_DURATION:
            limit = self.limit(task)
            assert task.started_at is not None, "a running task's start answer came"
            assert limit is not None, "only a task with a ceiling arms it"
            return task.started_at + limit
        return since + policy.uncertain_ttl

    def forget(self, tracked: Tracked) -> None:
        """Cancel every deadline of a task this process lets go."""
        with self.registry.lock:
            self._deadlines.cancel(tracked.task.ref)
        tracked.timers = NO_DEADLINES

    def rearm(self, tracked: Tracked, kind: Deadline, after: float) -> None:
        """Arm a state-driven deadline again, ``after`` seconds from now, if the task still needs it:
        its handling failed, and it is tried again rather than never. Caller holds the task's lock."""
        if kind in self.wanted(tracked.task):
            tracked.timers |= {kind}
            with self.registry.lock:
                self._deadlines.arm(tracked.task.ref, kind, self.clock.now() + after)

    def arm_stop_retry(self, tracked: Tracked, after: float) -> None:
        task = tracked.task
        _log.info(
            "streamlife.stop_retry",
            task=task.ref,
            task_id=task.task_id,
            failures=task.stop_failures,
            wait=round(after, 3),
        )
        with self.registry.lock:
            self._deadlines.arm(task.ref, Deadline.STOP_RETRY, self.clock.now() + after)

    def stop_may_go(self, tracked: Tracked, *, asked: bool) -> bool:
        """Whether the task's stop may go out now: not while the service's Retry-After holds it
        back (a retry is armed for then), nor while a retry is armed for later, unless the caller
        ``asked`` for this stop (the armed retry gives way to it). Caller holds the task's lock."""
        held_back_until = self.held_back_until(tracked)
        ref = tracked.task.ref
        with self.registry.lock:
            retry_armed = self._deadlines.when(ref, Deadline.STOP_RETRY) is not None
            if self.clock.now() < held_back_until:  # (another process's failure too: its wait holds)
                if not retry_armed:
                    self._deadlines.arm(ref, Deadline.STOP_RETRY, held_back_until)
                return False
            if retry_armed and asked:
                self._deadlines.cancel(ref, Deadline.STOP_RETRY)
                return True
        return not retry_armed

    def held_back_until(self, tracked: Tracked) -> float:
        """No stop before this: the journaled wait of the task's last failed stop, capped again by
        ``Policy.max_retry_after`` from when this process first read it, since the process that
        wrote it may read another clock (one a day fast, say). Caller holds the task's lock."""
        journaled = tracked.task.stop_not_before
        if journaled is None:
            return 0.0
        if tracked.held_back is None or tracked.held_back[0] != journaled:
            tracked.held_back = (journaled, min(journaled, self.clock.now() + self.policy.max_retry_after))
        return tracked.held_back[1]

    def take_over_stop(self, tracked: Tracked, *, after: float) -> None:
        """A task found stopping with no acknowledged stop, in the store (after a restart, or put
        there by another process): its stop may have failed where nobody retries it now, so this
        Fleet retries it too (stop is safe to repeat). Caller holds the task's lock."""
        task = tracked.task
        if task.state not in STOP_DUE or task.stop_acknowledged or tracked.stop_in_flight:
            return
        when = max(self.clock.now() + after, self.held_back_until(tracked))  # (the service's wait holds)
        with self.registry.lock:
            if self._deadlines.when(task.ref, Deadline.STOP_RETRY) is None:
                self._deadlines.arm(task.ref, Deadline.STOP_RETRY, when)

    def pop_due(self, now: float) -> list[tuple[float, int, Deadline]]:
        """Caller holds the registry's lock."""
        return [(at, ref, Deadline(kind)) for at, ref, kind in self._deadlines.pop_due(now)]

    def next_at(self) -> float | None:
        """Caller holds the registry's lock."""
        return self._deadlines.next_at()
