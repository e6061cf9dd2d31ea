"""streamlife: memories.ai live streams as explicit state machines.

Start streams, stop them for certain, apply every webhook callback once and in order, survive
restarts, and simulate the whole lifecycle, faults included, with no network.
"""

from .callbacks import DEFAULT_STATUSES, PROVIDER_ENDED, CallbackEvent, StatusTable, parse_callback
from .clock import Clock, ManualClock, SystemClock
from .errors import (
    CallbackError,
    LiveCapError,
    LocalTransitionError,
    ParkingFullError,
    StopAllError,
    StreamlifeError,
    UnknownTaskError,
)
from .events import (
    ForeignCallback,
    Moderation,
    Outcome,
    OutcomeKind,
    ProviderEvent,
    Segment,
    StatusCallback,
    StatusMeaning,
    StreamKind,
)
from .fleet import Fleet, FleetStats, Orphan
from .history import History, HistoryEntry
from .lifecycle import TERMINAL, Source, TaskState
from .policy import Policy
from .task import StreamTask

__all__ = [
    "DEFAULT_STATUSES",
    "PROVIDER_ENDED",
    "TERMINAL",
    "CallbackError",
    "CallbackEvent",
    "Clock",
    "Fleet",
    "FleetStats",
    "ForeignCallback",
    "History",
    "HistoryEntry",
    "LiveCapError",
    "LocalTransitionError",
    "ManualClock",
    "Moderation",
    "Orphan",
    "Outcome",
    "OutcomeKind",
    "ParkingFullError",
    "Policy",
    "ProviderEvent",
    "Segment",
    "Source",
    "StatusCallback",
    "StatusMeaning",
    "StatusTable",
    "StopAllError",
    "StreamKind",
    "StreamTask",
    "StreamlifeError",
    "SystemClock",
    "TaskState",
    "UnknownTaskError",
    "parse_callback",
]
