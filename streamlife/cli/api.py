"""How ``start``, ``stop`` and ``serve`` reach memories.ai: with the API key, or at a simulator."""

from __future__ import annotations

import argparse
import os
from typing import Final
from urllib.parse import urlsplit

from streamlife._events import StreamKind
from streamlife.sim.http import API_PREFIX
from streamlife.transport.http import DEFAULT_UNDERSTAND_URL, HttpTransport, RetryPolicy

from .exits import Usage

API_KEY_ENV: Final = "MEMORIES_API_KEY"
SIM_API_KEY: Final = "sk-mai-simulated"  # what a simulator takes when MEMORIES_API_KEY is not set


def api_key() -> str:
    key = os.environ.get(API_KEY_ENV, "")
    if not key.strip():
        raise Usage(
            f"{API_KEY_ENV} is not set (or is empty): export your memories.ai API key in it; against"
            f" a simulator, the key it takes ({SIM_API_KEY} unless `streamlife sim serve` was given"
            f" another in {API_KEY_ENV})"
        )
    return key.strip()


def sim_key() -> str:
    """The key a simulator takes and is sent: the one in MEMORIES_API_KEY, so that every command of a
    dev loop reads the same variable; else ``SIM_API_KEY``."""
    return os.environ.get(API_KEY_ENV, "").strip() or SIM_API_KEY


def sim_url(url: str) -> str:
    """The simulator's API base URL: as printed by ``serve --sim``, or just its http://HOST:PORT."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Usage(f"--sim {url!r} is not an http:// URL (want what `streamlife serve --sim` printed)")
    return url.rstrip("/") if parts.path.strip("/") else url.rstrip("/") + API_PREFIX


def transport_for(args: argparse.Namespace, retry: RetryPolicy | None = None) -> HttpTransport:
    understand_url = getattr(args, "understand_url", None)  # (checked by ``environment.resolve``)
    if args.sim is not None:
        # Live Video Understanding lives on a host of its own: without --understand-url, its
        # requests go to the simulator too, never to memories.ai with the simulator's key.
        base_url = sim_url(args.sim)
        return HttpTransport(
            sim_key(), base_url=base_url, understand_url=understand_url or base_url, retry=retry
        )
    understand_url = understand_url or DEFAULT_UNDERSTAND_URL
    return HttpTransport(api_key(), base_url=args.api_url, understand_url=understand_url, retry=retry)


def check_understand_reachable(args: argparse.Namespace, kind: StreamKind) -> None:
    """Refuse to send a Live Video Understanding request to a simulator named by ``--sim`` alone: it
    serves audio and video, and Live Video Understanding on a host of its own."""
    if kind is StreamKind.UNDERSTAND and args.sim is not None and args.understand_url is None:
        raise Usage(
            "an understand stream with --sim needs --understand-url too (or MEMORIES_UNDERSTAND_URL): the"
            " simulator's Live Video Understanding URL, the second one `streamlife sim serve` prints"
            " (--sim names its audio and video API)"
        )
