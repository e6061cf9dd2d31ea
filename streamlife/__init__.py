"""streamlife: memories.ai live streams as explicit state machines.

Start streams, stop them for certain, apply every webhook callback once and in order, survive
restarts, and simulate the whole lifecycle, faults included, with no network.
"""

from .clock import Clock, ManualClock, SystemClock
from .errors import CallbackError, LocalTransitionError, StreamlifeError
from .events import Outcome, OutcomeKind, Segment, StatusCallback, StreamKind
from .lifecycle import TERMINAL, Source, TaskState
from .task import HistoryEntry, StreamTask

__all__ = [
    "TERMINAL",
    "CallbackError",
    "Clock",
    "HistoryEntry",
    "LocalTransitionError",
    "ManualClock",
    "Outcome",
    "OutcomeKind",
    "Segment",
    "Source",
    "StatusCallback",
    "StreamKind",
    "StreamTask",
    "StreamlifeError",
    "SystemClock",
    "TaskState",
]
