"""The simulator's records: its modes and stand-in statuses, a stream, an answer, a delivery."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

from streamlife._events import StreamKind
from streamlife.protocol import Payload

SimMode: TypeAlias = Literal["segments", "passthrough"]
SIM_MODES: Final[tuple[SimMode, ...]] = ("segments", "passthrough")
SOURCE_ENDED: Final = 12  # undocumented: the simulator's stand-in for "the service ended it"
CREDIT_EXHAUSTED: Final = 13  # undocumented: the simulator's stand-in for "the stream ran out of credit"


@dataclass(frozen=True, slots=True)
class Answer:
    """What the API answered. ``lost`` answers never reach the client (the stream exists anyway)."""

    status: int
    body: Payload | None
    headers: Mapping[str, str] = field(default_factory=dict)
    lost: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """One callback delivered to the sinks. ``final_of`` is the segment index it is the final of,
    as its payload names it; None for anything else (and for an ElevenLabs transcript, which names
    no index)."""

    at: float
    task_id: str
    payload: Payload
    final_of: int | None = None
    # Where the service posts it: the ``callback`` URL its start named (Live Video Understanding
    # posts there, not to the account's webhook); None: the account's webhook.
    callback: str | None = None


@dataclass(frozen=True, slots=True)
class StopRequest:
    """One stop the service was asked for, and the HTTP status it answered."""

    at: float
    task_id: str
    status: int
    # The status in the answer's body, for Live Video Understanding, whose answers all come on
    # HTTP 200 and say in the body what happened (14 stopped, -1 not found, 5000 an error).
    body_status: int | None = None


@dataclass(slots=True)
class SimStream:
    task_id: str
    kind: StreamKind
    started_at: float
    next_index: int = 0
    ended_at: float | None = None
    end_status: int | None = None
    named: bool = True  # its start answer reached the client
    quiet: bool = False  # stalled: it sends no more segments, and bills on
    provider: str | None = None  # the start body's ``provider`` (audio)
    format_turns: bool = False  # the start body's ``format_turns``: AssemblyAI sends formatted turns too
    fps: int = 1  # the start body's ``fps`` (video)
    passthrough: bool = False  # an audio stream in pass-through mode: it forwards its provider's messages
    callback: str | None = None  # the start body's ``callback`` (understand): where its results go

    @property
    def live(self) -> bool:
        return self.ended_at is None
