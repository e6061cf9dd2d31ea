"""A PostgreSQL server for the tests: the one named by STREAMLIFE_PG_DSN, a local one, or our own.

``server_dsn()`` finds one, in this order:

1. ``STREAMLIFE_PG_DSN``, if set (it must answer: a DSN that is set and wrong is an error);
2. ``host=127.0.0.1 port=5432 dbname=test user=postgres`` (a local server with trust auth), if it
   answers within 2 seconds;
3. a throwaway cluster in a temporary directory on a free port, made with ``initdb`` and started
   with ``pg_ctl`` (found on PATH or under /usr/lib/postgresql/*/bin), stopped and deleted at the
   end. As root, which initdb refuses to be, it runs them as the ``postgres`` user.
   ``STREAMLIFE_PG_THROWAWAY=1`` skips 1 and 2, to test this way on a machine that has a server.

Nothing is skipped: with none of these the fixture fails and says why, for CI must run these tests.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import psycopg.conninfo
from psycopg import sql

LOCAL_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
CONNECT_TIMEOUT = 2


class NoServer(Exception):
    """No PostgreSQL server could be found or started; the message says what was tried."""


def answers(dsn: str, timeout: float = CONNECT_TIMEOUT) -> str | None:
    """None if a server answers at ``dsn`` (and lets us in); else why not."""
    try:
        with psycopg.connect(dsn, connect_timeout=max(1, round(timeout)), autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip() or type(exc).__name__
    return None


@contextmanager
def server_dsn() -> Iterator[str]:
    """The DSN of a server the tests may create databases on (see the module's docstring)."""
    tried: list[str] = []
    if not os.environ.get("STREAMLIFE_PG_THROWAWAY"):
        given = os.environ.get("STREAMLIFE_PG_DSN")
        if given:
            why = answers(given, timeout=10)
            if why is not None:
                raise NoServer(f"STREAMLIFE_PG_DSN is set, but no server answers there: {why}")
            yield given
            return
        why = answers(LOCAL_DSN)
        if why is None:
            yield LOCAL_DSN
            return
        tried.append(f"{LOCAL_DSN!r}: {why}")
    with throwaway_cluster(tried) as dsn:
        yield dsn


def pg_binary(name: str) -> str | None:
    """Where PostgreSQL's ``name`` program is: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found

    def major(path: str) -> int:
        version = Path(path).parent.parent.name
        return int(version) if version.isdigit() else 0

    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=major)
    return candidates[-1] if candidates else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def throwaway_cluster(tried: list[str] | None = None) -> Iterator[str]:
    """A new cluster in a temporary directory, trusting every local connection, for as long as the
    block runs; its DSN."""
    tried = tried if tried is not None else []
    initdb, pg_ctl = pg_binary("initdb"), pg_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        tried.append("a throwaway cluster: no initdb/pg_ctl on PATH or under /usr/lib/postgresql/*/bin")
        raise NoServer("no PostgreSQL server for the tests. Tried " + "; ".join(tried))
    as_user: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:  # initdb will not run as root: run the server as the postgres user
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise NoServer("running as root and there is no 'postgres' user to run initdb as") from exc
        runuser = shutil.which("runuser")
        as_user = [runuser, "-u", "postgres", "--"] if runuser else []
    home = Path(tempfile.mkdtemp(prefix="streamlife-pg-"))
    data, log = home / "data", home / "server.log"
    if owner is not None:
        os.chown(home, owner.pw_uid, owner.pw_gid)

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        argv = [*as_user, *command]
        if owner is not None and not as_user:  # no runuser: su, with the command quoted for its shell
            argv = ["su", "postgres", "-s", "/bin/sh", "-c", subprocess.list2cmdline(list(command))]
        return subprocess.run(
            argv,
            cwd=home,  # the postgres user may not be allowed into the current directory
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def fail(step: str, done: subprocess.CompletedProcess[str]) -> NoServer:
        server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        return NoServer(
            f"the throwaway PostgreSQL cluster in {home}: {step} exited {done.returncode}\n"
            f"{done.stdout}{done.stderr}{server_log}"
        )

    port = free_port()
    started = False
    try:
        done = run(
            initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync"
        )
        if done.returncode != 0:
            raise fail("initdb", done)
        options = f"-k {home} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        done = run(pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        if done.returncode != 0:
            raise fail("pg_ctl start", done)
        started = True
        dsn = f"host=127.0.0.1 port={port} dbname=postgres user=postgres"
        why = answers(dsn, timeout=10)
        if why is not None:
            raise NoServer(f"the throwaway PostgreSQL cluster started but does not answer: {why}")
        yield dsn
    finally:
        if started:
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A new, empty database on ``server`` for as long as the block runs; its DSN."""
    name = f"streamlife_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(server, dbname=name)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
            if conn.info.server_version >= 130000:
                conn.execute(drop + sql.SQL(" WITH (FORCE)"))  # a test's leftover connections too
            else:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
                )
                conn.execute(drop)


def truncate(dsn: str) -> None:
    """Empty the store's tables in the database at ``dsn`` (made by a PostgresStore)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE streamlife_tasks, streamlife_journal, streamlife_parked, streamlife_dead_letters"
            " RESTART IDENTITY"
        )
