"""PostgresStore's errors: psycopg's as the store's, and never a word of the DSN's password.

libpq may quote the DSN, password and all, in an error's text: each message, and the psycopg error it
is chained from, is masked with what would give the password away (``streamlife.store._dsn``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg.conninfo
from psycopg_pool import PoolTimeout

from ._dsn import mask, meant_passwords, secrets_of
from .base import StoreConflict, StoreError


def secrets_and_where(dsn: str) -> tuple[tuple[str, ...], str]:
    """What would give the DSN's password away (see ``streamlife.store._dsn``), and where the store
    is, for messages: host, port and database, as libpq reads them. A DSN libpq reads otherwise than
    it is written (a URL's password with an unencoded ``/`` or ``@`` becomes part of the host, the
    port, the database) is refused: it names no database the user meant, and its parts would show
    pieces of the password."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as exc:  # libpq's reason may quote the DSN
        _mask_in_place(exc, secrets_of(dsn))
        raise StoreError(f"not a PostgreSQL DSN: {str(exc).strip()}") from exc
    parsed_password = params.get("password")
    secrets = secrets_of(dsn, None if parsed_password is None else str(parsed_password))
    if set(meant_passwords(dsn)) - {parsed_password}:
        raise StoreError(
            "not a PostgreSQL DSN as written: libpq reads its user, password, host or database"
            " otherwise (in a URL, percent-encode the password's / @ : ? # % and spaces: %2F %40 ...)"
        )
    where = {name: params[name] for name in ("host", "port", "dbname") if params.get(name)}
    shown = " ".join(f"{name}={value}" for name, value in where.items()) or "<dsn hidden>"
    return secrets, mask(shown, secrets)


@contextmanager
def errors(what: str, secrets: tuple[str, ...]) -> Iterator[None]:
    """psycopg's errors as the store's: a constraint is a conflict, anything else a failure. The
    message, and the psycopg error it is chained from, are masked with ``secrets``."""
    try:
        yield
    except psycopg.Error as exc:
        _mask_in_place(exc, secrets)
        raise _store_error(what, exc) from exc


def _mask_in_place(exc: BaseException, secrets: tuple[str, ...]) -> None:
    """Mask the password in a psycopg error's text (which its str and repr, and a traceback, show),
    and in the errors psycopg chained it to."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.args = tuple(mask(arg, secrets) if isinstance(arg, str) else arg for arg in current.args)
        current = current.__cause__ or current.__context__


def _store_error(what: str, exc: psycopg.Error) -> StoreError:
    if isinstance(exc, psycopg.IntegrityError):
        return StoreConflict(f"{what}: {exc}")
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return StoreError(f"{what}: another process holds the task's row past lock_timeout ({exc})")
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return StoreError(f"{what}: a statement ran past statement_timeout ({exc})")
    if isinstance(exc, PoolTimeout):
        return StoreError(
            f"{what}: no connection within the pool's timeout (the server is down or unreachable,"
            f" or every pooled connection is busy): {exc}"
        )
    return StoreError(f"{what}: {exc}")
