"""Per-task callback URLs: each stream's results come to a URL that names its task and proves it.

Live Video Understanding takes a callback URL in each start request, and the docs give no
account-wide webhook for it. ``CallbackUrls(base, token=...)`` makes that URL for a task:

    {base}/task/{key}/{sig}     sig = urlsafe base64 of HMAC-SHA256(token, DOMAIN + key)[:16]

``key`` is the task's durable key (``StreamTask.key``), ``token`` the webhook receiver's. Nothing
per task is stored: the receiver, given the same token, computes the signature again and compares
it in constant time. A signature opens the one task it was made for (``WebhookReceiver``); it is
never the token, and never opens the account-wide path. ``DOMAIN`` keeps these signatures apart
from any other HMAC a deployment may make with the same token.

The docs say nothing of how memories.ai calls the URL (method, headers, retries) beyond posting
JSON to it: the receiver takes it as it takes any callback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Final
from urllib.parse import urlsplit

__all__ = ["MIN_TOKEN_LENGTH", "CallbackUrls", "posted_route", "task_route", "task_signature", "verified_key"]

MIN_TOKEN_LENGTH: Final = 16  # a token is the only lock on the door: it must not be guessable
DOMAIN: Final = b"streamlife/task-callback/v1\x00"
SIGNATURE_BYTES: Final = 16  # 128 bits: no guessing, and a URL of sane length
TASK_SEGMENT: Final = "task"
# What a key may be to ride in a path unquoted: a Fleet's keys are uuid4 hex.
_KEY: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")


def task_signature(token: bytes, key: str) -> str:
    """The signature of task ``key``'s callback URL under ``token``."""
    mac = hmac.new(token, DOMAIN + key.encode(), hashlib.sha256).digest()[:SIGNATURE_BYTES]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def task_route(path: str) -> tuple[str, str] | None:
    """``(key, sig)`` for a path that ends ``/task/<key>/<sig>``; None for any other path. Nothing
    is verified here: ``verified_key`` does that."""
    parts = path.rstrip("/").rsplit("/", 3)
    if len(parts) != 4 or parts[1] != TASK_SEGMENT or not _KEY.fullmatch(parts[2]) or not parts[3]:
        return None
    return parts[2], parts[3]


def verified_key(token: bytes, path: str) -> str | None:
    """The key of the task whose callback URL ``path`` is, if its signature is right under
    ``token`` (compared in constant time); None otherwise."""
    route = task_route(path)
    if route is None:
        return None
    key, offered = route
    if not hmac.compare_digest(task_signature(token, key).encode(), offered.encode("utf-8", "replace")):
        return None
    return key


def posted_route(token: bytes, url: str | None) -> tuple[str | None, str | None]:
    """How a receiver with ``token`` routes a callback posted to ``url``, for a simulator that
    hands callbacks over in-process: ``(key, None)`` for a task URL whose signature is right,
    ``(None, None)`` for any other URL or none (the account's webhook: by task_id), and
    ``(None, why)`` for a task URL whose signature is wrong (the receiver's 401)."""
    if url is None:
        return None, None
    path = urlsplit(url).path
    if task_route(path) is None:
        return None, None
    key = verified_key(token, path)
    return (key, None) if key is not None else (None, "a task URL whose signature is not this receiver's")


class CallbackUrls:
    """The callback URL of each task: ``url_for(task.key)``, under the receiver's public ``base``
    URL, signed with the receiver's ``token`` (the ``WebhookReceiver``'s own).

    ``Fleet(..., callback_urls=CallbackUrls("https://you.example/memories", token=TOKEN))`` fills
    the ``callback=`` of each Live Video Understanding start with its task's URL. The token never
    shows in a repr, and a URL made here is a secret of one task: keep it out of logs.
    """

    __slots__ = ("_token", "base")

    def __init__(self, base: str, *, token: str) -> None:
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"the webhook token must be a string of {MIN_TOKEN_LENGTH} characters or more")
        if not isinstance(base, str):
            raise TypeError(f"the base URL is a str, not {type(base).__name__}")
        try:
            parts = urlsplit(base)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the base URL must be an http:// or https:// URL the service can reach")
        if parts.query or parts.fragment or "#" in base or "?" in base:
            raise ValueError("the base URL must have no query and no fragment: task paths are added to it")
        if token in base:
            # Each task's URL is given to memories.ai: the token in it would open every task.
            raise ValueError("the base URL must not carry the token: task URLs carry a signature instead")
        self.base: Final = base.rstrip("/")
        self._token = token.encode()

    def url_for(self, key: str) -> str:
        """The callback URL of the task whose durable key is ``key``."""
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError("a task key is 1 to 128 letters, digits, '-' or '_'")
        return f"{self.base}/{TASK_SEGMENT}/{key}/{task_signature(self._token, key)}"

    def signs_with(self, token: str | bytes) -> bool:
        """Whether these URLs are signed with ``token`` (compared in constant time): a receiver
        checks that it verifies what the Fleet signs."""
        offered = token.encode() if isinstance(token, str) else token
        return hmac.compare_digest(offered, self._token)

    def __repr__(self) -> str:
        return f"CallbackUrls(base={self.base!r}, token=<redacted>)"
