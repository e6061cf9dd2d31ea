"""Recovery: a restarted Fleet takes back the tasks the store holds, and the callbacks it kept.

What a task found in the store owes depends on its state: the process that answered for it is
gone. A start in flight may have made a stream (uncertain); a start refused for now cannot be sent
again (its body is not stored); a stop decided but not journaled is decided again; an
unacknowledged stop is taken over (``Mover.hold``). A running task whose process decided to stop
it (``lifecycle.AUTO_STOPS``), and ended before that stop was journaled, is stopped now.
"""

from __future__ import annotations

from typing import Final

import structlog

from streamlife._events import Outcome
from streamlife._policy import Policy
from streamlife._task import StreamTask
from streamlife.errors import RecordedError
from streamlife.lifecycle import TaskState
from streamlife.store import Store

from ._moves import Mover
from ._notices import Notices
from ._orphans import Orphans
from ._registry import Registry
from ._stopper import Stopper, due_stop

_log = structlog.get_logger("streamlife")

# Why a task recovered in ``starting`` is uncertain: its start request may have left before the crash.
INTERRUPTED_START: Final = "the process ended while the start request was in flight"
# Why a start refused for now, found in the store after a restart, failed: nothing was created,
# and the start body (which the store does not keep) was lost with the process.
LOST_START_BODY: Final = "the process that was to send the start again ended; its start body is not stored"


def recover(
    store: Store,
    registry: Registry,
    mover: Mover,
    stopper: Stopper,
    orphans: Orphans,
    notices: Notices,
    policy: Policy,
) -> list[StreamTask]:
    """``Fleet.recover``: the tasks taken back."""
    taken = []
    fire = mover.fire
    for row in store.rows():
        with registry.lock:
            held = row.key in registry.by_key
        if held:
            continue
        tracked = mover.hold(row)
        task = tracked.task
        reap = False
        with tracked.lock:
            if task.state is TaskState.STARTING:
                fire(tracked, task.start_unknown, RecordedError(INTERRUPTED_START))
            elif task.state is TaskState.PENDING:  # a start refused for now, owed by the process
                # that ended: nothing was created, and its body died with it (it is not stored).
                fire(tracked, task.start)
                fire(tracked, task.start_rejected, RecordedError(LOST_START_BODY))
            elif task.state is TaskState.RUNNING and (due := due_stop(task, policy)) is not None:
                reap = fire(tracked, task.stop, *due) is Outcome.APPLIED
        notices.deliver(tracked)  # (an unacknowledged stop was taken over by Mover.hold)
        if reap:
            stopper.send_soon(tracked, None)
        taken.append(task)
    orphans.recover()
    _log.info("streamlife.recovered", tasks=len(taken))
    return taken
