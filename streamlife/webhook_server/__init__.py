"""The HTTP server ``serve_webhook`` runs: one thread watches every socket, a few workers apply.

How it works: ``streamlife.webhook_server._server``.
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
