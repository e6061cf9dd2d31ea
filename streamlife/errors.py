"""The exceptions streamlife raises, all under one root so callers can catch them together.

    StreamlifeError
     └── LocalTransitionError   a local call the lifecycle forbids (start twice); the task is untouched

Callbacks and transport results never raise through the lifecycle: an impossible one is
recorded with outcome REJECTED and a reason (see ``streamlife.lifecycle``).
"""

from __future__ import annotations


class StreamlifeError(Exception):
    """The root of every exception streamlife raises on purpose."""


class LocalTransitionError(StreamlifeError):
    """A local call (``start``, ``stop``) that the lifecycle table does not allow in the task's state.

    The task is left exactly as it was: same state, same history.
    """

    def __init__(self, *, task_ref: int, task_id: str | None, trigger: str, state: str) -> None:
        self.task_ref = task_ref
        self.task_id = task_id
        self.trigger = trigger
        self.state = state
        known_as = f"task {task_ref}" if task_id is None else f"task {task_ref} ({task_id})"
        super().__init__(f"cannot {trigger} {known_as}: it is {state}")
