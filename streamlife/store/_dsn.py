"""A PostgreSQL DSN's password, found so that no message, repr or log line shows it.

libpq echoes parts of a DSN it cannot use (a host, a port, an option), and a password with a
character a URL gives a meaning to (``/``, ``@``, ``:``, ``?``) is cut by its parser into pieces
that end up in those parts. So the password is read from the text as a person wrote it, not only as
libpq parses it, and every form it may show in is masked: as written, percent-decoded, as libpq
parsed it, and each piece of it that a separator cut off.

Works without psycopg (the ``postgres`` extra): the CLI masks a store URL before it opens anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote

MASK: Final = "***"

# A piece of a password cut off by a separator is masked from this length up: a shorter one would
# mask letters all over a message, and alone gives away little of the password.
MIN_PIECE: Final = 3

_URL_SCHEME: Final = re.compile(r"^postgres(?:ql)?://", re.IGNORECASE)
_SHORT_SCHEME: Final = re.compile(r"^postgres(?:ql)?:(?!//)", re.IGNORECASE)  # a store URL's "postgres:"
_KEYWORD_PASSWORD: Final = re.compile(r"""(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'?|\S*)""", re.IGNORECASE)
_QUERY_PASSWORD: Final = re.compile(r"[?&]password=([^&#]*)", re.IGNORECASE)
_SEPARATORS: Final = re.compile(r"""[/@:?&=#%\s'"\\]+""")


def written_passwords(dsn: str) -> list[str]:
    """The passwords the DSN's text holds, as a person wrote them (a URL's still percent-encoded):
    a URL's user information (up to its last ``@``, where a password with an ``@`` ends), its
    query's ``password=``, a key=value DSN's ``password=``. A malformed DSN gives what it seems
    to hold."""
    text = dsn.strip()
    found: list[str] = []
    if _is_url(text):
        after_scheme = _URL_SCHEME.sub("", _SHORT_SCHEME.sub("", text, count=1), count=1)
        userinfo, at, _ = after_scheme.rpartition("@")
        if at and ":" in userinfo:
            found.append(userinfo.partition(":")[2])
        found += _QUERY_PASSWORD.findall(text)
    elif "=" not in text and "@" in text:  # "user:secret@host/db", a store URL's rest
        userinfo = text.rpartition("@")[0]
        if ":" in userinfo:
            found.append(userinfo.partition(":")[2])
    else:
        found += [_unquoted(value) for value in _KEYWORD_PASSWORD.findall(text)]
    return [password for password in found if password]


def meant_passwords(dsn: str) -> list[str]:
    """The passwords the DSN's text holds, as libpq should read them: a URL's percent-decoded."""
    written = written_passwords(dsn)
    return [unquote(password) for password in written] if _is_url(dsn) else written


def secrets_of(dsn: str, parsed_password: str | None = None) -> tuple[str, ...]:
    """Every text that would give the DSN's password away, longest first: each password as written,
    percent-decoded, as libpq parsed it (``parsed_password``), and its pieces of ``MIN_PIECE``
    characters or more."""
    whole = set(written_passwords(dsn))
    whole |= {unquote(password) for password in whole}
    if parsed_password:
        whole.add(parsed_password)
    pieces = {piece for password in whole for piece in _SEPARATORS.split(password) if len(piece) >= MIN_PIECE}
    return tuple(sorted(whole | pieces, key=len, reverse=True))


def store_url_secrets(url: str) -> tuple[str, ...]:
    """``secrets_of`` a store URL (``postgres:DSN``, ``postgresql://...``); none for another store."""
    scheme, _, rest = url.partition(":")
    if scheme.lower() not in ("postgres", "postgresql"):
        return ()
    return secrets_of(url if rest.startswith("//") else rest)


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` (longest first, as ``secrets_of`` gives them) as ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def _is_url(dsn: str) -> bool:
    text = dsn.strip()
    return bool(_URL_SCHEME.match(text) or (_SHORT_SCHEME.match(text) and "=" not in text))


def _unquoted(value: str) -> str:
    """A key=value DSN's value as libpq reads it: without its quotes, a backslash taking the next
    character as it is (quoted or not)."""
    if value.startswith("'"):
        closed = len(value) > 1 and value.endswith("'") and not value.endswith("\\'")
        value = value[1:-1] if closed else value[1:]
    return re.sub(r"\\(.)", r"\1", value)


def mask_store_url(url: str) -> str:
    """The store URL fit to print: a password, in a URL (``user:secret@``), a query string
    (``?password=secret``) or a key=value DSN (``password=secret``), becomes ``***``."""
    shown = mask(url, store_url_secrets(url))  # first: a password the patterns below would cut
    return _DSN_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***\2", shown))


# user:secret@ after "//", or right after the scheme of a "postgres:user:secret@host" store URL.
_URL_PASSWORD: Final = re.compile(r"((?://|^postgres(?:ql)?:)[^/@\s:]*:)[^/\s]*(@)")
_DSN_PASSWORD: Final = re.compile(r"""(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)""", re.IGNORECASE)
