"""SimTransport: the Transport protocol over a SimulatedService, with no sockets.

Answers are read by the same ``read_answer`` as HttpTransport's, so a simulated run meets the
same typed errors as a real one. A start answer the service marks as lost (the
``start_timeout_created`` fault) raises ``OutcomeUnknownError``: the stream exists, unnamed.
There are no retries here: in a simulated run each failed stop reaches the caller, which is
where the stop policy is exercised.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamlife._events import StartResult, StopResult, StreamKind
from streamlife.errors import OutcomeUnknownError
from streamlife.protocol import PATHS, stop_request
from streamlife.transport._answers import read_answer, start_result, stop_result

from .service import DEFAULT_API_KEY, SimulatedService


class SimTransport:
    def __init__(self, service: SimulatedService, api_key: str = DEFAULT_API_KEY) -> None:
        self.service = service
        self._headers = {"Authorization": api_key, "Content-Type": "application/json"}

    def __repr__(self) -> str:
        return f"SimTransport({self.service!r})"

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        kind = StreamKind(kind)
        operation = f"{kind.value}.start"
        answer = self.service.request(PATHS[kind][0], self._headers, dict(params))
        if answer.lost:
            raise OutcomeUnknownError("no answer within the read timeout (simulated)", operation=operation)
        body = read_answer(operation, answer.status, answer.body, answer.headers.get("Retry-After"))
        return start_result(operation, body)

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        """One request, answered at once: ``within`` cannot be exceeded."""
        kind = StreamKind(kind)
        path, payload = stop_request(kind, task_id)
        answer = self.service.request(path, self._headers, payload)
        body = read_answer(
            f"{kind.value}.stop", answer.status, answer.body, answer.headers.get("Retry-After")
        )
        return stop_result(body, task_id)

    def close(self) -> None:
        """Nothing to release: there are no connections."""
