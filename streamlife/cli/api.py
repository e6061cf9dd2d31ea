"""How ``start``, ``stop`` and ``serve`` reach memories.ai: with the API key, or at a simulator."""

from __future__ import annotations

import argparse
import os
from typing import Final
from urllib.parse import urlsplit

from streamlife.sim.http import API_PREFIX
from streamlife.transport.http import HttpTransport, RetryPolicy

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
    if args.sim is not None:
        return HttpTransport(sim_key(), base_url=sim_url(args.sim), retry=retry)
    return HttpTransport(api_key(), base_url=args.api_url, retry=retry)
