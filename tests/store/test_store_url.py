"""A store URL read without opening anything: which store it names, and where that store is."""

from __future__ import annotations

import pytest

from streamlife.store import open_store, parse_store_url


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("memory:", ("memory", "")),
        ("sqlite:/var/lib/app/streams.db", ("sqlite", "/var/lib/app/streams.db")),
        ("sqlite:streams.db", ("sqlite", "streams.db")),
        ("sqlite::memory:", ("sqlite", ":memory:")),
        ("postgres:host=db dbname=streams", ("postgres", "host=db dbname=streams")),
        ("postgres:app@db/streams", ("postgres", "app@db/streams")),
        ("postgres://app@db/streams", ("postgres", "postgres://app@db/streams")),
        ("postgresql://app@db/streams", ("postgres", "postgresql://app@db/streams")),
    ],
)
def test_a_store_url_names_its_store_and_where_it_is(url: str, parts: tuple[str, str]) -> None:
    assert parse_store_url(url) == parts


@pytest.mark.parametrize(
    "url", ["", "bogus", "memory", "memory:x", "sqlite", "sqlite:", "postgres:", "mysql:x"]
)
def test_a_text_that_names_no_store_is_refused_by_the_parser_and_by_open_store(url: str) -> None:
    with pytest.raises(ValueError, match="not a store URL"):
        parse_store_url(url)
    with pytest.raises(ValueError, match="not a store URL"):
        open_store(url)


@pytest.mark.parametrize(
    "url",
    [
        "postgress://app:hunter2-secret@db/streams",  # a mistyped scheme
        "postgre:host=db password=hunter2-secret",
        "pg://app:hunter2-secret@db/streams?sslmode=require",
    ],
)
def test_a_mistyped_store_url_is_refused_without_its_password(url: str) -> None:
    """A library caller's error message may reach a log: a password in a mistyped URL stays out of it."""
    for refuse in (parse_store_url, open_store):
        with pytest.raises(ValueError, match="not a store URL") as refused:
            refuse(url)
        assert "hunter2" not in str(refused.value)
        assert "***" in str(refused.value)
