"""What every command would otherwise repeat, read from the environment when not given.

=====================  ===========================================================================
``STREAMLIFE_STORE``   ``--store`` of every command that keeps tasks (not ``simulate``'s, which
                       wants an empty store of its own)
``MEMORIES_BASE_URL``  ``--api-url``: memories.ai's API, or a simulator's (``streamlife sim serve``)
``MEMORIES_UNDERSTAND_URL``  ``--understand-url`` of ``start`` and ``stop``: Live Video Understanding's
                       host, or a simulator's (the second URL ``streamlife sim serve`` prints)
``MEMORIES_API_KEY``   the API key (``api.API_KEY_ENV``); never an option, so ``ps`` never shows it
``STREAMLIFE_WEBHOOK_TOKEN``  the webhook token of ``serve`` and ``send-callback`` (``--token``)
=====================  ===========================================================================

An option given on the command line wins. A variable that is set but empty, or holds what the option
would refuse, is bad usage, and the message names the variable: a typo in a shell profile must not
quietly send streams to the wrong place.
"""

from __future__ import annotations

import argparse
import os
from typing import Final
from urllib.parse import urlsplit

from streamlife.store import mask_store_url, parse_store_url
from streamlife.transport.http import DEFAULT_BASE_URL

from .exits import Usage
from .stores import DEFAULT_STORE, STORE_ENV, FromEnvironment

BASE_URL_ENV: Final = "MEMORIES_BASE_URL"
UNDERSTAND_URL_ENV: Final = "MEMORIES_UNDERSTAND_URL"


def resolve(args: argparse.Namespace) -> None:
    """Fill ``args.store``, ``args.api_url`` and ``args.understand_url``, where the command has them
    and they were not given, from the environment or the defaults; check the URLs given."""
    if getattr(args, "store", "") is None:
        args.store = store_from_environment()
    if hasattr(args, "api_url"):
        if args.api_url is None:
            # With --sim (a simulator named on start and stop, or served by serve) the variable is
            # not used, so it is not read.
            sim = getattr(args, "sim", None)
            args.api_url = DEFAULT_BASE_URL if sim else base_url_from_environment()
        else:
            check_base_url(args.api_url, "--api-url")
    if hasattr(args, "understand_url"):
        if args.understand_url is None:  # (None still, when unset: see ``api.transport_for``)
            args.understand_url = _read(UNDERSTAND_URL_ENV)
            if args.understand_url is not None:
                check_base_url(args.understand_url, UNDERSTAND_URL_ENV)
        else:
            check_base_url(args.understand_url, "--understand-url")


def store_from_environment() -> str:
    value = _read(STORE_ENV)
    if value is None:
        return DEFAULT_STORE
    try:
        parse_store_url(value)
    except ValueError:
        raise Usage(
            f"{STORE_ENV}={mask_store_url(value)!r} is not a store URL: want memory:, sqlite:PATH,"
            " postgres:DSN or postgresql://USER@HOST/DB (or unset it, for the default"
            f" {DEFAULT_STORE})"
        ) from None
    return FromEnvironment(value)


def base_url_from_environment() -> str:
    value = _read(BASE_URL_ENV)
    if value is None:
        return DEFAULT_BASE_URL
    check_base_url(value, BASE_URL_ENV)
    return value


def check_base_url(url: str, name: str) -> None:
    """An API base URL: http:// or https://, with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = f"{name}={url!r}" if name.isupper() else f"{name} {url!r}"
        raise Usage(
            f"{shown} is not an http:// or https:// URL: want memories.ai's API ({DEFAULT_BASE_URL})"
            " or a simulator's, as `streamlife sim serve` prints it"
        )


def _read(name: str) -> str | None:
    """The variable's value; None when unset; bad usage when set to nothing but blanks."""
    value = os.environ.get(name)
    if value is None:
        return None
    if not value.strip():
        raise Usage(f"{name} is set but empty: give it a value, or unset it")
    return value.strip()
