"""Transports: how streamlife talks to memories.ai (or to its simulator)."""

from .base import Transport
from .http import DEFAULT_BASE_URL, DEFAULT_MAX_ANSWER, DEFAULT_TOTAL_TIMEOUT, HttpTransport, RetryPolicy

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_ANSWER",
    "DEFAULT_TOTAL_TIMEOUT",
    "HttpTransport",
    "RetryPolicy",
    "Transport",
]
