"""The HTTP server ``serve_webhook`` runs: one thread watches every socket, a few workers apply.

How it works: ``streamlife.webhook_server._server``.
"""

from ._request import MAX_HEAD, MAX_LENGTH_DIGITS, parse_content_length
from ._server import (
    ACCEPT_PAUSE,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_WORKERS,
    EVICTION_GRACE,
    LINGER,
    Answer,
    Application,
    WebhookServer,
    descriptor_budget,
)

__all__ = [
    "ACCEPT_PAUSE",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_WORKERS",
    "EVICTION_GRACE",
    "LINGER",
    "MAX_HEAD",
    "MAX_LENGTH_DIGITS",
    "Answer",
    "Application",
    "WebhookServer",
    "descriptor_budget",
    "parse_content_length",
]
