"""The HTTP server ``serve_webhook`` runs: one thread watches every socket, a few workers apply.

Theory of operation
-------------------
A callback is a small POST whose sender writes it at once. The server's job is to answer those
quickly whatever else connects: idle sockets, a slowloris dripping a byte at a time, a flood of
either, on a process with a limited number of descriptors.

One thread (the loop) owns every socket, non-blocking, behind one selector. It accepts, reads each
request's head and body, answers the refusals that need no body (401, 405, 411, 413, a malformed
head) itself, and writes every answer. An open connection costs a descriptor and a buffer, never a
thread, however long it sits. Only a complete request reaches a worker: a fixed pool of
``workers`` threads hands it to the receiver (``WebhookReceiver.apply``) and the answer back to
the loop. Each answer closes its connection (``Connection: close``), as the standard library's
server did.

Each part has a module, and its docstring goes on with that part's rules:

- ``_request``: reading a request's head, strictly;
- ``_connections``: the open connections, their deadlines, the cap and eviction;
- ``_server``: the loop, accepting when out of descriptors, shutting down, lingering after a refusal;
- ``_workers``: the pool that applies complete requests;
- ``_response``: an answer, and the bytes written for it.
"""

from ._connections import EVICTION_GRACE, descriptor_budget
from ._request import MAX_HEAD, MAX_LENGTH_DIGITS, parse_content_length
from ._response import JSON_TYPE, Response, json_response
from ._server import (
    ACCEPT_PAUSE,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_WORKERS,
    LINGER,
    Application,
    WebhookServer,
)

__all__ = [
    "ACCEPT_PAUSE",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_WORKERS",
    "EVICTION_GRACE",
    "JSON_TYPE",
    "LINGER",
    "MAX_HEAD",
    "MAX_LENGTH_DIGITS",
    "Application",
    "Response",
    "WebhookServer",
    "descriptor_budget",
    "json_response",
    "parse_content_length",
]
