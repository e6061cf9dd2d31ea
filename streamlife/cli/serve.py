"""``serve``: the webhook receiver, for the store's tasks, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from typing import Final

from streamlife._clock import ManualClock
from streamlife._health import Health
from streamlife._metrics import SYNC_EVERY, Metrics, Source
from streamlife._metrics import available as metrics_available
from streamlife._ops import OpsApplication
from streamlife._policy import Policy
from streamlife._relay import RelayOwner, RelaySink, owns_row, owns_task_id, relaying
from streamlife._repeating import repeating
from streamlife._simulate import FAULT_PRESETS
from streamlife._timer_loop import TimerLoop
from streamlife._together import apply_together
from streamlife._webhook_server import DEFAULT_MAX_CONNECTIONS, DEFAULT_REQUEST_TIMEOUT
from streamlife.aio import AsyncFleet
from streamlife.fleet import Fleet
from streamlife.sim import RealTime, SimMode, SimulatedService, serve_http
from streamlife.store import MemoryStore, Store, mask_store_url, pruning
from streamlife.transport.http import DEFAULT_UNDERSTAND_URL, HttpTransport
from streamlife.webhook import MAX_PREVIOUS_TOKENS, MIN_TOKEN_LENGTH, WebhookReceiver, serve_webhook

from . import production
from .api import api_key, sim_key
from .exits import EXIT_OK, Problem, Usage
from .production import UvicornSettings
from .render import plural
from .running import listening, reachable, until_signalled
from .stores import check_store_url, open_url

TOKEN_ENV: Final = "STREAMLIFE_WEBHOOK_TOKEN"
# Tokens taken besides the current one while it is rotated, comma-separated. No option: a token on
# the command line shows in ``ps``.
PREVIOUS_TOKENS_ENV: Final = "STREAMLIFE_WEBHOOK_PREVIOUS_TOKENS"
SERVERS: Final = ("builtin", "uvicorn")


@dataclass(frozen=True)
class ServeSettings:
    """Everything a serving process needs, checked: what ``run_serve`` hands each worker."""

    store: str
    host: str
    port: int
    server: str  # "builtin" | "uvicorn"
    workers: int
    api_url: str
    understand_url: str  # Live Video Understanding's host (with sim, its simulator's instead)
    retention: float | None
    join: bool  # take no task back at start: other processes serve the store too
    stop_wait: float
    sim: bool
    sim_port: int
    sim_faults: str  # a preset's name: none, default, all
    sim_mode: SimMode
    sim_seed: int | None  # None: a fresh one
    log_level: str
    log_format: str
    request_timeout: float  # the builtin server's
    max_connections: int  # the builtin server's
    uvicorn: UvicornSettings | None
    token: str = field(repr=False)
    key: str = field(repr=False)
    previous_tokens: tuple[str, ...] = field(default=(), repr=False)
    # With --workers, the Unix sockets where the workers take each other's callbacks
    # (``streamlife._relay``): one on SQLite (worker 0's, which applies them all), one a worker on
    # PostgreSQL (each applies the callbacks of its share of the tasks); none for one process.
    relay: tuple[str, ...] = ()


def run_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.workers == 1:
        return _serve(settings, None, 0)
    # Opened once here first: a store that cannot be opened is bad usage, said once, and its schema
    # is made or migrated by one process, before the workers race to.
    open_url(settings.store).close()
    sock = production.bind(settings.host, settings.port)
    limit = production.raise_descriptor_limit()
    stopping = threading.Event()
    with until_signalled(stopping), ExitStack() as stack:
        directory = tempfile.mkdtemp(prefix="streamlife-relay-")  # (this user's alone)
        stack.callback(shutil.rmtree, directory, ignore_errors=True)
        # SQLite lets one process write at a time: one worker applies every callback.
        owners = 1 if check_store_url(settings.store)[0] == "sqlite" else settings.workers
        sockets = tuple(os.path.join(directory, f"relay-{n}.sock") for n in range(owners))
        settings = replace(settings, relay=sockets)
        print(
            f"streamlife serve: webhooks at {production.url_of(sock)}/<token hidden>; uvicorn,"
            f" {settings.workers} workers on {mask_store_url(settings.store)}; descriptor limit {limit}",
            file=sys.stderr,
            flush=True,
        )
        return production.supervise(serve_worker, settings, sock, settings.workers, stopping)


def serve_worker(settings: ServeSettings, sock: socket.socket, index: int) -> int:
    """One of ``--workers`` processes (``production.supervise`` spawns it): serve ``sock`` as the only
    process would, and end as the command line would."""
    from .app import run_logged

    level, log_format = settings.log_level, settings.log_format
    return run_logged("serve", level, lambda: _serve(settings, sock, index), log_format=log_format)


def _settings(args: argparse.Namespace) -> ServeSettings:
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV, "")
    if not args.sim:
        shaping = (("--faults", args.faults), ("--mode", args.mode), ("--seed", args.seed))
        given = [name for name, value in shaping if value is not None]
        if given:
            raise Usage(f"{', '.join(given)}: only with --sim (they shape the simulator it serves)")
    if not token and args.sim:
        token = secrets.token_urlsafe(24)  # the simulator is the only sender, and it is told
    if not token:
        raise Usage(
            f"serve needs a webhook token: --token T or {TOKEN_ENV}, {MIN_TOKEN_LENGTH} characters or"
            " more (memories.ai signs nothing: the token in the webhook URL is what keeps strangers out)"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise Usage(f"the webhook token must be {MIN_TOKEN_LENGTH} characters or more, got {len(token)}")
    previous_tokens = _previous_tokens()
    key = sim_key() if args.sim else api_key()
    kind, _ = check_store_url(args.store)
    if args.join and kind == "memory":
        raise Usage(
            "--join: a memory: store is one process's alone, so no other process serves it; share"
            " sqlite:PATH or postgres:DSN"
        )
    uvicorn_settings = _server_settings(args, kind)
    return ServeSettings(
        store=args.store,
        host=args.host,
        port=args.port,
        server=args.server,
        workers=args.workers,
        api_url=args.api_url,
        understand_url=args.understand_url or DEFAULT_UNDERSTAND_URL,
        retention=args.retention,
        join=args.join,
        stop_wait=args.stop_wait,
        sim=args.sim,
        sim_port=args.sim_port,
        sim_faults=args.faults or "none",
        sim_mode=args.mode or "segments",
        sim_seed=args.seed,
        log_level=args.log_level,
        log_format=args.log_format,
        request_timeout=DEFAULT_REQUEST_TIMEOUT if args.request_timeout is None else args.request_timeout,
        max_connections=DEFAULT_MAX_CONNECTIONS if args.max_connections is None else args.max_connections,
        uvicorn=uvicorn_settings,
        token=token,
        key=key,
        previous_tokens=previous_tokens,
    )


def _previous_tokens() -> tuple[str, ...]:
    """``STREAMLIFE_WEBHOOK_PREVIOUS_TOKENS``: the tokens taken besides the current one while it is
    rotated, comma-separated; bad usage for one too short, or too many. Never shown."""
    given = os.environ.get(PREVIOUS_TOKENS_ENV)
    if given is None:
        return ()
    tokens = tuple(token.strip() for token in given.split(",") if token.strip())
    if not tokens:
        raise Usage(f"{PREVIOUS_TOKENS_ENV} is set but empty: give it the tokens rotated out, or unset it")
    if len(tokens) > MAX_PREVIOUS_TOKENS:
        raise Usage(f"{PREVIOUS_TOKENS_ENV} holds {len(tokens)} tokens: at most {MAX_PREVIOUS_TOKENS}")
    for number, token in enumerate(tokens, 1):
        if len(token) < MIN_TOKEN_LENGTH:
            raise Usage(
                f"{PREVIOUS_TOKENS_ENV}: token {number} is {len(token)} characters; a webhook token is"
                f" {MIN_TOKEN_LENGTH} or more"
            )
    return tokens


def _server_settings(args: argparse.Namespace, store_kind: str) -> UvicornSettings | None:
    """Each option for the server it belongs to; bad usage for one given to the other server."""
    builtin_only = {"--request-timeout": args.request_timeout, "--max-connections": args.max_connections}
    uvicorn_only = {
        "--keep-alive-timeout": args.keep_alive_timeout,
        "--limit-concurrency": args.limit_concurrency,
        "--graceful-timeout": args.graceful_timeout,
    }
    if args.server == "builtin":
        given = [option for option, value in uvicorn_only.items() if value is not None]
        if args.workers != 1:
            given.insert(0, "--workers")
        if given:
            raise Usage(f"{', '.join(given)}: only with --server uvicorn")
        return None
    given = [option for option, value in builtin_only.items() if value is not None]
    if given:
        raise Usage(
            f"{', '.join(given)}: only with --server builtin (uvicorn has no request timeout: put a proxy"
            " with header and body timeouts in front, and use --limit-concurrency)"
        )
    if args.workers > 1 and store_kind == "memory":
        raise Usage(
            "--workers: a memory: store is one process's alone, and each worker would have its own;"
            " share sqlite:PATH or postgres:DSN between workers, or run one"
        )
    if args.workers > 1 and args.sim:
        raise Usage(
            "--workers with --sim: the simulator lives in one process; run it with one worker, or run"
            " the workers against a simulator served apart (--api-url)"
        )
    production.check_installed()
    return UvicornSettings(
        keep_alive=production.DEFAULT_KEEP_ALIVE
        if args.keep_alive_timeout is None
        else args.keep_alive_timeout,
        limit_concurrency=args.limit_concurrency,
        graceful=production.DEFAULT_GRACEFUL if args.graceful_timeout is None else args.graceful_timeout,
    )


def _serve(settings: ServeSettings, sock: socket.socket | None, index: int) -> int:
    """Serve until SIGTERM or SIGINT: the only process (``sock`` None: listen here) or worker
    ``index`` of several on ``sock``."""
    token = settings.token
    shown = mask_store_url(settings.store)
    stopping = threading.Event()
    supervised = sock is not None  # one of several workers: the supervisor speaks for them all
    worker = f"worker {index}: " if supervised else ""
    with ExitStack() as stack:
        # First: a signal that comes while the tasks are taken back ends serve once it has started.
        stack.enter_context(until_signalled(stopping))
        store = open_url(settings.store)
        stack.callback(store.close)
        service = None
        if settings.sim:
            # A fresh seed each time unless --seed: the simulator's task_ids follow from it, and a
            # store kept from an earlier serve must not meet the same task_ids again.
            seed = secrets.randbits(64) if settings.sim_seed is None else settings.sim_seed
            faults = FAULT_PRESETS[settings.sim_faults](seed)
            clock = ManualClock(time.time())
            service = SimulatedService(
                clock=clock, faults=faults, api_key=settings.key, mode=settings.sim_mode
            )
            face = stack.enter_context(
                listening(
                    serve_http(service, host=settings.host, port=settings.sim_port),
                    settings.host,
                    settings.sim_port,
                )
            )
            api_url, understand_url = face.base_url, face.understand_url
        else:
            api_url, understand_url = settings.api_url, settings.understand_url
        transport = HttpTransport(settings.key, base_url=api_url, understand_url=understand_url)
        stack.callback(transport.close)
        fleet = stack.enter_context(
            Fleet(transport, store=store, policy=Policy(retention=settings.retention))
        )
        # Each task's timers run in one process, not in all: the one that applies its callbacks.
        # On PostgreSQL each worker takes back the tasks it owns (``owns_row``), and the parked
        # callbacks it owns (``owns_task_id``); elsewhere worker 0 takes them all back. The others
        # take over only what is left overdue (``Policy.takeover_after``). A process told to join
        # others takes nothing back.
        owners = len(settings.relay)
        takes_back = not settings.join and (index == 0 or owners > 1)
        share = functools.partial(owns_row, me=index, owners=owners) if owners > 1 else None
        parked = functools.partial(owns_task_id, me=index, owners=owners) if owners > 1 else True
        recovered = fleet.recover(only=share, parked=parked) if takes_back else []
        waiting = fleet.stats().parked  # task_ids whose parked callbacks it took back (none yet else)
        if fleet.policy.retention is not None and index == 0:  # one pruner is enough
            stack.enter_context(pruning(store, fleet.policy.retention, clock=fleet.clock))
        timers = stack.enter_context(TimerLoop(fleet))
        previous = settings.previous_tokens
        receiver = WebhookReceiver(fleet, token=token, previous_tokens=previous)
        if settings.uvicorn is None:
            hook = stack.enter_context(
                listening(
                    serve_webhook(
                        receiver,
                        settings.host,
                        settings.port,
                        request_timeout=settings.request_timeout,
                        max_connections=settings.max_connections,
                    ),
                    settings.host,
                    settings.port,
                )
            )
            url, port = hook.url, int(hook.server.server_address[1])
            where = f"webhooks at {url}/<token hidden>"
        else:
            if sock is None:
                sock = production.bind(settings.host, settings.port)
                limit = production.raise_descriptor_limit()
                served = f" (uvicorn; descriptor limit {limit})"
            else:
                served = ""
            relay = settings.relay
            owning = functools.partial(apply_together, fleet)
            if len(relay) == 1 and index == 0:
                # Worker 0 takes no connection: it applies what the others pass on, on its own loop.
                stack.enter_context(_synced_metrics(store, fleet))
                stack.enter_context(relaying(RelayOwner(relay[0], owning)))
                where = "applying the callbacks the other workers receive"
            else:
                local = AsyncFleet.from_fleet(fleet)
                stack.callback(local.close)  # (after its event loop has ended)
                sink: AsyncFleet | RelaySink = local
                if len(relay) > 1:  # this worker owns a share of the tasks: it takes theirs
                    stack.enter_context(relaying(RelayOwner(relay[index], owning)))
                if relay:
                    sink = RelaySink(relay, local, me=index)
                front = WebhookReceiver(sink, token=token, previous_tokens=previous)
                app = stack.enter_context(_ops_application(front, store, timers, fleet))
                running = stack.enter_context(production.serving(app, sock, settings.uvicorn))
                url, port = running.url, int(sock.getsockname()[1])
                where = f"webhooks at {url}/<token hidden>{served}"
                if relay:
                    where += ", passed on to worker 0" if len(relay) == 1 else ", each to its task's worker"
        if service is not None:
            # The simulator's webhook is this receiver; understand results go to each start's callback.
            face.poster.url = f"http://{reachable(settings.host)}:{port}/{token}"
            stack.enter_context(RealTime(service))
            print(
                f"streamlife serve: simulator API at {api_url} (faults {settings.sim_faults}; Live Video"
                f" Understanding at {understand_url}; try:"
                " streamlife start audio rtmp://example.invalid/live --provider assemblyai --sim"
                f" {api_url} --store {shown})"
                if not isinstance(store, MemoryStore)
                else f"streamlife serve: simulator API at {api_url} (faults {settings.sim_faults}; Live"
                f" Video Understanding at {understand_url}; a"
                " memory: store is this process's alone: streams other commands start are orphans here,"
                " stopped after Policy.park_ttl)",
                file=sys.stderr,
            )
        print(
            f"streamlife serve: {worker}{where}; "
            + (
                f"recovered {plural(len(recovered), 'task')}{' of its share' if share else ''} from {shown}"
                + (f", and the callbacks parked for {plural(waiting, 'task_id')}" if waiting else "")
                if takes_back
                else f"taking over what another process leaves overdue in {shown}"
            ),
            file=sys.stderr,
            flush=True,
        )
        while not stopping.wait(0.5):
            pass
        if supervised:
            return EXIT_OK
        return _leave(fleet, store, shown, settings.stop_wait)
    raise AssertionError("unreachable")  # the block returns; mypy cannot tell that ExitStack raises


@contextmanager
def _ops_application(
    receiver: WebhookReceiver, store: Store, timers: TimerLoop, fleet: Fleet
) -> Iterator[OpsApplication]:
    """The application uvicorn serves: the receiver, /healthz and /metrics (with the extra)."""
    with _synced_metrics(store, fleet) as metrics:
        app = OpsApplication(receiver.asgi, Health(store, timers), metrics)
        try:
            yield app
        finally:
            app.close()


@contextmanager
def _synced_metrics(store: Store, fleet: Fleet) -> Iterator[Metrics | None]:
    """This process's metrics (None without the extra), synced while the block runs: with
    ``--workers``, to the figures that every worker adds to, whichever answers a scrape."""
    if not metrics_available():
        yield None
        return
    metrics = Metrics(Source(fleet.stats, store.rows, fleet.clock.now))
    with repeating(metrics.sync, SYNC_EVERY, "streamlife-metrics"):
        yield metrics


def _leave(fleet: Fleet, store: Store, shown: str, stop_wait: float) -> int:
    """What serve does on SIGTERM/SIGINT, while its receiver still takes callbacks."""
    if not isinstance(store, MemoryStore):
        alive = sum(1 for _ in store.rows())
        print(
            f"streamlife serve: leaving {plural(alive, 'unfinished task')} in {shown} (the next serve"
            " recovers them)",
            file=sys.stderr,
        )
        return EXIT_OK
    alive = sum(not task.terminal for task in fleet.tasks())
    parked = fleet.stats().parked
    print(
        f"streamlife serve: stopping {plural(alive, 'task')} and {plural(parked, 'stream')} known only by its"
        " callbacks (a memory: store remembers nothing)",
        file=sys.stderr,
    )
    left = fleet.stop_all(wait=stop_wait)
    if not left:
        return EXIT_OK
    ids = ", ".join(str(task.task_id or task.key) for task in left[:10])
    raise Problem(
        f"{plural(len(left), 'task')} not terminal after {stop_wait:g} s; their streams may bill: {ids}"
    )
