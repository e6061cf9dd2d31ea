"""What every command would otherwise repeat, read from the environment when not given.

=====================  ===========================================================================
``STREAMLIFE_STORE``   ``--store`` of every command that keeps tasks (not ``simulate``'s, which
                       wants an empty store of its own)
``MEMORIES_BASE_URL``  ``--api-url``: memories.ai's API, or a simulator's (``streamlife sim serve``)
``MEMORIES_UNDERSTAND_URL``  ``--understand-url`` of ``start`` and ``stop``: Live Video Understanding's
                       host, or a simulator's (the second URL ``streamlife sim serve`` prints)
``MEMORIES_API_KEY``   the API key (``api.API_KEY_ENV``); never an option, so ``ps`` never shows it
``STREAMLIFE_WEBHOOK_TOKEN``  the webhook token of ``serve``, ``send-callback`` and ``start`` (``--token``)
``STREAMLIFE_WEBHOOK_PREVIOUS_TOKENS``  tokens ``serve`` takes besides it while it is rotated,
                       comma-separated (no option: a token on the command line shows in ``ps``)
``STREAMLIFE_PUBLIC_URL``  ``--public-url`` of ``start``: the public base URL of ``serve``, under which an
                       understand task started without ``--callback`` gets its own signed URL
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
from .serve import TOKEN_ENV
from .simulator import mask_webhook
from .stores import DEFAULT_STORE, STORE_ENV, FromEnvironment

BASE_URL_ENV: Final = "MEMORIES_BASE_URL"
UNDERSTAND_URL_ENV: Final = "MEMORIES_UNDERSTAND_URL"
PUBLIC_URL_ENV: Final = "STREAMLIFE_PUBLIC_URL"


class PublicUrl(str):
    """The receiver's public base URL, and where it came from (the option or the variable), which a
    message about it names."""

    source: str

    def __new__(cls, value: str, source: str) -> PublicUrl:
        made = super().__new__(cls, value)
        made.source = source
        return made


def resolve(args: argparse.Namespace) -> None:
    """Fill ``args.store``, ``args.api_url``, ``args.understand_url`` and ``args.public_url``, where
    the command has them and they were not given, from the environment or the defaults; check the
    URLs given."""
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
        if getattr(args, "sim", None) is True:  # serve's --sim (start's names a URL): its own host
            if args.understand_url is not None:
                raise Usage("--understand-url: not with --sim, whose simulator serves both products")
        elif args.understand_url is None:  # (None still, when unset: see ``api.transport_for``)
            args.understand_url = _read(UNDERSTAND_URL_ENV)
            if args.understand_url is not None:
                check_base_url(args.understand_url, UNDERSTAND_URL_ENV)
        else:
            check_base_url(args.understand_url, "--understand-url")
    if hasattr(args, "public_url"):
        if args.public_url is None:  # (None still, when unset: no task URLs then)
            value = _read(PUBLIC_URL_ENV)
            if value is not None:
                args.public_url = check_public_url(PublicUrl(value, PUBLIC_URL_ENV))
        else:
            args.public_url = check_public_url(PublicUrl(args.public_url, "--public-url"))


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
        shown = _shown(name, url)
        raise Usage(
            f"{shown} is not an http:// or https:// URL: want memories.ai's API ({DEFAULT_BASE_URL})"
            " or a simulator's, as `streamlife sim serve` prints it"
        )


def webhook_token(given: str | None) -> str | None:
    """``--token`` if given, else ``STREAMLIFE_WEBHOOK_TOKEN`` (None when unset; bad usage when set
    to nothing but blanks). Never shown."""
    if given is not None:
        return given
    token = os.environ.get(TOKEN_ENV)
    if token is not None and not token.strip():
        raise Usage(f"{TOKEN_ENV} is set but empty: give it the webhook's token, or unset it")
    return token


def check_public_url(url: PublicUrl) -> PublicUrl:
    """The receiver's public base URL: http:// or https://, with a host, no query and no fragment
    (each task's path is added to it). Shown with its last segment hidden: a token may ride there."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or "#" in url:
        raise Usage(
            f"{_shown(url.source, mask_webhook(url))} is not an http:// or https:// URL without query"
            " or fragment: want the public base URL at which memories.ai reaches `streamlife serve`,"
            " e.g. https://your-host.example (each task's own path is added to it)"
        )
    return url


def _shown(name: str, value: str) -> str:
    return f"{name}={value!r}" if name.isupper() else f"{name} {value!r}"


def _read(name: str) -> str | None:
    """The variable's value; None when unset; bad usage when set to nothing but blanks."""
    value = os.environ.get(name)
    if value is None:
        return None
    if not value.strip():
        raise Usage(f"{name} is set but empty: give it a value, or unset it")
    return value.strip()
