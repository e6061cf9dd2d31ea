"""The store the commands share: its URL checked and opened, a task found in it, and ``journal``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from streamlife.errors import StoreError
from streamlife.store import JournalEntry, Store, TaskRow, mask_store_url, open_store, parse_store_url

from .exits import EXIT_OK, Problem, Usage
from .render import describe, iso_utc, journal_table, print_table

DEFAULT_STORE: Final = "sqlite:streamlife.db"
STORE_ENV: Final = "STREAMLIFE_STORE"  # the default of every --store but simulate's


class FromEnvironment(str):
    """A store URL read from ``STREAMLIFE_STORE``: a message about it names the variable, where one
    about a URL given on the command line names ``--store``."""


def _named(url: str) -> str:
    return STORE_ENV if isinstance(url, FromEnvironment) else "--store"


def check_store_url(url: str) -> tuple[str, str]:
    """The kind of store ``url`` names and where it is (see ``parse_store_url``); a URL that names no
    store is refused before anything else happens."""
    try:
        return parse_store_url(url)
    except ValueError:
        raise Usage(
            f"{_named(url)} {mask_store_url(url)!r} is not a store URL: want memory:, sqlite:PATH,"
            " postgres:DSN or postgresql://USER@HOST/DB"
        ) from None


def open_url(url: str, *, existing: bool = False) -> Store:
    """Open the store ``url`` names; ``existing``: refuse an SQLite file that is not there (a reader
    must not make an empty store where the user mistyped a path)."""
    kind, where = check_store_url(url)
    shown = f"{_named(url)} {mask_store_url(url)}"
    if existing and kind == "sqlite" and where != ":memory:" and not Path(where).exists():
        raise Usage(f"{shown}: there is no file {where!r} (nothing has been journaled there yet)")
    try:
        return open_store(url)
    except ImportError:
        raise Usage(
            f"{shown}: PostgreSQL needs the postgres extra: pip install 'streamlife[postgres]'"
        ) from None
    except ValueError as error:
        raise Usage(f"{shown}: {error}") from None
    except StoreError as error:
        raise Usage(f"{shown}: {error}") from None  # (it says what failed: "could not open ...")


@contextmanager
def opened(url: str, *, existing: bool = False) -> Iterator[Store]:
    store = open_url(url, existing=existing)
    try:
        yield store
    finally:
        store.close()


def find_task(store: Store, wanted: str, shown: str) -> TaskRow:
    """The task whose task_id or key is ``wanted``, or whose key starts with it."""
    row = store.find(wanted) or store.row(wanted)
    if row is not None:
        return row
    if wanted:
        matches = [row for row in store.rows(terminal=True) if row.key.startswith(wanted)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise Usage(f"{wanted!r} is the start of {len(matches)} task keys: give more of it")
    raise Problem(f"the store {shown} holds no task with task_id or key {wanted!r}")


def row_json(row: TaskRow) -> dict[str, Any]:
    return {
        "key": row.key,
        "kind": row.kind,
        "task_id": row.task_id,
        "state": row.state,
        "terminal": row.terminal,
        "version": row.version,
        "created_at": iso_utc(row.created_at, "milliseconds"),
        "updated_at": iso_utc(row.updated_at, "milliseconds"),
        "last_error": row.facts.get("last_error"),
        "facts": dict(row.facts),
    }


def run_journal(args: argparse.Namespace) -> int:
    shown = mask_store_url(args.store)
    with opened(args.store, existing=True) as store:
        row = find_task(store, args.task, shown)
        entries = store.journal(row.key)
    if args.json:
        print(json.dumps([_entry_json(entry) for entry in entries], indent=2))
        return EXIT_OK
    title = (
        f"task {row.key[:8]} ({row.kind}, task_id {row.task_id or '-'}): {row.state},"
        f" {len(entries)} journal entries"
    )
    print_table(journal_table(entries, title))
    return EXIT_OK


def _entry_json(entry: JournalEntry) -> dict[str, Any]:
    return {
        "version": entry.version,
        "at": iso_utc(entry.at, "milliseconds"),
        "at_unix": entry.at,
        "trigger": entry.trigger,
        "from": entry.from_state,
        "to": entry.to_state,
        "detail": describe(entry.args),
        "args": None if entry.args is None else dict(entry.args),
    }
