"""A PostgreSQL password never shows: not in a StoreError, the error it is chained from, the store's
repr, nor the command line's output, whatever characters it holds and however malformed its DSN.

libpq echoes a DSN it cannot parse, in part or whole, and cuts a URL's password at an unencoded
``/`` or ``@`` into a host, a port and a database it then names. Each password here is "hunter",
a separator, "2secret": neither piece may show either.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg.conninfo
import pytest

from streamlife.errors import StoreError
from streamlife.store import mask_store_url, open_store
from streamlife.store._dsn import mask, secrets_of
from streamlife.store.postgres import PostgresStore
from tests.cli.test_cli_commands import streamlife
from tests.pg import free_port

PIECES = ("hunter", "2secret")
PASSWORDS = [f"hunter{separator}2secret" for separator in ("/", "@", ":", "%", " ", "?", "#", "'")]


def dsns(password: str, host: str, port: int, dbname: str) -> Iterator[str]:
    """The DSN forms a user might write with ``password``: well-formed, or not."""
    where = f"{host}:{port}/{dbname}"
    yield f"postgresql://postgres:{password}@{where}"  # as written: /, @, ?, # and % break it
    yield f"postgresql://postgres:{password}@{where}?badopt=1"
    yield f"postgresql://postgres:{password}@[::1/{dbname}"  # libpq quotes this URL whole
    yield f"postgres://postgres:{psycopg.conninfo.make_conninfo(password=password)[9:]}@{where}"
    quoted = password.replace("\\", "\\\\").replace("'", "\\'")
    yield f"host={host} port={port} dbname={dbname} user=postgres password='{quoted}'"
    yield f"host={host} port={port} password='{quoted}' bogus"
    yield f"host={host} port={port} password={password.replace(' ', '')} bogus"


def shows_the_password(text: str) -> bool:
    return any(piece in text for piece in PIECES)


def everything_said(error: BaseException) -> str:
    """The error as a log or a traceback may show it: the text and repr of it and of every
    exception it is chained from, or was raised while handling."""
    said: list[str] = []
    seen: BaseException | None = error
    while seen is not None:
        said += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(said)


@pytest.mark.parametrize("password", PASSWORDS)
def test_secrets_of_masks_every_form_of_the_password(password: str) -> None:
    for dsn in dsns(password, "db.internal", 5432, "streams"):
        assert not shows_the_password(mask(dsn, secrets_of(dsn))), dsn


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_store_url_is_shown_without_any_of_its_password(password: str) -> None:
    for dsn in dsns(password, "db.internal", 5432, "streams"):
        url = dsn if dsn.startswith("postgres") else f"postgres:{dsn}"
        assert not shows_the_password(mask_store_url(url)), url


def server_of(dsn: str) -> tuple[str, int, str]:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    return str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432), str(params["dbname"])


def opened(dsn: str) -> PostgresStore | StoreError:
    """The store at ``dsn``, or the StoreError that opening it raised."""
    try:
        return PostgresStore(dsn, timeout=2)
    except StoreError as error:
        return error


@pytest.mark.parametrize("password", PASSWORDS)
def test_no_store_error_nor_repr_shows_the_password(pg_store_dsn: str, password: str) -> None:
    host, port, dbname = server_of(pg_store_dsn)
    nowhere = free_port()
    for dsn in [*dsns(password, host, port, dbname), *dsns(password, "127.0.0.1", nowhere, dbname)]:
        store = opened(dsn)
        if isinstance(store, StoreError):
            assert not shows_the_password(everything_said(store)), dsn
            continue
        try:  # (the test server trusts every local connection: any password opens it)
            assert not shows_the_password(repr(store)), dsn
            assert f"dbname={dbname}" in repr(store)
        finally:
            store.close()
    for dsn in dsns(password, "127.0.0.1", nowhere, dbname):
        with pytest.raises(StoreError) as raised:
            open_store(dsn if dsn.startswith("postgres") else f"postgres:{dsn}")
        assert not shows_the_password(everything_said(raised.value)), dsn


def test_a_url_that_libpq_reads_otherwise_than_written_is_refused_saying_why() -> None:
    with pytest.raises(StoreError, match="percent-encode") as raised:
        PostgresStore("postgresql://app:hunter/2secret@127.0.0.1:5432/test")
    assert not shows_the_password(everything_said(raised.value))


@pytest.mark.parametrize("password", ["hunter/2secret", "hunter@2secret", "hunter%2secret"])
def test_the_command_line_never_shows_the_password(tmp_path: Path, pg_store_dsn: str, password: str) -> None:
    params = psycopg.conninfo.conninfo_to_dict(pg_store_dsn)
    host, port, dbname = (
        str(params.get("host") or "127.0.0.1"),
        int(params.get("port") or 5432),
        params["dbname"],
    )
    for dsn in dsns(password, host, port, str(dbname)):
        url = dsn if dsn.startswith("postgres") else f"postgres:{dsn}"
        result = streamlife("status", "--store", url, cwd=tmp_path)
        assert not shows_the_password(result.stdout + result.stderr), (url, result.stderr)
