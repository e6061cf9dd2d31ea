"""Recovery: a restarted Fleet takes back the tasks the store holds, and the callbacks it kept.

What a task found in the store owes depends on its state (``lifecycle.ON_RECOVERY``): the process
that answered for it is gone. A start in flight may have made a stream (uncertain); a start refused
for now cannot be sent again (its body is not stored); a stop decided but not journaled is decided
again; an unacknowledged stop is taken over (``Mover.hold``). A running task whose process decided
to stop it (``lifecycle.AUTO_STOPS``), and ended before that stop was journaled, is stopped now.
"""

from __future__ import annotations

from collections.abc import Callable

from streamlife._events import Outcome
from streamlife._logging import get_logger
from streamlife._policy import Policy
from streamlife._task import StreamTask
from streamlife.errors import RecordedError
from streamlife.lifecycle import ON_RECOVERY, TaskState
from streamlife.store import Store, TaskRow

from ._moves import Mover
from ._notices import Notices
from ._orphans import Orphans
from ._registry import Registry
from ._stopper import Stopper, due_stop
from ._tracked import Tracked

_log = get_logger()


def recover(
    store: Store,
    registry: Registry,
    mover: Mover,
    stopper: Stopper,
    orphans: Orphans,
    notices: Notices,
    policy: Policy,
    only: Callable[[TaskRow], bool] | None = None,
    parked: bool | Callable[[str], bool] = True,
) -> list[StreamTask]:
    """``Fleet.recover``: the tasks taken back."""
    taken = []
    for row in store.rows():
        if only is not None and not only(row):
            continue
        with registry.lock:
            held = row.key in registry.by_key
        if held:
            continue
        tracked = mover.hold(row)
        with tracked.lock:
            reap = settle_owed(tracked, mover, policy)
        notices.deliver(tracked)  # (an unacknowledged stop was taken over by Mover.hold)
        if reap:
            stopper.send_soon(tracked, None)
        taken.append(tracked.task)
    if parked:  # (a function is true too)
        orphans.recover(only=parked if callable(parked) else None)
    _log.info("streamlife.recovered", tasks=len(taken))
    return taken


def settle_owed(tracked: Tracked, mover: Mover, policy: Policy) -> bool:
    """Give a task whose holder has gone what it owes by its state (``lifecycle.ON_RECOVERY``),
    and the stop its holder decided on and may not have journaled (``lifecycle.AUTO_STOPS``):
    whether that stop is now to be sent. Caller holds the task's lock."""
    task = tracked.task
    for trigger, why in ON_RECOVERY.get(task.state, ()):
        mover.fire(tracked, getattr(task, trigger), *(() if why is None else (RecordedError(why),)))
    if task.state is TaskState.RUNNING and (due := due_stop(task, policy)) is not None:
        return mover.fire(tracked, task.stop, *due) is Outcome.APPLIED
    return False
