"""What streamlife needs from the outside world: start a stream, stop one, let go of resources.

A transport maps every failure to ``streamlife.errors.TransportError`` at its boundary. The
start contract is the one that matters for money: ``start`` raises ``NotSentError`` only when
the request provably never left, so that only then may anyone retry it. Everything else that
leaves the outcome open is ``OutcomeUnknownError`` (or ``ServerError``): the stream may exist.
That includes an answer that cannot be read (``MalformedAnswerError``), a redirect, never
followed (``RedirectError``), and a request past its deadline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from streamlife._events import StartResult, StopResult, StreamKind


class Transport(Protocol):
    """The memories.ai stream API as streamlife uses it; ``HttpTransport`` is the real one."""

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        """Start a stream; return its task_id. Never retried once the request may have left."""
        ...

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        """Stop a stream. Raises ``TaskNotFoundError`` when the service no longer knows it.

        ``within``: give up (raising the last error) after this many seconds, retries included,
        so that a caller's bounded stop stays bounded; None keeps the transport's own deadline.
        """
        ...

    def close(self) -> None:
        """Release connections. The transport is not used afterwards."""
        ...
