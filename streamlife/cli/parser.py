"""The command line: every command's options, and the function that runs each command."""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from streamlife._events import StreamKind
from streamlife._simulate import FAULT_PRESETS
from streamlife._webhook_server import DEFAULT_MAX_CONNECTIONS, DEFAULT_REQUEST_TIMEOUT
from streamlife.protocol import PROVIDERS
from streamlife.sim._records import SIM_MODES
from streamlife.transport.http import DEFAULT_BASE_URL, DEFAULT_UNDERSTAND_URL
from streamlife.webhook import MIN_TOKEN_LENGTH

from .api import API_KEY_ENV, SIM_API_KEY
from .callbacks import CALLBACK_KINDS, run_send_callback
from .deadletters import run_deadletter
from .environment import BASE_URL_ENV, PUBLIC_URL_ENV, UNDERSTAND_URL_ENV
from .lifecycle import run_diagram, run_walk
from .production import DEFAULT_GRACEFUL, DEFAULT_KEEP_ALIVE
from .retention import run_prune
from .serve import SERVERS, TOKEN_ENV, run_serve
from .simulate import LIVE_SPEED, run_simulate
from .simulator import SIM_PORT, SIM_UNDERSTAND_PORT, run_sim
from .stores import DEFAULT_STORE, STORE_ENV, run_journal
from .streams import run_start, run_status, run_stop
from .values import (
    duration,
    letter_id,
    letter_id_or_zero,
    non_negative_int,
    param,
    port,
    positive_float,
    positive_int,
    seconds,
    stream_kinds,
)

# The function that runs each command, by the name the parser puts in ``args.command``.
# The kinds the command line starts and shapes callbacks for: every product.
CLI_KINDS: Final = tuple(StreamKind)

COMMANDS: Final[Mapping[str, Callable[[argparse.Namespace], int]]] = {
    "diagram": run_diagram,
    "walk": run_walk,
    "simulate": run_simulate,
    "serve": run_serve,
    "start": run_start,
    "stop": run_stop,
    "status": run_status,
    "journal": run_journal,
    "deadletter": run_deadletter,
    "prune": run_prune,
    "sim": run_sim,
    "send-callback": run_send_callback,
}

_STORE_HELP: Final = (
    "where tasks are journaled: memory:, sqlite:PATH, postgres:DSN or postgresql://..."
    f" (default: ${STORE_ENV}, else {DEFAULT_STORE} in the current directory)"
)


def _version() -> str:
    try:
        return importlib.metadata.version("streamlife")
    except importlib.metadata.PackageNotFoundError:  # (run from a source tree, not installed)
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamlife",
        description="memories.ai live streams as explicit state machines.",
        epilog="Exit codes: 0 success, 1 the command found a problem, 2 bad usage.",
    )
    _logging_options(parser, defaults=True)
    parser.add_argument("--version", action="version", version=f"streamlife {_version()}")
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
    option("--streams", type=positive_int, default=50, help="streams to start (default: 50)")
    option("--minutes", type=positive_float, default=2.0, help="virtual minutes to run (default: 2)")
    option("--faults", choices=list(FAULT_PRESETS), default="default", help="fault preset (default: default)")
    option("--seed", type=int, default=0, help="seed for the faults and the run (default: 0)")
    option(
        "--mode",
        choices=list(SIM_MODES),
        default="segments",
        help="what the simulator's audio streams send: 5-second segments, or their provider's own"
        " messages passed through (default: segments)",
    )
    option(
        "--kinds",
        type=stream_kinds,
        default=(StreamKind.AUDIO, StreamKind.VIDEO),
        metavar="KIND,...",
        help="the products to run: audio, video, understand, separated by commas (default: audio,video)",
    )
    option("--http", action="store_true", help="cross real loopback sockets: HTTP face and webhooks")
    option("--json", action="store_true", help="print one JSON report instead of the live display")
    option(
        "--store",
        metavar="URL",
        default="memory:",
        help="journal the run's tasks in this store, which must hold no task yet: memory:, sqlite:PATH,"
        f" postgres:DSN (default: memory:; ${STORE_ENV} is not read here); read it afterwards with"
        " `streamlife status --all`",
    )
    sim.add_argument(
        "--speed",
        type=positive_float,
        default=None,
        help=f"virtual seconds per real second (default: {LIVE_SPEED:g} with the live display, flat out"
        " with --json)",
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
    _store_option(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument(
        "--port", type=port, default=8080, help="port to listen on (default: 8080; 0: any free)"
    )
    serve.add_argument(
        "--token",
        default=None,
        help=f"the webhook's secret token, {MIN_TOKEN_LENGTH} characters or more: the last segment of the"
        f" webhook URL (default: ${TOKEN_ENV}, which other users cannot see in `ps`; with --sim and"
        " neither, a random one)",
    )
    serve.add_argument(
        "--server",
        choices=SERVERS,
        default="builtin",
        help="the HTTP server: builtin (the default: streamlife's own, no extra needed; a connection per"
        " request, a timeout for each request and a cap on connections, so it may face the network"
        " alone) or uvicorn (pip install 'streamlife[server]': keep-alive, many times the throughput,"
        " --workers, /healthz and /metrics; it has no request timeout: put a proxy in front)",
    )
    serve.add_argument(
        "--workers",
        metavar="N",
        type=positive_int,
        default=1,
        help="with --server uvicorn: N processes sharing the socket and the store (sqlite or postgres,"
        " never memory:), each with its own Fleet and timers (default: 1)",
    )
    serve.add_argument(
        "--request-timeout",
        metavar="SECONDS",
        type=positive_float,
        default=None,
        help="builtin server: how long a client has to send its whole request before it is answered 408"
        f" and closed (default: {DEFAULT_REQUEST_TIMEOUT:g})",
    )
    serve.add_argument(
        "--max-connections",
        metavar="N",
        type=positive_int,
        default=None,
        help="builtin server: connections open at once, at most half the process's descriptor limit;"
        " past it the oldest one without a whole request is closed for a newcomer"
        f" (default: {DEFAULT_MAX_CONNECTIONS})",
    )
    serve.add_argument(
        "--keep-alive-timeout",
        metavar="SECONDS",
        type=positive_int,
        default=None,
        help=f"uvicorn: how long an idle keep-alive connection stays open (default: {DEFAULT_KEEP_ALIVE})",
    )
    serve.add_argument(
        "--limit-concurrency",
        metavar="N",
        type=positive_int,
        default=None,
        help="uvicorn: connections (idle keep-alive ones too) or requests at once per process at which it"
        " answers 503 (default: no limit; set it above your peak and below the descriptor limit)",
    )
    serve.add_argument(
        "--graceful-timeout",
        metavar="SECONDS",
        type=positive_int,
        default=None,
        help="uvicorn: on SIGTERM/SIGINT, how long the callbacks in flight get to finish before they are"
        f" cancelled (default: {DEFAULT_GRACEFUL})",
    )
    serve.add_argument(
        "--stop-wait",
        metavar="SECONDS",
        type=seconds,
        default=30.0,
        help="with a memory: store, how long to wait at exit for the stopped tasks to end (default: 30)",
    )
    serve.add_argument(
        "--join",
        action="store_true",
        help="other processes serve the same store (sqlite or postgres): take no task back at start;"
        " hold each task once its callbacks reach this process, and take over what the others leave"
        " overdue, as the second and later --workers do (default: take every unfinished task back)",
    )
    serve.add_argument(
        "--retention",
        metavar="DURATION",
        type=duration,
        default=None,
        help="prune the store every hour, from now on, of terminal tasks and dead letters older than this"
        " (30d, 12h, 90m, 3600s), as `streamlife prune --older-than` does (default: keep everything)",
    )
    face = serve.add_mutually_exclusive_group()
    _api_url_option(face)
    # Not in the group: it goes with --api-url (each product's host), and --sim refuses it itself.
    _understand_url_option(serve, with_sim="refused: its simulator serves both products")
    face.add_argument(
        "--sim",
        action="store_true",
        help="serve memories.ai's simulator (real time; faults with --faults) in this process as well,"
        " its webhooks posted here; its API URL is printed, for start and stop's --sim URL (or run"
        " `streamlife sim serve` apart, on a stable port)",
    )
    serve.add_argument(
        "--sim-port", metavar="PORT", type=port, default=0, help="the simulator's port (default: any free)"
    )
    serve.add_argument(
        "--faults",
        choices=list(FAULT_PRESETS),
        default=None,
        help="with --sim: the simulator's fault preset, as simulate's and sim serve's (default: none)",
    )
    serve.add_argument(
        "--mode",
        choices=list(SIM_MODES),
        default=None,
        help="with --sim: what its audio streams send, as sim serve's (default: segments)",
    )
    serve.add_argument(
        "--seed",
        type=int,
        default=None,
        help="with --sim: seed for its faults and task_ids, which repeat with it: use it with a fresh"
        " store (default: a fresh seed each run)",
    )

    start = commands.add_parser(
        "start",
        help="start one stream and journal it in the store",
        description="Start one stream and journal it in the store, where `status`, `journal`, `stop` and"
        " `serve` find it. Prints the task; exits 1 if it did not end up running. The API key comes from"
        f" {API_KEY_ENV}, unless --sim.",
    )
    start.add_argument(
        "kind",
        choices=[kind.value for kind in CLI_KINDS],
        help="audio (transcription), video (moderation) or understand (Live Video Understanding)",
    )
    start.add_argument(
        "url", nargs="?", default=None, help="the stream to pull: rtmp://, rtsp://, an HLS or HTTP URL"
    )
    start.add_argument(
        "--url", dest="url_option", metavar="URL", default=None, help="the stream to pull, as an option"
    )
    start.add_argument(
        "--provider", choices=PROVIDERS, help="who transcribes an audio stream (required for audio)"
    )
    understand = start.add_argument_group("Live Video Understanding (understand)")
    understand.add_argument(
        "--prompt",
        metavar="TEXT",
        default=None,
        help="the instruction applied to each window of the stream (required)",
    )
    understand.add_argument(
        "--system-prompt", metavar="TEXT", default=None, help="the model's role or context"
    )
    understand.add_argument("--thinking", action="store_true", help="reasoning mode (sends thinking=true)")
    understand.add_argument(
        "--callback",
        metavar="URL",
        default=None,
        help="the public http(s) URL memories.ai posts this stream's results to (default: the task's"
        " own URL under --public-url)",
    )
    understand.add_argument(
        "--public-url",
        metavar="URL",
        default=None,
        help="the public base URL at which memories.ai reaches `streamlife serve`: without --callback,"
        " the stream's results go to the task's own URL under it, URL/task/<key>/<signature>, signed"
        f" with the webhook token (default: ${PUBLIC_URL_ENV}; without it, --callback is required)",
    )
    understand.add_argument(
        "--token",
        default=None,
        help=f"the webhook token of `streamlife serve`, which signs the task's own URL (default:"
        f" ${TOKEN_ENV}, which other users cannot see in `ps`)",
    )
    start.add_argument(
        "--param",
        action="append",
        default=[],
        type=param,
        metavar="KEY=VALUE",
        help="one more field of the start request, e.g. provider=assemblyai or punctuate=true (VALUE is"
        " read as JSON when it parses, else taken as text); repeat for more",
    )
    _store_option(start)
    start.add_argument("--json", action="store_true", help="print the task as one JSON object")
    _api_options(start)
    _understand_url_option(start)

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
    _store_option(stop)
    stop.add_argument(
        "--wait",
        metavar="SECONDS",
        type=seconds,
        default=30.0,
        help="seconds to wait for the task to be terminal; they bound the stop request too (default: 30)",
    )
    stop.add_argument("--json", action="store_true", help="print the task as one JSON object")
    _api_options(stop)
    _understand_url_option(stop)

    status = commands.add_parser(
        "status",
        help="the tasks in the store",
        description="The tasks in the store that are not terminal (--all: every task), read from the store"
        " alone: no API key needed.",
    )
    _store_option(status)
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
    _store_option(history)
    history.add_argument("--json", action="store_true", help="print JSON: an array of journal entries")

    _deadletter_commands(commands)

    prune = commands.add_parser(
        "prune",
        help="forget terminal tasks and dead letters older than a retention period",
        description="Delete from the store every terminal task (stopped, ended, failed) whose last event is"
        " older than --older-than, with its journal, and every dead letter kept before then. Tasks that"
        " are not terminal are never touched, nor are parked callbacks. Safe while `serve` runs on the"
        " same store: a task another process is writing is left for the next prune.",
    )
    _store_option(prune)
    prune.add_argument(
        "--older-than",
        metavar="DURATION",
        type=duration,
        required=True,
        help="the retention period: 30d, 12h, 90m or 3600s (days, hours, minutes, seconds)",
    )
    prune.add_argument("--dry-run", action="store_true", help="count what would go, and delete nothing")
    prune.add_argument(
        "--json", action="store_true", help="print JSON: what went (or would go), and the cutoff"
    )
    _sim_commands(commands)
    _send_callback_command(commands)
    _after_the_command(commands)
    return parser


def _after_the_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The logging options on every command's parser, and on its actions' (`sim serve --log-level
    info`, `deadletter list --log-level info`), so they may follow the command's name."""
    for command in commands.choices.values():
        _logging_options(command, defaults=False)
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _after_the_command(action)


def _sim_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``sim serve``: the simulator, served for your own code to talk to."""
    sim = commands.add_parser(
        "sim",
        help="memories.ai's simulator, served for your code: sim serve",
        description="memories.ai's simulator, for developing against: `sim serve` runs it on a stable"
        " port, in real time, posting every stream's callbacks to your webhook.",
    )
    actions = sim.add_subparsers(dest="action", required=True, metavar="ACTION")
    serve = actions.add_parser(
        "serve",
        help="serve the simulated API, its callbacks posted to --webhook, until SIGTERM/SIGINT",
        description="Serve memories.ai's stream API, simulated, on HOST:PORT until SIGTERM or SIGINT:"
        " start and stop streams there (point MEMORIES_BASE_URL or --api-url at it) and their callbacks"
        " are posted to --webhook, every 5 seconds of the stream's life, as memories.ai posts them to the"
        " account's webhook; Live Video Understanding is served on --understand-port, its results"
        " posted to the callback URL each start names. Prints the API's URL on stdout, then the"
        " understand host's. It takes the API key in"
        f" {API_KEY_ENV}, or {SIM_API_KEY} when that is not set. At exit it says which streams were"
        " never stopped.",
    )
    option = serve.add_argument
    option(
        "--webhook",
        metavar="URL",
        required=True,
        help="where every audio and video callback is posted, as memories.ai's console webhook: their"
        " start requests name none. For `streamlife serve`: http://127.0.0.1:8080/<its token>",
    )
    option("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    option(
        "--port",
        type=port,
        default=SIM_PORT,
        help=f"port to listen on (default: {SIM_PORT}, the same every run; 0: any free)",
    )
    option(
        "--understand-port",
        metavar="PORT",
        type=port,
        default=SIM_UNDERSTAND_PORT,
        help="port of Live Video Understanding's host, whose results go to each start's callback URL"
        f" (default: {SIM_UNDERSTAND_PORT}; 0: any free)",
    )
    option(
        "--faults",
        choices=list(FAULT_PRESETS),
        default="none",
        help="fault preset, as simulate's (default: none)",
    )
    option(
        "--seed",
        type=int,
        default=None,
        help="seed for the faults and the task_ids, which repeat with it: use it with a fresh store"
        " (default: a fresh seed each run, printed)",
    )
    option(
        "--mode",
        choices=list(SIM_MODES),
        default="segments",
        help="what audio streams send: 5-second segments, or their provider's own messages passed"
        " through (default: segments)",
    )
    option(
        "--speed",
        type=positive_float,
        default=1.0,
        help="virtual seconds per real second: at 10 a segment comes every half second (default: 1)",
    )
    option(
        "--max-streams",
        metavar="N",
        type=positive_int,
        default=10_000,
        help="live streams at once past which a start answers status 16, capacity (default: 10000)",
    )
    option(
        "--redeliver",
        action="store_true",
        help="keep a callback the webhook failed to take, and send it again, in order, before newer ones"
        " (memories.ai documents no redelivery: by default a failed callback is dropped)",
    )


def _send_callback_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    send = commands.add_parser(
        "send-callback",
        help="post one memories.ai callback to a webhook, and show the answer",
        description="Post one callback to URL, in the shape memories.ai sends it: a segment (an audio"
        " transcript, partial or final, a video moderation result, or a Live Video Understanding"
        " result), the status-14 stop callback, or a status callback that ends the stream (audio and"
        " video only: Live Video Understanding documents neither). The token (--token, or"
        f" ${TOKEN_ENV}) goes in the X-Streamlife-Token header, which `streamlife serve` reads as it"
        " reads the token at the end of the URL. Prints the answer's status and body; exits 1 unless"
        " it is 2xx.",
    )
    option = send.add_argument
    option("url", metavar="URL", help="the webhook: http://127.0.0.1:8080/<token> for `streamlife serve`")
    option("--task", metavar="ID", required=True, help="the task_id the callback is about")
    option("--kind", choices=CALLBACK_KINDS, required=True, help="what the callback says")
    option(
        "--stream",
        choices=[kind.value for kind in CLI_KINDS],
        default="audio",
        help="the stream's kind, which shapes the callback (default: audio)",
    )
    option(
        "--index",
        metavar="N",
        type=non_negative_int,
        default=None,
        help="the segment's index, from 0 (default: 0); with --kind stopped or ended on audio, the last"
        " segment's, which the callback then names",
    )
    option(
        "--text",
        default=None,
        help="an audio segment's transcript (default: hello there), or an understand result's text",
    )
    option(
        "--timestamp",
        metavar="ISO",
        default=None,
        help="an understand result's timestamp, which tells it from the others (default: now, UTC)",
    )
    option("--partial", action="store_true", help="an audio segment's partial transcript, not its final")
    option("--unsafe", action="store_true", help="a video segment found unsafe content")
    option(
        "--provider",
        choices=PROVIDERS,
        default=None,
        help="an audio segment in pass-through mode: the provider's own message (AssemblyAI's Turn,"
        " ElevenLabs' partial or committed transcript) in the webhook envelope (default: segments mode)",
    )
    option(
        "--status",
        metavar="N",
        type=int,
        default=None,
        help="with --kind ended: the status (default: 12; memories.ai documents only 14, stopped by the"
        " user, and 16, capacity reached: 12 is the simulator's stand-in for a source that ended)",
    )
    option(
        "--token",
        default=None,
        help=f"the webhook's token, sent in the X-Streamlife-Token header (default: ${TOKEN_ENV}; none if"
        " unset)",
    )
    option(
        "--timeout", metavar="SECONDS", type=positive_float, default=10.0, help="give up after (default: 10)"
    )
    option("--dry-run", action="store_true", help="print the callback as JSON, and send nothing")
    option("--json", action="store_true", help="print JSON: the answer's status and body, and what was sent")


def _logging_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """``--log-level`` and ``--log-format``: on the main parser with their defaults, and on each
    command's without, so that one given after the command overrides one given before it."""
    parser.add_argument(
        "--log-level",
        default="error" if defaults else argparse.SUPPRESS,
        choices=["debug", "info", "warning", "error"],
        help="show streamlife's own log events at this level and above (default: error)",
    )
    parser.add_argument(
        "--log-format",
        default="console" if defaults else argparse.SUPPRESS,
        choices=["console", "json"],
        help="log events as lines for people (console, the default) or one JSON object a line (json)",
    )


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
    _store_option(shared)

    listing = actions.add_parser(
        "list",
        parents=[shared],
        help="the kept letters, oldest first",
        description="The kept dead letters, oldest first: id, time (UTC), size, the field at fault, the"
        " parser's reason, and the start of the body (control characters shown escaped).",
    )
    listing.add_argument(
        "--after", metavar="ID", type=letter_id_or_zero, default=0, help="only letters after this id"
    )
    listing.add_argument("--limit", metavar="N", type=positive_int, default=None, help="at most N letters")
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
    show.add_argument("id", metavar="ID", type=letter_id, help="the letter's id (see `deadletter list`)")
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
    replay.add_argument("ids", metavar="ID", nargs="*", type=letter_id, help="the letters (default: all)")
    replay.add_argument("--json", action="store_true", help="print JSON: an array of results")

    purge = actions.add_parser(
        "purge",
        parents=[shared],
        help="forget letters: the IDs given, or --all",
        description="Forget the dead letters given (or every one, with --all). Exits 1 if an ID is not kept.",
    )
    purge.add_argument("ids", metavar="ID", nargs="*", type=letter_id, help="the letters to forget")
    purge.add_argument("--all", action="store_true", help="forget every letter")
    purge.add_argument("--json", action="store_true", help="print JSON: how many went, and the IDs not kept")


def _store_option(command: argparse.ArgumentParser) -> None:
    # None: not given; ``environment.resolve`` reads STREAMLIFE_STORE then, and names it if it is bad.
    command.add_argument("--store", metavar="URL", default=None, help=_STORE_HELP)


def _api_url_option(where: argparse._ActionsContainer) -> None:
    where.add_argument(
        "--api-url",
        metavar="URL",
        default=None,
        help=f"memories.ai's API, or a simulator's (default: ${BASE_URL_ENV}, else {DEFAULT_BASE_URL})",
    )


def _understand_url_option(
    command: argparse._ActionsContainer, with_sim: str = "none: give the simulator's"
) -> None:
    command.add_argument(
        "--understand-url",
        metavar="URL",
        default=None,
        help="Live Video Understanding's API, a host of its own, or a simulator's (default:"
        f" ${UNDERSTAND_URL_ENV}, else {DEFAULT_UNDERSTAND_URL}; with --sim, {with_sim})",
    )


def _api_options(command: argparse.ArgumentParser) -> None:
    where = command.add_mutually_exclusive_group()
    _api_url_option(where)
    where.add_argument(
        "--sim",
        metavar="URL",
        default=None,
        help="talk to the simulator at URL instead, with the key it takes ($MEMORIES_API_KEY, else"
        f" {SIM_API_KEY}): as --api-url URL, but needing no key; URL may be just http://HOST:PORT",
    )
