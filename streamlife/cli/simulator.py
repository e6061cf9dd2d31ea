"""``sim serve``: memories.ai's simulator on stable ports, in real (or scaled) time, posting its
callbacks to your webhook, faults on if asked, until SIGTERM or SIGINT.

memories.ai posts an audio or video stream's callbacks to the account's one webhook, set in its
console; their start requests document no callback field. ``--webhook`` plays the console's
setting. Live Video Understanding has a host of its own (``--understand-port``), and posts each
task's results to the ``callback`` URL its start names, as given.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import threading
import time
from contextlib import ExitStack
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from streamlife._clock import ManualClock
from streamlife._simulate import FAULT_PRESETS
from streamlife._task_urls import task_route
from streamlife.sim import Delivery, RealTime, SimulatedService, WebhookPoster, serve_http
from streamlife.webhook import hide_token

from .api import API_KEY_ENV, SIM_API_KEY, sim_key
from .exits import EXIT_OK, Usage
from .render import plural
from .running import listening, reachable, until_signalled

SIM_PORT: Final = 8790  # stable, so MEMORIES_BASE_URL need not change between runs
SIM_UNDERSTAND_PORT: Final = 8791  # Live Video Understanding's host, as stable


def run_sim(args: argparse.Namespace) -> int:
    return run_sim_serve(args)  # the one action so far


def run_sim_serve(args: argparse.Namespace) -> int:
    webhook = checked_webhook(args.webhook, option="--webhook ")
    seed = secrets.randbits(32) if args.seed is None else args.seed
    faults = FAULT_PRESETS[args.faults](seed)
    service = SimulatedService(
        clock=ManualClock(time.time()),
        faults=faults,
        api_key=sim_key(),
        max_streams=args.max_streams,
        mode=args.mode,
    )
    stopping = threading.Event()
    with ExitStack() as stack:
        stack.enter_context(until_signalled(stopping))
        # The poster first: it closes after the servers, which may post a start's early callback.
        poster = _Reporting(webhook, redeliver=args.redeliver)
        stack.callback(poster.close)
        served = serve_http(
            service, host=args.host, port=args.port, understand_port=args.understand_port, poster=poster
        )
        face = stack.enter_context(listening(served, args.host, args.port))
        stack.enter_context(RealTime(service, speed=args.speed))
        api_url, understand_url = (_reachable(face.base_url), _reachable(face.understand_url))
        key = f"the key in {API_KEY_ENV}" if sim_key() != SIM_API_KEY else f"the key {SIM_API_KEY}"
        print(
            f"streamlife sim serve: memories.ai simulated at {api_url} (it takes {key}), Live Video"
            f" Understanding at {understand_url}; callbacks to {mask_webhook(webhook)} (understand"
            f" results to each start's callback URL); faults {args.faults} (seed {seed}), mode"
            f" {args.mode}, speed {args.speed:g}{', redelivered' if args.redeliver else ''}",
            file=sys.stderr,
            flush=True,
        )
        print(api_url, flush=True)  # stdout: what a script wants, the API's URL first
        print(understand_url, flush=True)
        while not stopping.wait(0.5):
            pass
    # The driver and the server have stopped: the ledger stands still.
    _summary(service, poster)
    return EXIT_OK


def _reachable(url: str) -> str:
    """``url`` as a local client reaches it: a wildcard host named as loopback."""
    parts = urlsplit(url)
    host = str(parts.hostname)
    return url.replace(f"//{host}:", f"//{reachable(host)}:", 1)


def checked_webhook(url: str, *, option: str = "") -> str:
    """``url``, or bad usage if it is not an http:// or https:// URL with a host (shown masked,
    after ``option``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Usage(f"{option}{mask_webhook(url)!r} is not an http:// or https:// URL")
    return url


def mask_webhook(url: str) -> str:
    """``url`` with what may be its secret hidden: its last path segment (the token, as `serve` takes
    it), its query, its password."""
    parts = urlsplit(url)
    path = hide_token(parts.path, "<token hidden>")
    netloc = parts.netloc.rpartition("@")[2] if "@" in parts.netloc else parts.netloc
    return urlunsplit((parts.scheme, netloc, path, "<hidden>" if parts.query else "", ""))


class _Reporting(WebhookPoster):
    """The simulator's poster: posts each callback where it goes, counts the callbacks acknowledged
    (with ``redeliver``, those sent again too) and the attempts that failed, and says on stderr when
    a URL starts failing and when it answers again (not every failure: a receiver that is down fails
    every few seconds)."""

    def __init__(self, webhook: str, *, redeliver: bool) -> None:
        super().__init__(webhook, redeliver=redeliver)
        self.acknowledged = 0
        self.failed = 0
        self._failing: set[str | None] = set()  # the webhook (None), or a start's callback URL
        self._counting = threading.Lock()

    def deliver(self, delivery: Delivery) -> bool:
        delivered = super().deliver(delivery)
        to = delivery.callback
        with self._counting:
            failures = self.failures
            reason = failures[-1][1] if failures else "refused"
            # The poster's own records would grow for as long as this runs: counted, then let go.
            # (``del`` of the counted head keeps what another thread appends meanwhile.)
            acknowledged, failed = len(self.delivered), len(failures)
            del self.delivered[:acknowledged], failures[:failed]
            self.acknowledged += acknowledged
            self.failed += failed
            if delivered == (to not in self._failing):
                return delivered
            self._failing.symmetric_difference_update({to})
            shown = (
                f"the callback URL {mask_webhook(to)}" if to else f"the webhook {mask_webhook(str(self.url))}"
            )
            if delivered:
                said = f"{shown} answers again"
            else:
                kept = "kept, to send again" if self.redeliver else "dropped, as --redeliver is off"
                said = f"{shown} failed ({reason}): callbacks {kept}"
                if reason == "HTTP 401":
                    said += _why_unauthorized(to)
        print(f"streamlife sim serve: {said}", file=sys.stderr, flush=True)
        return delivered


def _why_unauthorized(to: str | None) -> str:
    """What a 401 from ``to`` most likely means: a task's own URL carries a signature made with the
    webhook token, any other URL the token itself."""
    if to is not None and task_route(urlsplit(to).path) is not None:
        return " (a task's own URL: were its start and the receiver given the same token?)"
    return " (memories.ai signs nothing: does the URL end with the receiver's token?)"


def _summary(service: SimulatedService, poster: _Reporting) -> None:
    billing = service.billing()
    billed = sum(service.billed_seconds(task_id) for task_id in service.streams)
    line = (
        f"streamlife sim serve: {plural(len(service.streams), 'stream')} started,"
        f" {len(billing)} still billing ({billed:g} s billed in all);"
        f" {plural(poster.acknowledged, 'callback')} delivered, {plural(poster.failed, 'failed attempt')}"
    )
    kept = len(poster.pending)
    if kept:
        line += f" ({kept} kept for redelivery, never delivered)"
    if billing:
        shown = ", ".join(billing[:10]) + (", ..." if len(billing) > 10 else "")
        line += f"; never stopped: {shown}"
    print(line, file=sys.stderr, flush=True)
