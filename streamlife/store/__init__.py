"""Journal stores: where a Fleet keeps its tasks across restarts and processes.

``MemoryStore`` (the Fleet's default: nothing survives the process), ``SqliteStore`` (a file: the
embedded default for anything that must survive a restart), ``PostgresStore`` (many processes
sharing the same tasks). ``open_store("sqlite:/var/lib/app/streams.db")`` picks one by URL.
"""

from __future__ import annotations

from ._dsn import mask_store_url
from .base import (
    DEAD_LETTER_MAX_BODY,
    NO_DUE,
    DeadLetter,
    Due,
    JournalEntry,
    ParkedCallback,
    PruneResult,
    Store,
    StoreConflict,
    StoreError,
    TaskRow,
    TaskTxn,
)
from .memory import MemoryStore
from .retention import pruning
from .sqlite import SqliteStore

__all__ = [
    "DEAD_LETTER_MAX_BODY",
    "NO_DUE",
    "DeadLetter",
    "Due",
    "JournalEntry",
    "MemoryStore",
    "ParkedCallback",
    "PruneResult",
    "SqliteStore",
    "Store",
    "StoreConflict",
    "StoreError",
    "TaskRow",
    "TaskTxn",
    "mask_store_url",
    "open_store",
    "parse_store_url",
    "pruning",
]


def open_store(url: str) -> Store:
    """Open a store from ``memory:``, ``sqlite:PATH`` or ``postgres:DSN`` (``postgresql://...`` too).

    PostgreSQL needs the ``postgres`` extra (``pip install 'streamlife[postgres]'``).
    """
    kind, target = parse_store_url(url)
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SqliteStore(target)
    from .postgres import PostgresStore  # psycopg is optional: imported only when asked for

    return PostgresStore(target)


def parse_store_url(url: str) -> tuple[str, str]:
    """The kind of store ``url`` names (``"memory"``, ``"sqlite"`` or ``"postgres"``) and where it is:
    the SQLite file's path, the DSN or URL that psycopg takes, or ``""`` for ``memory:``.

    Opens nothing, so it also checks a URL before anything else happens. Raises ValueError for a
    text that names no store.
    """
    scheme, colon, rest = url.partition(":")
    if scheme == "memory" and colon and not rest:
        return "memory", ""
    if scheme == "sqlite" and rest:
        return "sqlite", rest
    if scheme in ("postgres", "postgresql") and rest:
        return "postgres", url if rest.startswith("//") else rest  # a URL, or a "key=value" DSN
    # Masked: a mistyped URL may still hold a password.
    raise ValueError(f"not a store URL: {mask_store_url(url)!r} (want memory:, sqlite:PATH or postgres:DSN)")
