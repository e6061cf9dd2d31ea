"""``serve``: the webhook receiver, for the store's tasks, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from types import FrameType
from typing import Any, Final, TypeVar

import structlog

from streamlife._clock import ManualClock
from streamlife._policy import Policy
from streamlife._repeating import repeating
from streamlife.fleet import Fleet
from streamlife.sim import Faults, SimulatedService, serve_http
from streamlife.sim.http import WebhookPoster
from streamlife.store import MemoryStore, Store, mask_store_url, pruning
from streamlife.transport.http import HttpTransport
from streamlife.webhook import MIN_TOKEN_LENGTH, WebhookReceiver, serve_webhook

from .api import SIM_API_KEY, api_key
from .exits import EXIT_OK, Problem, Usage
from .render import plural
from .stores import check_store_url, open_url

TOKEN_ENV: Final = "STREAMLIFE_WEBHOOK_TOKEN"
SIM_TICK: Final = 0.1  # real seconds between two advances of `serve --sim`'s simulator

Served = TypeVar("Served")


def run_serve(args: argparse.Namespace) -> int:
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV, "")
    if not token and args.sim:
        token = secrets.token_urlsafe(24)  # the simulator is the only sender, and it is told
    if not token:
        raise Usage(
            f"serve needs a webhook token: --token T or {TOKEN_ENV}, {MIN_TOKEN_LENGTH} characters or"
            " more (memories.ai signs nothing: the token in the webhook URL is what keeps strangers out)"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise Usage(f"the webhook token must be {MIN_TOKEN_LENGTH} characters or more, got {len(token)}")
    key = SIM_API_KEY if args.sim else api_key()
    check_store_url(args.store)
    shown = mask_store_url(args.store)
    stopping = threading.Event()
    with ExitStack() as stack:
        store = open_url(args.store)
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
        fleet = stack.enter_context(Fleet(transport, store=store, policy=Policy(retention=args.retention)))
        recovered = fleet.recover()
        if fleet.policy.retention is not None:
            stack.enter_context(pruning(store, fleet.policy.retention, clock=fleet.clock))
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
            f"streamlife serve: webhooks at {hook.url}/<token hidden>;"
            f" recovered {plural(len(recovered), 'task')} from {shown}",
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


@contextmanager
def _listening(server: AbstractContextManager[Served], host: str, port: int) -> Iterator[Served]:
    """Enter a server's block; an address that cannot be listened on is bad usage."""
    try:
        running = server.__enter__()
    except OSError as error:
        raise Usage(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
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
    log = structlog.get_logger("streamlife")

    def advance() -> None:
        try:
            service.run_until(max(time.time(), service.clock.now()))
        except Exception:
            log.exception("streamlife.sim_failed")

    with repeating(advance, SIM_TICK, "streamlife-sim-clock"):
        yield


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
