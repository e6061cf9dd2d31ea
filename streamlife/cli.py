"""The ``streamlife`` command (also ``python -m streamlife``).

Commands:

    diagram    write the lifecycle diagrams from the table (``--check``: write nothing, report drift)
    walk       walk a few tasks through their lifecycle, printed as a timeline
    simulate   run many streams against the simulator, faults on, and check the promises;
               ``--store URL`` journals the run's tasks there (default ``memory:``); ``--mode
               passthrough`` has audio streams forward their provider's own messages
    serve      the webhook receiver: take back the store's unfinished tasks, run their timers and
               apply memories.ai's callbacks until SIGTERM/SIGINT (``--sim``: with a simulator)
    start      start one stream and journal it in the store
    stop       stop one stream, and wait (``--wait``) until it is terminal
    status     the tasks in the store (``--all``: the terminal ones too)
    journal    one task's history, as the store keeps it
    deadletter the webhook payloads the parser refused: ``list``, ``show ID``, ``replay [ID ...]``
               (those the parser reads now, to their tasks) and ``purge (ID ... | --all)``

``serve``, ``start``, ``stop``, ``status``, ``journal`` and ``deadletter`` share one store,
``--store sqlite:streamlife.db`` (in the current directory) unless told otherwise: ``memory:``,
``sqlite:PATH``, ``postgres:DSN`` or ``postgresql://...``. ``status``, ``journal`` and
``deadletter list|show`` only read it; ``deadletter replay`` applies callbacks to the store's tasks
and sends memories.ai nothing, so it needs no API key. ``start``, ``stop`` and ``serve`` talk to
memories.ai with the key in ``MEMORIES_API_KEY`` (never printed), or to a simulator served by
``streamlife serve --sim`` (``--sim URL``, no key). ``serve`` takes its webhook token from ``--token``
or ``STREAMLIFE_WEBHOOK_TOKEN``: memories.ai signs nothing, so the receiver refuses to run without one
(with ``--sim`` and neither, it makes a random one and tells only its simulator).

What others wrote (task_ids, memories.ai's messages and errors, webhook payloads, dead letters) is
printed as text, never as rich markup, and what would act on a terminal in it (escape sequences,
carriage returns, bidirectional overrides) is shown escaped: see :func:`console.printable`. The
``--json`` outputs keep it as it came, JSON-escaped.

Exit codes: 0 success; 1 the command ran and found a problem (``diagram --check`` saw drift, a
simulated run broke an invariant or left a stream billing, a start that did not end ``running``, a
stop not terminal within its wait, no such task or dead letter in the store, a dead letter the
parser still refuses, the store failing, ``serve`` leaving tasks of a ``memory:`` store unstopped);
2 bad usage (unknown command or option, a bad value, a store URL that names no store or a store that
cannot be opened, a missing API key or webhook token); 130 interrupted (Ctrl-C, where the command
does not take it as its cue to stop, as ``serve`` does).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
import traceback
from base64 import b64encode
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Final, TextIO, TypeVar
from urllib.parse import urlsplit

import structlog
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text
from structlog.typing import ExcInfo

from . import console as console_view
from . import diagram, walk
from .clock import ManualClock
from .compiled import build_description
from .console import printable, untrusted
from .deadletter import replay_dead_letters
from .errors import CallbackError, NotSentError, StoreError, StreamlifeError
from .events import Outcome, StartResult, StopResult, StreamKind
from .fleet import Fleet
from .lifecycle import TaskState
from .policy import Policy
from .sim import Faults, SimulatedService, serve_http
from .sim.http import API_PREFIX, WebhookPoster
from .sim.service import SIM_MODES
from .simulate import FAULT_PRESETS, Report, Run, Snapshot, mask_store_url, simulate
from .store import DeadLetter, JournalEntry, MemoryStore, Store, TaskRow, open_store
from .transport.answers import PROVIDERS, URL_FIELD
from .transport.http import DEFAULT_BASE_URL, HttpTransport, RetryPolicy
from .webhook import MIN_TOKEN_LENGTH, WebhookReceiver, serve_webhook
from .webhook_server import DEFAULT_MAX_CONNECTIONS, DEFAULT_REQUEST_TIMEOUT

Served = TypeVar("Served")
Number = TypeVar("Number", int, float)

LIVE_SPEED = 30.0  # virtual seconds per real second: a two-minute run plays in a few seconds

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # as shells report a command ended by SIGINT

API_KEY_ENV: Final = "MEMORIES_API_KEY"
TOKEN_ENV: Final = "STREAMLIFE_WEBHOOK_TOKEN"
DEFAULT_STORE: Final = "sqlite:streamlife.db"
SIM_API_KEY: Final = "sk-mai-simulated"  # what `serve --sim`'s simulator takes, and `--sim URL` sends
SIM_TICK: Final = 0.1  # real seconds between two advances of `serve --sim`'s simulator
STOP_POLL: Final = 0.05  # real seconds between two looks at the store while `stop` waits
LETTER_PAGE: Final = 100  # dead letters read at a time by `deadletter list` (each up to 64 KiB)
PREVIEW_WIDTH: Final = 60  # characters of a dead letter's body shown in `deadletter list`

_STORE_HELP: Final = (
    "where tasks are journaled: memory:, sqlite:PATH, postgres:DSN or postgresql://..."
    f" (default: {DEFAULT_STORE}, in the current directory)"
)


class _Usage(Exception):
    """Bad usage found after parsing: exit 2 with the message."""


class _Problem(Exception):
    """The command ran and found a problem: exit 1 with the message."""


def _version() -> str:
    try:
        return importlib.metadata.version("streamlife")
    except importlib.metadata.PackageNotFoundError:  # (run from a source tree, not installed)
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamlife",
        description="memories.ai live streams as explicit state machines.",
        epilog="Exit codes: 0 success, 1 the command found a problem, 2 bad usage.",
    )
    parser.add_argument(
        "--log-level",
        default="error",
        choices=["debug", "info", "warning", "error"],
        help="show streamlife's own log events at this level and above (default: error)",
    )
    parser.add_argument(
        "--version", action="version", version=f"streamlife {_version()}, {build_description()}",
        help="show the version, and whether this install is compiled, and exit",
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    draw = commands.add_parser("diagram", help="write the lifecycle diagrams from the table")
    draw.add_argument("--out", type=Path, default=Path("diagrams"), help="directory (default: diagrams)")
    draw.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files drift")

    commands.add_parser("walk", help="walk a few tasks through their lifecycle, printed as a timeline")

    sim = commands.add_parser(
        "simulate",
        help="run many streams against the simulator, faults on, and check the promises",
        description="Run many streams against memories.ai's simulator on virtual time, faults on; stop"
        " them all, let the run settle, and check that every task ended and nothing bills.",
    )
    option = sim.add_argument
    option("--streams", type=_positive_int, default=50, help="streams to start (default: 50)")
    option("--minutes", type=_positive_float, default=2.0, help="virtual minutes to run (default: 2)")
    option("--faults", choices=list(FAULT_PRESETS), default="default", help="fault preset (default: default)")
    option("--seed", type=int, default=0, help="seed for the faults and the run (default: 0)")
    option(
        "--mode",
        choices=list(SIM_MODES),
        default="segments",
        help="what the simulator's audio streams send: 5-second segments, or their provider's own"
        " messages passed through (default: segments)",
    )
    option("--http", action="store_true", help="cross real loopback sockets: HTTP face and webhooks")
    option("--json", action="store_true", help="print one JSON report instead of the live display")
    option(
        "--store",
        metavar="URL",
        default="memory:",
        help="journal the run's tasks in this store, which must hold no task yet: memory:, sqlite:PATH,"
        " postgres:DSN (default: memory:); read it afterwards with `streamlife status --all`",
    )
    sim.add_argument(
        "--speed",
        type=_positive_float,
        default=None,
        help="virtual seconds per real second (default: 30 with the live display, flat out with --json)",
    )

    serve = commands.add_parser(
        "serve",
        help="receive memories.ai's webhooks for the tasks in the store, until SIGTERM/SIGINT",
        description="Take back the store's unfinished tasks, run their timers, and apply memories.ai's"
        " webhook callbacks (POST http://HOST:PORT/<token>) until SIGTERM or SIGINT. With a durable"
        " store (sqlite, postgres) the tasks are left running at exit: the next serve takes them back."
        " With memory: they are all stopped first, since nothing would remember them."
        f" The API key comes from {API_KEY_ENV} (not needed with --sim); the webhook token from"
        f" --token or {TOKEN_ENV}.",
    )
    serve.add_argument("--store", metavar="URL", default=DEFAULT_STORE, help=_STORE_HELP)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument(
        "--port", type=_port, default=8080, help="port to listen on (default: 8080; 0: any free)"
    )
    serve.add_argument(
        "--token",
        default=None,
        help=f"the webhook's secret token, {MIN_TOKEN_LENGTH} characters or more: the last segment of the"
        f" webhook URL (default: ${TOKEN_ENV}, which other users cannot see in `ps`; with --sim and"
        " neither, a random one)",
    )
    serve.add_argument(
        "--request-timeout",
        metavar="SECONDS",
        type=_positive_float,
        default=DEFAULT_REQUEST_TIMEOUT,
        help="how long a client has to send its whole request before it is answered 408 and closed"
        f" (default: {DEFAULT_REQUEST_TIMEOUT:g})",
    )
    serve.add_argument(
        "--max-connections",
        metavar="N",
        type=_positive_int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="connections open at once, at most half the process's descriptor limit; past it the oldest"
        f" one without a whole request is closed for a newcomer (default: {DEFAULT_MAX_CONNECTIONS})",
    )
    serve.add_argument(
        "--stop-wait",
        metavar="SECONDS",
        type=_seconds,
        default=30.0,
        help="with a memory: store, how long to wait at exit for the stopped tasks to end (default: 30)",
    )
    face = serve.add_mutually_exclusive_group()
    face.add_argument(
        "--api-url",
        metavar="URL",
        default=DEFAULT_BASE_URL,
        help=f"memories.ai's API (default: {DEFAULT_BASE_URL})",
    )
    face.add_argument(
        "--sim",
        action="store_true",
        help="serve memories.ai's simulator (no faults, real time) in this process as well, its webhooks"
        " posted here; its API URL is printed, for `streamlife start/stop --sim URL`",
    )
    serve.add_argument(
        "--sim-port", metavar="PORT", type=_port, default=0, help="the simulator's port (default: any free)"
    )

    start = commands.add_parser(
        "start",
        help="start one stream and journal it in the store",
        description="Start one stream and journal it in the store, where `status`, `journal`, `stop` and"
        " `serve` find it. Prints the task; exits 1 if it did not end up running. The API key comes from"
        f" {API_KEY_ENV}, unless --sim.",
    )
    start.add_argument(
        "kind", choices=[kind.value for kind in StreamKind], help="audio (transcription) or video"
    )
    start.add_argument("url", help="the stream to pull: rtmp://, rtsp://, an HLS or HTTP URL")
    start.add_argument(
        "--provider", choices=PROVIDERS, help="who transcribes an audio stream (required for audio)"
    )
    start.add_argument(
        "--param",
        action="append",
        default=[],
        type=_param,
        metavar="KEY=VALUE",
        help="one more field of the start request, e.g. provider=assemblyai or punctuate=true (VALUE is"
        " read as JSON when it parses, else taken as text); repeat for more",
    )
    start.add_argument("--store", metavar="URL", default=DEFAULT_STORE, help=_STORE_HELP)
    start.add_argument("--json", action="store_true", help="print the task as one JSON object")
    _api_options(start)

    stop = commands.add_parser(
        "stop",
        help="stop one stream, and wait until its task is terminal",
        description="Stop a stream the store knows (by task_id or key) and wait until its task is terminal:"
        " the status-14 callback reaches `streamlife serve`, which journals it. Exits 1 if the task is not"
        f" terminal within --wait. The API key comes from {API_KEY_ENV}, unless --sim.",
    )
    stop.add_argument(
        "task", metavar="TASK", help="the task's task_id, or its key (or a unique prefix of it)"
    )
    stop.add_argument("--store", metavar="URL", default=DEFAULT_STORE, help=_STORE_HELP)
    stop.add_argument(
        "--wait",
        metavar="SECONDS",
        type=_seconds,
        default=30.0,
        help="seconds to wait for the task to be terminal; they bound the stop request too (default: 30)",
    )
    stop.add_argument("--json", action="store_true", help="print the task as one JSON object")
    _api_options(stop)

    status = commands.add_parser(
        "status",
        help="the tasks in the store",
        description="The tasks in the store that are not terminal (--all: every task), read from the store"
        " alone: no API key needed.",
    )
    status.add_argument("--store", metavar="URL", default=DEFAULT_STORE, help=_STORE_HELP)
    status.add_argument("--all", action="store_true", help="the terminal tasks too")
    status.add_argument(
        "--task", metavar="TASK", help="one task: its task_id, or its key (or a unique prefix)"
    )
    status.add_argument(
        "--json", action="store_true", help="print JSON: an array of tasks (one object with --task)"
    )

    history = commands.add_parser(
        "journal",
        help="one task's history, as the store keeps it",
        description="Every event applied to a task, in order, read from the store: version, time (UTC),"
        " trigger, from -> to, and what came with it.",
    )
    history.add_argument(
        "task", metavar="TASK", help="the task's task_id, or its key (or a unique prefix of it)"
    )
    history.add_argument("--store", metavar="URL", default=DEFAULT_STORE, help=_STORE_HELP)
    history.add_argument("--json", action="store_true", help="print JSON: an array of journal entries")

    _deadletter_commands(commands)
    return parser


def _deadletter_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``deadletter list | show ID | replay [ID ...] | purge (ID ... | --all)``."""
    letters = commands.add_parser(
        "deadletter",
        help="the webhook payloads the parser refused: list, show, replay, purge",
        description="Every webhook payload the parser refused is kept in the store (up to 64 KiB of it),"
        " with the reason: a dead letter. List them, show one, replay them once this streamlife reads"
        " them (each goes to its task, as if it had just come, and is then purged), or purge them.",
    )
    actions = letters.add_subparsers(dest="action", required=True, metavar="ACTION")
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--store", metavar="URL", default=DEFAULT_STORE, help=_STORE_HELP)

    listing = actions.add_parser(
        "list",
        parents=[shared],
        help="the kept letters, oldest first",
        description="The kept dead letters, oldest first: id, time (UTC), size, the field at fault, the"
        " parser's reason, and the start of the body (control characters shown escaped).",
    )
    listing.add_argument(
        "--after", metavar="ID", type=_letter_id_or_zero, default=0, help="only letters after this id"
    )
    listing.add_argument("--limit", metavar="N", type=_positive_int, default=None, help="at most N letters")
    listing.add_argument(
        "--json", action="store_true", help="print JSON: an array of letters (without their bodies)"
    )

    show = actions.add_parser(
        "show",
        parents=[shared],
        help="one letter, its body whole",
        description="One dead letter with its whole kept body: as text if it is UTF-8 (control characters"
        " shown escaped), else as a hex dump.",
    )
    show.add_argument("id", metavar="ID", type=_letter_id, help="the letter's id (see `deadletter list`)")
    show.add_argument(
        "--json", action="store_true", help="print JSON, the body as text (UTF-8) or base64 (body_encoding)"
    )

    replay = actions.add_parser(
        "replay",
        parents=[shared],
        help="parse the letters again; deliver those this streamlife reads to their tasks, and purge them",
        description="Parse each letter (every one, or the IDs given) again, oldest first. Each one the"
        " parser reads now goes to its task in the store, as if it had just come, and is then purged;"
        " one still refused is kept. A letter whose body was cut when it was kept is never replayed."
        " Sends memories.ai nothing: no API key needed. Exits 1 if a letter is still refused, or an ID"
        " is not kept.",
    )
    replay.add_argument("ids", metavar="ID", nargs="*", type=_letter_id, help="the letters (default: all)")
    replay.add_argument("--json", action="store_true", help="print JSON: an array of results")

    purge = actions.add_parser(
        "purge",
        parents=[shared],
        help="forget letters: the IDs given, or --all",
        description="Forget the dead letters given (or every one, with --all). Exits 1 if an ID is not kept.",
    )
    purge.add_argument("ids", metavar="ID", nargs="*", type=_letter_id, help="the letters to forget")
    purge.add_argument("--all", action="store_true", help="forget every letter")
    purge.add_argument("--json", action="store_true", help="print JSON: how many went, and the IDs not kept")


def _api_options(command: argparse.ArgumentParser) -> None:
    where = command.add_mutually_exclusive_group()
    where.add_argument(
        "--api-url",
        metavar="URL",
        default=DEFAULT_BASE_URL,
        help=f"memories.ai's API (default: {DEFAULT_BASE_URL})",
    )
    where.add_argument(
        "--sim",
        metavar="URL",
        default=None,
        help="talk to the simulator at URL (as printed by `streamlife serve --sim`) instead: no API key",
    )


def _read(text: str, convert: Callable[[str], Number], what: str) -> Number:
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def _positive_int(text: str) -> int:
    value = _read(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = _read(text, float, "a number")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _seconds(text: str) -> float:
    value = _read(text, float, "a number")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be seconds, 0 or more, got {text}")
    return value


def _port(text: str) -> int:
    value = _read(text, int, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {value}")
    return value


def _letter_id(text: str) -> int:
    value = _read(text, int, "a dead letter's id")
    if not 1 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"a dead letter's id is a whole number from 1, got {text}")
    return value


def _letter_id_or_zero(text: str) -> int:
    return 0 if text.strip() == "0" else _letter_id(text)


def _param(text: str) -> tuple[str, Any]:
    name, equals, raw = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"want KEY=VALUE, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return name.strip(), value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(args.log_level)
    # psycopg's pool warns on every failed connection attempt; the error that ends them says enough.
    logging.getLogger("psycopg").setLevel(logging.DEBUG if args.log_level == "debug" else logging.CRITICAL)
    try:
        return _command(args)
    except _Usage as usage:
        print(f"streamlife {args.command}: error: {printable(str(usage))}", file=sys.stderr)
        return EXIT_USAGE
    except _Problem as problem:
        print(f"streamlife {args.command}: {printable(str(problem))}", file=sys.stderr)
        return EXIT_PROBLEM
    except StoreError as error:
        print(f"streamlife {args.command}: the store failed: {printable(str(error))}", file=sys.stderr)
        return EXIT_PROBLEM
    except StreamlifeError as error:  # a journal that does not replay (JournalMismatch), say
        print(f"streamlife {args.command}: {type(error).__name__}: {printable(str(error))}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:  # a second Ctrl-C while `serve` stops its tasks, say
        print(f"streamlife {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `streamlife journal ... | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the flush at exit does not fail again
        return EXIT_PROBLEM


def _configure_logging(level: str) -> None:
    """The command line is an application, so it may choose how log events render; the library never
    does. Its events carry task_ids, errors and payloads that others wrote: shown escaped."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.StackInfoRenderer(),
            structlog.dev.set_exc_info,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            _printable_event,
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty() and "NO_COLOR" not in os.environ,
                exception_formatter=_printable_traceback,
            ),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def _printable_event(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A log event's text values made safe to print; the renderer shows other values by their repr,
    which escapes control characters itself."""
    for name, value in event.items():
        if isinstance(value, str):
            event[name] = printable(value)
    return event


def _printable_traceback(out: TextIO, exc_info: ExcInfo) -> None:
    """A logged exception as a plain traceback, its messages made safe to print. (Not rich's, which
    also shows each frame's local variables: others' payloads, and whatever else a frame holds.)"""
    out.write("\n" + printable("".join(traceback.format_exception(*exc_info)), lines=True))


def _command(args: argparse.Namespace) -> int:
    if args.command == "diagram":
        return _diagram(args.out, check=args.check)
    if args.command == "walk":
        print(walk.timeline())
        return EXIT_OK
    if args.command == "simulate":
        return _simulate(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "start":
        return _start(args)
    if args.command == "stop":
        return _stop(args)
    if args.command == "status":
        return _status(args)
    if args.command == "journal":
        return _journal(args)
    if args.command == "deadletter":
        return _deadletter(args)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse refuses unknown ones


def _diagram(out: Path, *, check: bool) -> int:
    if check:
        stale = diagram.drifted(out)
        for path in stale:
            print(f"{path} is out of date: run `python -m streamlife diagram`", file=sys.stderr)
        return EXIT_PROBLEM if stale else EXIT_OK
    for path in diagram.write(out):
        print(f"wrote {path}")
    return EXIT_OK


# -- simulate ------------------------------------------------------------------------------------------
def _simulate(args: argparse.Namespace) -> int:
    _check_store_url(args.store)
    speed = args.speed if args.speed is not None or args.json else LIVE_SPEED
    run = Run(
        streams=args.streams,
        minutes=args.minutes,
        faults=args.faults,
        seed=args.seed,
        http=args.http,
        speed=speed,
        store=args.store,
        mode=args.mode,
    )
    if args.json:
        report = _simulated(run)
        print(json.dumps(report.as_json(), indent=2))
        return EXIT_OK if report.ok else EXIT_PROBLEM
    console = Console()
    title = f"{run.streams} streams, faults {run.faults}, {run.mode}" + (", over HTTP" if run.http else "")
    with Live(console=console, refresh_per_second=8, transient=False) as live:

        def show(snapshot: Snapshot) -> None:
            live.update(console_view.live_panel(snapshot, title))

        report = _simulated(run, show)
    console.print()
    console.print(console_view.summary(report))
    return EXIT_OK if report.ok else EXIT_PROBLEM


def _simulated(run: Run, show: Callable[[Snapshot], None] | None = None) -> Report:
    try:
        return simulate(run, on_progress=show)
    except ValueError as error:  # a store that already holds tasks
        raise _Usage(f"--store: {error}") from None
    except StoreError as error:
        raise _Usage(f"--store {mask_store_url(run.store)}: could not open it: {error}") from None


# -- the store -------------------------------------------------------------------------------------------
def _check_store_url(url: str) -> None:
    """Refuse a URL that names no store before anything else happens."""
    scheme, colon, rest = url.partition(":")
    if (
        (scheme == "memory" and colon and not rest)
        or (scheme == "sqlite" and rest)
        or (scheme in ("postgres", "postgresql") and rest)
    ):
        return
    raise _Usage(
        f"--store {mask_store_url(url)!r} is not a store URL: want memory:, sqlite:PATH,"
        " postgres:DSN or postgresql://USER@HOST/DB"
    )


def _open(url: str, *, existing: bool = False) -> Store:
    """Open the store ``url`` names; ``existing``: refuse an SQLite file that is not there (a reader
    must not make an empty store where the user mistyped a path)."""
    _check_store_url(url)
    shown = mask_store_url(url)
    scheme, _, rest = url.partition(":")
    if existing and scheme == "sqlite" and rest != ":memory:" and not Path(rest).exists():
        raise _Usage(f"--store {shown}: there is no file {rest!r} (nothing has been journaled there yet)")
    try:
        return open_store(url)
    except ImportError:
        raise _Usage(
            f"--store {shown}: PostgreSQL needs the postgres extra: pip install 'streamlife[postgres]'"
        ) from None
    except ValueError as error:
        raise _Usage(f"--store {shown}: {error}") from None
    except StoreError as error:
        raise _Usage(f"--store {shown}: could not open it: {error}") from None


@contextmanager
def _opened(url: str, *, existing: bool = False) -> Iterator[Store]:
    store = _open(url, existing=existing)
    try:
        yield store
    finally:
        store.close()


def _find(store: Store, wanted: str, shown: str) -> TaskRow:
    """The task whose task_id or key is ``wanted``, or whose key starts with it."""
    row = store.find(wanted) or store.row(wanted)
    if row is not None:
        return row
    if wanted:
        matches = [row for row in store.rows(terminal=True) if row.key.startswith(wanted)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise _Usage(f"{wanted!r} is the start of {len(matches)} task keys: give more of it")
    raise _Problem(f"the store {shown} holds no task with task_id or key {wanted!r}")


def _when(at: float, timespec: str = "seconds") -> str:
    """A time from the journal as ISO 8601, in UTC."""
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def _row_json(row: TaskRow) -> dict[str, Any]:
    return {
        "key": row.key,
        "kind": row.kind,
        "task_id": row.task_id,
        "state": row.state,
        "terminal": row.terminal,
        "version": row.version,
        "created_at": _when(row.created_at, "milliseconds"),
        "updated_at": _when(row.updated_at, "milliseconds"),
        "last_error": row.facts.get("last_error"),
        "facts": dict(row.facts),
    }


def _console() -> Console:
    """Rich's console; wide when the output is no terminal (a pipe, a file), so that task_ids and
    times are not folded to fit 80 columns. ``COLUMNS`` still rules where it is set."""
    console = Console()
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(width=160)


def _state(state: str) -> Text:
    return untrusted(state, style=console_view.STATE_STYLE.get(state, ""))


# -- status ----------------------------------------------------------------------------------------------
def _status(args: argparse.Namespace) -> int:
    shown = mask_store_url(args.store)
    with _opened(args.store, existing=True) as store:
        if args.task is not None:
            row = _find(store, args.task, shown)
            if args.json:
                print(json.dumps(_row_json(row), indent=2))
            else:
                _print_task(row)
            return EXIT_OK
        rows = list(store.rows(terminal=args.all))
    if args.json:
        print(json.dumps([_row_json(row) for row in rows], indent=2))
        return EXIT_OK
    which = "tasks" if args.all else "unfinished tasks"
    if not rows:
        print(f"no {which} in {shown}" + ("" if args.all else " (--all shows the terminal ones too)"))
        return EXIT_OK
    table = Table(title=untrusted(f"{len(rows)} {which} in {shown}"), title_justify="left")
    table.add_column("key", no_wrap=True)
    table.add_column("kind")
    table.add_column("task_id", no_wrap=True, min_width=36)
    table.add_column("state")
    table.add_column("version", justify="right")
    table.add_column("updated (UTC)", no_wrap=True)
    table.add_column("last_error", overflow="fold")
    for row in rows:
        # Text, never str: a str cell is read as rich markup, and a task_id or an error is others' words.
        table.add_row(
            untrusted(row.key[:8]),
            untrusted(row.kind),
            untrusted(row.task_id or "-"),
            _state(row.state),
            str(row.version),
            _when(row.updated_at),
            untrusted(str(row.facts.get("last_error") or "")),
        )
    _console().print(table)
    return EXIT_OK


def _print_task(row: TaskRow) -> None:
    """One task, a field a line."""
    facts = {name: value for name, value in row.facts.items() if name != "last_error"}
    lines = [
        ("key", row.key),
        ("kind", row.kind),
        ("task_id", row.task_id or "-"),
        ("state", row.state),
        ("version", str(row.version)),
        ("created", _when(row.created_at)),
        ("updated", _when(row.updated_at)),
        ("last_error", str(row.facts.get("last_error") or "-")),
        ("facts", ", ".join(f"{name}={value}" for name, value in facts.items())),
    ]
    for name, value in lines:
        print(f"{name:<11}{printable(value)}")


# -- journal ---------------------------------------------------------------------------------------------
def _journal(args: argparse.Namespace) -> int:
    shown = mask_store_url(args.store)
    with _opened(args.store, existing=True) as store:
        row = _find(store, args.task, shown)
        entries = store.journal(row.key)
    if args.json:
        print(json.dumps([_entry_json(entry) for entry in entries], indent=2))
        return EXIT_OK
    title = (
        f"task {row.key[:8]} ({row.kind}, task_id {row.task_id or '-'}): {row.state},"
        f" {len(entries)} journal entries"
    )
    table = Table(title=untrusted(title), title_justify="left")
    table.add_column("v", justify="right")
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("trigger", no_wrap=True)
    table.add_column("from → to", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for entry in entries:
        moved = Text.assemble(untrusted(entry.from_state), " → ", _state(entry.to_state))
        table.add_row(
            str(entry.version),
            _when(entry.at, "milliseconds"),
            untrusted(entry.trigger),
            moved,
            untrusted(describe(entry.args)),  # the server's messages, a transcript's words
        )
    _console().print(table)
    return EXIT_OK


def _entry_json(entry: JournalEntry) -> dict[str, Any]:
    return {
        "version": entry.version,
        "at": _when(entry.at, "milliseconds"),
        "at_unix": entry.at,
        "trigger": entry.trigger,
        "from": entry.from_state,
        "to": entry.to_state,
        "detail": describe(entry.args),
        "args": None if entry.args is None else dict(entry.args),
    }


def describe(args: Mapping[str, Any] | None, width: int = 60) -> str:
    """A journal entry's argument in a few words: a task_id, an error, a product, a segment, a status."""
    if not args:
        return ""
    if "error" in args:
        return _clip(f"error: {args['error']}", width)
    if "segment" in args:
        segment = args["segment"]
        said = "" if segment.get("text") is None else f" {segment['text']!r}"
        final = "final" if segment.get("final") else "partial"
        return _clip(f"segment {segment.get('index')} {final}{said}", width)
    if "status" in args:
        status = args["status"]
        meaning = f" ({status['meaning']})" if status.get("meaning") else ""
        message = f" {status['message']}" if status.get("message") else ""
        return _clip(f"status {status.get('status')}{meaning}{message}", width)
    if "provider" in args:
        provider = args["provider"]
        return _clip(f"{provider.get('provider')} {provider.get('message_type')}", width)
    if "task_id" in args:
        return f"task_id {args['task_id']}"
    if "kind" in args:
        return f"found on {args['kind']}"
    return _clip(json.dumps(args), width)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# -- deadletter ------------------------------------------------------------------------------------------
def _deadletter(args: argparse.Namespace) -> int:
    if args.action == "purge" and bool(args.ids) == args.all:
        raise _Usage("purge takes the IDs of the letters to forget, or --all (not both)")
    shown = mask_store_url(args.store)
    with _opened(args.store, existing=True) as store:
        if args.action == "list":
            return _list_letters(store, shown, args)
        if args.action == "show":
            return _show_letter(store, shown, args)
        if args.action == "replay":
            return _replay_letters(store, shown, args)
        return _purge_letters(store, shown, args)


def _list_letters(store: Store, shown: str, args: argparse.Namespace) -> int:
    listed: list[dict[str, Any]] = []  # without their bodies: a page at a time is all that is held
    after = args.after
    while args.limit is None or len(listed) < args.limit:
        wanted = LETTER_PAGE if args.limit is None else min(LETTER_PAGE, args.limit - len(listed))
        page = store.dead_letters(after=after, limit=wanted)
        if not page:
            break
        listed.extend(_letter_json(letter) for letter in page)
        after = page[-1].id
    if args.json:
        print(json.dumps(listed, indent=2))
        return EXIT_OK
    if not listed:
        print(f"no dead letters in {shown}")
        return EXIT_OK
    table = Table(title=untrusted(f"{_n(len(listed), 'dead letter')} in {shown}"), title_justify="left")
    table.add_column("id", justify="right")
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("field", overflow="fold")
    table.add_column("reason", overflow="fold")
    table.add_column("body", overflow="fold")
    for letter in listed:
        size = f"{letter['size']:,} B" + (" (cut)" if letter["truncated"] else "")
        # Text, not str: a str cell is read as rich markup, and these are the payload's words.
        table.add_row(
            str(letter["id"]),
            _when(letter["at_unix"]),
            size,
            untrusted(letter["field"] or "-"),
            untrusted(letter["reason"]),
            Text(letter["preview"]),  # (made printable by _preview already)
        )
    _console().print(table)
    return EXIT_OK


def _letter_json(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "at": _when(letter.at, "milliseconds"),
        "at_unix": letter.at,
        "reason": letter.reason,
        "field": letter.field,
        "size": letter.size,
        "kept": len(letter.body),
        "truncated": letter.truncated,
        "preview": _preview(letter.body),
    }


def _preview(body: bytes) -> str:
    """The start of a body on one line: each run of whitespace as one space, what is no UTF-8 and
    what would act on a terminal shown escaped."""
    start = body[: PREVIEW_WIDTH * 4].decode("utf-8", "backslashreplace")  # enough to fill the width
    return _clip(printable(" ".join(start.split())), PREVIEW_WIDTH)


def _show_letter(store: Store, shown: str, args: argparse.Namespace) -> int:
    letter = store.dead_letter_by_id(args.id)
    if letter is None:
        raise _Problem(f"the store {shown} keeps no dead letter {args.id}")
    try:
        text: str | None = letter.body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if args.json:
        shown_json = {key: value for key, value in _letter_json(letter).items() if key != "preview"}
        if text is None:
            body = {"body": b64encode(letter.body).decode("ascii"), "body_encoding": "base64"}
        else:
            body = {"body": text, "body_encoding": "utf-8"}
        print(json.dumps({**shown_json, **body}, indent=2))  # (JSON escapes every control character)
        return EXIT_OK
    size = f"{letter.size:,} bytes"
    if letter.truncated:
        size += f", the first {len(letter.body):,} kept (cut: it is never replayed)"
    for name, value in (
        ("id", str(letter.id)),
        ("time", _when(letter.at, "milliseconds")),
        ("field", printable(letter.field or "-")),
        ("reason", printable(letter.reason)),
        ("size", size),
    ):
        print(f"{name:<7}{value}")
    if text is None:
        print("body   not UTF-8; as hex:")
        print(_hexdump(letter.body))
    else:
        print("body   UTF-8 text (control characters shown escaped):")
        print(printable(text, lines=True))
    return EXIT_OK


def _replay_letters(store: Store, shown: str, args: argparse.Namespace) -> int:
    # No recover(): the Fleet finds each task in the store as its callback comes, and recovering would
    # take over every unfinished task (a start in flight in another process filed as uncertain).
    # No request leaves from here, and this Fleet's timers never run. An end a replayed callback lets
    # the task infer calls for a confirming stop, which fails here and is journaled as failed: the
    # process that serves the store retries it when it next touches the task.
    with Fleet(_NoRequests(), store=store, policy=Policy(stop_concurrency=0)) as fleet:
        results = replay_dead_letters(fleet, args.ids or None)
    found = {letter_id for letter_id, _ in results}
    missing = [letter_id for letter_id in dict.fromkeys(args.ids) if letter_id not in found]
    refused = [letter_id for letter_id, result in results if isinstance(result, CallbackError)]
    if args.json:
        report = [_replay_json(letter_id, result) for letter_id, result in results]
        report += [{"id": letter_id, "result": "not kept", "purged": False} for letter_id in missing]
        print(json.dumps(report, indent=2))
    elif not results and not missing:
        print(f"no dead letters in {shown}")
    else:
        for letter_id, result in results:
            if isinstance(result, CallbackError):
                print(f"dead letter {letter_id}: still refused, kept: {printable(str(result))}")
            else:
                print(f"dead letter {letter_id}: {printable(str(result))}, purged")
    problems = []
    if refused:
        problems.append(f"{_n(len(refused), 'dead letter')} still refused, and kept")
    if missing:
        problems.append(f"the store {shown} keeps no dead letter {', '.join(map(str, missing))}")
    if problems:
        raise _Problem("; ".join(problems))
    return EXIT_OK


def _replay_json(letter_id: int, result: Outcome | CallbackError) -> dict[str, Any]:
    if isinstance(result, CallbackError):
        return {
            "id": letter_id,
            "result": "refused",
            "error": str(result),
            "field": result.field,
            "purged": False,
        }
    return {"id": letter_id, "result": result.kind.value, "reason": result.reason, "purged": True}


def _purge_letters(store: Store, shown: str, args: argparse.Namespace) -> int:
    if args.all:
        missing: list[int] = []
        purged = store.purge_dead_letters()
    else:
        wanted = list(dict.fromkeys(args.ids))
        missing = [letter_id for letter_id in wanted if store.dead_letter_by_id(letter_id) is None]
        purged = store.purge_dead_letters(wanted)
    if args.json:
        print(json.dumps({"purged": purged, "not_kept": missing, "store": shown}, indent=2))
    else:
        print(f"purged {_n(purged, 'dead letter')} from {shown}")
    if missing:
        raise _Problem(f"the store {shown} keeps no dead letter {', '.join(map(str, missing))}")
    return EXIT_OK


def _hexdump(data: bytes, width: int = 16) -> str:
    """Bytes as offset, hex and the printable ASCII beside it, ``width`` bytes a line."""
    lines = []
    for offset in range(0, len(data), width):
        chunk = data[offset : offset + width]
        ascii_ = "".join(chr(byte) if 0x20 <= byte < 0x7F else "." for byte in chunk)
        lines.append(f"{offset:08x}  {chunk.hex(' '):<{3 * width - 1}}  |{ascii_}|")
    return "\n".join(lines)


class _NoRequests:
    """The transport of a Fleet that must send memories.ai nothing (``deadletter replay``): every
    request is refused as never sent, which no caller takes for an answer."""

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        raise NotSentError("this command sends no requests", operation=f"{kind.value}.start")

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        raise NotSentError("this command sends no requests", operation=f"{kind.value}.stop")

    def close(self) -> None:
        pass


# -- talking to memories.ai ------------------------------------------------------------------------------
def _api_key() -> str:
    key = os.environ.get(API_KEY_ENV, "")
    if not key.strip():
        raise _Usage(
            f"{API_KEY_ENV} is not set (or is empty): export your memories.ai API key in it,"
            " or use --sim with a simulator served by `streamlife serve --sim`"
        )
    return key.strip()


def _sim_url(url: str) -> str:
    """The simulator's API base URL: as printed by ``serve --sim``, or just its http://HOST:PORT."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _Usage(f"--sim {url!r} is not an http:// URL (want what `streamlife serve --sim` printed)")
    return url.rstrip("/") if parts.path.strip("/") else url.rstrip("/") + API_PREFIX


def _transport(args: argparse.Namespace, retry: RetryPolicy | None = None) -> HttpTransport:
    if args.sim is not None:
        return HttpTransport(SIM_API_KEY, base_url=_sim_url(args.sim), retry=retry)
    return HttpTransport(_api_key(), base_url=args.api_url, retry=retry)


def _task_json(row: TaskRow | None, task_state: str, key: str, store: str) -> dict[str, Any]:
    shown = {"store": store}
    if row is None:
        return {"key": key, "state": task_state, **shown}
    return {**_row_json(row), **shown}


def _start(args: argparse.Namespace) -> int:
    kind = StreamKind(args.kind)
    params = {**dict(args.param), URL_FIELD[kind]: args.url}
    if args.provider is not None:
        params["provider"] = args.provider
    if not args.url:
        raise _Usage("the stream's URL is empty")
    if kind is StreamKind.AUDIO and params.get("provider") not in PROVIDERS:
        raise _Usage(f"an audio stream needs --provider ({' or '.join(PROVIDERS)})")
    shown = mask_store_url(args.store)
    _check_store_url(args.store)
    transport = _transport(args)  # before the store: a missing key must not leave a new file behind
    try:
        # No retries of a start refused for now: this process is gone before a retry would be due.
        once = Policy(start_retry_window=0)
        with _opened(args.store) as store, Fleet(transport, store=store, policy=once) as fleet:
            task = fleet.start(kind, **params)
            row = store.row(task.key or "")
    finally:
        transport.close()
    if args.json:
        print(json.dumps(_task_json(row, task.state.value, task.key or "", shown), indent=2))
    else:
        for name, value in (
            ("key", task.key or "-"),
            ("kind", task.kind.value),
            ("task_id", task.task_id or "-"),
            ("state", task.state.value),
            ("last_error", task.last_error or "-"),
        ):
            print(f"{name:<11}{printable(value)}")
    if task.state is TaskState.RUNNING:
        return EXIT_OK
    why = task.last_error
    if task.state is TaskState.UNCERTAIN:
        why = (
            f"{why}; a stream may exist all the same, unnamed: `streamlife serve` adopts and stops it as"
            " an orphan when its callbacks come"
        )
    raise _Problem(f"the stream did not start ({task.state.value}): {why}")


def _stop(args: argparse.Namespace) -> int:
    shown = mask_store_url(args.store)
    _check_store_url(args.store)
    # The request and its retries fit in the wait (a second at least, for --wait 0).
    transport = _transport(args, RetryPolicy(deadline=max(args.wait, 1.0)))
    give_up_at = time.monotonic() + args.wait
    try:
        with _opened(args.store, existing=True) as store:
            row = _find(store, args.task, shown)
            if not row.terminal:
                row = _stop_and_wait(store, transport, row, give_up_at)
    finally:
        transport.close()
    if args.json:
        print(json.dumps(_task_json(row, row.state, row.key, shown), indent=2))
    else:
        _print_task(row)
    if row.terminal:
        return EXIT_OK
    if row.facts.get("stop_acknowledged"):
        why = "memories.ai acknowledged the stop; its status-14 callback has not reached `streamlife serve`"
    else:
        why = (
            f"the stop was not acknowledged ({row.facts.get('stop_failures', 0)} failed): the stream may"
            " still bill, so run this again (a running `serve` does not retry it before it restarts)"
        )
    raise _Problem(f"task {row.key} ({row.task_id}) is still {row.state} after {args.wait:g} s: {why}")


def _stop_and_wait(store: Store, transport: HttpTransport, row: TaskRow, give_up_at: float) -> TaskRow:
    """Stop the task, then watch the store until it is terminal (the status-14 callback goes to
    whoever serves the webhook, which journals it) or the wait is over. Retries due meanwhile go out
    from here, on this thread."""
    if row.task_id is None:
        raise _Problem(
            f"task {row.key} is {row.state} with no task_id: there is nothing to stop at memories.ai yet"
            " (if its start made a stream, `streamlife serve` reaps it as an orphan)"
        )
    with Fleet(transport, store=store, policy=Policy(stop_concurrency=0)) as fleet:
        try:
            fleet.stop(row.task_id)
        except StreamlifeError as error:
            raise _Problem(f"could not stop task {row.key}: {error}") from None
        while True:
            current = store.row(row.key) or row
            if current.terminal or time.monotonic() >= give_up_at:
                return current
            deadline = fleet.next_deadline()
            if deadline is not None and deadline <= fleet.clock.now():
                fleet.tick()
            time.sleep(STOP_POLL)


# -- serve -------------------------------------------------------------------------------------------
def _serve(args: argparse.Namespace) -> int:
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV, "")
    if not token and args.sim:
        token = secrets.token_urlsafe(24)  # the simulator is the only sender, and it is told
    if not token:
        raise _Usage(
            f"serve needs a webhook token: --token T or {TOKEN_ENV}, {MIN_TOKEN_LENGTH} characters or"
            " more (memories.ai signs nothing: the token in the webhook URL is what keeps strangers out)"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise _Usage(f"the webhook token must be {MIN_TOKEN_LENGTH} characters or more, got {len(token)}")
    key = SIM_API_KEY if args.sim else _api_key()
    _check_store_url(args.store)
    shown = mask_store_url(args.store)
    stopping = threading.Event()
    with ExitStack() as stack:
        store = _open(args.store)
        stack.callback(store.close)
        service = None
        if args.sim:
            # A fresh seed each time: the simulator's task_ids follow from it, and a store kept from an
            # earlier serve must not meet the same task_ids again.
            faults = Faults.none(seed=secrets.randbits(64))
            clock = ManualClock(time.time())
            service = SimulatedService(clock=clock, faults=faults, api_key=SIM_API_KEY)
            face = stack.enter_context(
                _listening(serve_http(service, host=args.host, port=args.sim_port), args.host, args.sim_port)
            )
            api_url = face.base_url
        else:
            api_url = args.api_url
        transport = HttpTransport(key, base_url=api_url)
        stack.callback(transport.close)
        fleet = stack.enter_context(Fleet(transport, store=store))
        recovered = fleet.recover()
        receiver = WebhookReceiver(fleet, token=token)
        hook = stack.enter_context(
            _listening(
                serve_webhook(
                    receiver,
                    args.host,
                    args.port,
                    request_timeout=args.request_timeout,
                    max_connections=args.max_connections,
                ),
                args.host,
                args.port,
            )
        )
        if service is not None:
            host, port = hook.server.server_address[:2]
            poster = WebhookPoster(f"http://{_reachable(str(host))}:{port}/{token}")
            service.on_callback(poster)
            stack.callback(poster.close)
            stack.enter_context(_real_time(service))
            print(
                f"streamlife serve: simulator API at {api_url} (try: streamlife start audio"
                f" rtmp://example.invalid/live --sim {api_url} --store {shown})"
                if not isinstance(store, MemoryStore)
                else f"streamlife serve: simulator API at {api_url} (a memory: store is this process's"
                " alone: streams other commands start are orphans here, stopped after Policy.park_ttl)",
                file=sys.stderr,
            )
        stack.enter_context(fleet.run_timers())
        stack.enter_context(_until_signalled(stopping))
        print(
            f"streamlife serve: webhooks at {hook.url}/<token hidden>; recovered {_n(len(recovered), 'task')}"
            f" from {shown}",
            file=sys.stderr,
            flush=True,
        )
        while not stopping.wait(0.5):
            pass
        return _leave(fleet, store, shown, args.stop_wait)
    raise AssertionError("unreachable")  # the block returns; mypy cannot tell that ExitStack raises


def _leave(fleet: Fleet, store: Store, shown: str, stop_wait: float) -> int:
    """What serve does on SIGTERM/SIGINT, while its receiver still takes callbacks."""
    if not isinstance(store, MemoryStore):
        alive = sum(1 for _ in store.rows())
        print(
            f"streamlife serve: leaving {_n(alive, 'unfinished task')} in {shown} (the next serve"
            " recovers them)",
            file=sys.stderr,
        )
        return EXIT_OK
    alive = sum(not task.terminal for task in fleet.tasks())
    parked = fleet.stats().parked
    print(
        f"streamlife serve: stopping {_n(alive, 'task')} and {_n(parked, 'stream')} known only by its"
        " callbacks (a memory: store remembers nothing)",
        file=sys.stderr,
    )
    left = fleet.stop_all(wait=stop_wait)
    if not left:
        return EXIT_OK
    ids = ", ".join(str(task.task_id or task.key) for task in left[:10])
    raise _Problem(
        f"{_n(len(left), 'task')} not terminal after {stop_wait:g} s; their streams may bill: {ids}"
    )


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


@contextmanager
def _listening(server: AbstractContextManager[Served], host: str, port: int) -> Iterator[Served]:
    """Enter a server's block; an address that cannot be listened on is bad usage."""
    try:
        running = server.__enter__()
    except OSError as error:
        raise _Usage(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    try:
        yield running
    except BaseException:
        if not server.__exit__(*sys.exc_info()):
            raise
    else:
        server.__exit__(None, None, None)


def _reachable(host: str) -> str:
    """Where a local client reaches a server listening on ``host``."""
    return "127.0.0.1" if host in ("", "0.0.0.0") else host


@contextmanager
def _real_time(service: SimulatedService) -> Iterator[None]:
    """Move the simulator's virtual clock along with the wall clock, from a thread."""
    done = threading.Event()
    log = structlog.get_logger("streamlife")

    def advance() -> None:
        while not done.wait(SIM_TICK):
            try:
                service.run_until(max(time.time(), service.clock.now()))
            except Exception:
                log.exception("streamlife.sim_failed")

    thread = threading.Thread(target=advance, name="streamlife-sim-clock", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextmanager
def _until_signalled(stopping: threading.Event) -> Iterator[None]:
    """Set ``stopping`` on SIGTERM or SIGINT; a second one acts as it would without this."""
    wanted = (signal.SIGTERM, signal.SIGINT)
    before: dict[int, Any] = {signum: signal.getsignal(signum) for signum in wanted}

    def handle(signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        signal.signal(signum, before[signum])

    for signum in wanted:
        signal.signal(signum, handle)
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
