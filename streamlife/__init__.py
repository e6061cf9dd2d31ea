"""streamlife: memories.ai live streams as explicit state machines.

Start streams, stop them for certain, apply every webhook callback once and in order, survive
restarts, and simulate the whole lifecycle, faults included, with no network.

The public API is what this package exports, and the public modules: ``errors`` (the exception
tree), ``lifecycle`` (the table), ``protocol`` (memories.ai's shapes and their builders),
``fleet``, ``aio`` (``AsyncFleet``, for asyncio applications), ``hooks`` (the hooks' shapes, as
Protocols), ``webhook``, ``deadletter``, ``testing`` (the pytest plugin), and the ``sim``,
``store`` and ``transport`` packages. Modules whose names start with an underscore are internal:
they may change in any release.
"""

from ._billing import Exposure, Rates
from ._callbacks import DEFAULT_STATUSES, PROVIDER_ENDED, CallbackEvent, StatusTable, parse_callback
from ._clock import Clock, ManualClock, SystemClock
from ._events import (
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
from ._history import History, HistoryEntry
from ._policy import Policy
from ._task import StreamTask
from ._task_urls import CallbackUrls
from ._transcript import Transcript
from .aio import AsyncFleet
from .errors import (
    CallbackError,
    LiveCapError,
    LocalTransitionError,
    MisroutedCallbackError,
    ParkingFullError,
    StopAllError,
    StreamlifeError,
    UnknownTaskError,
)
from .fleet import Fleet, FleetStats, Orphan
from .hooks import (
    AsyncForeignHook,
    AsyncOrphanHook,
    AsyncSegmentHook,
    AsyncTransitionHook,
    ForeignHook,
    OrphanHook,
    SegmentHook,
    TransitionHook,
)
from .lifecycle import TERMINAL, Source, TaskState

__all__ = [
    "DEFAULT_STATUSES",
    "PROVIDER_ENDED",
    "TERMINAL",
    "AsyncFleet",
    "AsyncForeignHook",
    "AsyncOrphanHook",
    "AsyncSegmentHook",
    "AsyncTransitionHook",
    "CallbackError",
    "CallbackEvent",
    "CallbackUrls",
    "Clock",
    "Exposure",
    "Fleet",
    "FleetStats",
    "ForeignCallback",
    "ForeignHook",
    "History",
    "HistoryEntry",
    "LiveCapError",
    "LocalTransitionError",
    "ManualClock",
    "MisroutedCallbackError",
    "Moderation",
    "Orphan",
    "OrphanHook",
    "Outcome",
    "OutcomeKind",
    "ParkingFullError",
    "Policy",
    "ProviderEvent",
    "Rates",
    "Segment",
    "SegmentHook",
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
    "Transcript",
    "TransitionHook",
    "UnknownTaskError",
    "parse_callback",
]
