"""Opening a store: a bad URL or an unreachable database says why, at once, and never shows a password."""

from __future__ import annotations

import psycopg.conninfo
import pytest

from streamlife.errors import StoreError
from streamlife.store import mask_store_url, open_store


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db.internal/streams", "postgresql://app:***@db.internal/streams"),
        ("postgres://app:s3cret@db.internal", "postgres://app:***@db.internal"),
        ("postgres:app:s3cret@db.internal/streams", "postgres:app:***@db.internal/streams"),
        ("postgres:host=db password=s3cret dbname=x", "postgres:host=db password=*** dbname=x"),
        (
            "postgresql://db/x?password=s3cret&sslmode=require",
            "postgresql://db/x?password=***&sslmode=require",
        ),
        ("sqlite:/var/lib/a:b@c.db", "sqlite:/var/lib/a:b@c.db"),
    ],
)
def test_a_store_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert mask_store_url(url) == shown


def test_a_database_that_does_not_exist_is_named_at_once(pg_dsn: str) -> None:
    params = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    params["dbname"] = "streamlife_no_such_database"
    # The pool alone would retry for 30 s and then say only that it got no connection.
    with pytest.raises(StoreError, match="does not exist"):
        open_store("postgres:" + psycopg.conninfo.make_conninfo(**params))  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["bogus", "sqlite:", "memory:x", "postgres:"])
def test_a_string_that_is_no_store_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="not a store URL"):
        open_store(url)
