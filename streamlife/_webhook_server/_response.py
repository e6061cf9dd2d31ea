"""An HTTP answer: what the receiver gives, and the bytes this server writes for it."""

from __future__ import annotations

import http
import json
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, Final

JSON_TYPE: Final = (("Content-Type", "application/json"),)


@dataclass(frozen=True, slots=True)
class Response:
    """An answer's status, body and headers; the server adds Content-Length, Connection and Date."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = JSON_TYPE

    @property
    def status_line(self) -> str:
        return f"{self.status} {http.HTTPStatus(self.status).phrase}"

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def render(self, *, head_only: bool = False) -> bytes:
        """The answer as this server writes it, closing its connection; only the head for a HEAD.
        ``ValueError`` for a status HTTP does not know, ``UnicodeEncodeError`` for a header that is
        not latin-1."""
        lines = [
            f"HTTP/1.1 {self.status_line}",
            *(f"{name}: {value}" for name, value in self.headers),
            f"Content-Length: {len(self.body)}",
            "Connection: close",
            f"Date: {formatdate(usegmt=True)}",
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


def json_response(status: int, headers: tuple[tuple[str, str], ...] = JSON_TYPE, **fields: Any) -> Response:
    """An answer whose body is ``fields`` as a JSON object."""
    return Response(status, json.dumps(fields).encode(), headers)
