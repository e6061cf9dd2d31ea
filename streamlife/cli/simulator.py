"""``sim serve``: memories.ai's simulator on a stable port, in real (or scaled) time, posting its
callbacks to your webhook, faults on if asked, until SIGTERM or SIGINT.

memories.ai posts a stream's callbacks to the account's one webhook, set in its console; the start
request documents no callback field. ``--webhook`` plays the console's setting, for every stream.
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
from streamlife.protocol import Payload
from streamlife.sim import RealTime, SimulatedService, WebhookPoster, serve_http
from streamlife.webhook import hide_token

from .api import API_KEY_ENV, SIM_API_KEY, sim_key
from .exits import EXIT_OK, Usage
from .render import plural
from .running import listening, reachable, until_signalled

SIM_PORT: Final = 8790  # stable, so MEMORIES_BASE_URL need not change between runs


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
        # The poster first: it closes after the server, which may post a start's early callback.
        poster = WebhookPoster(webhook, redeliver=args.redeliver)
        stack.callback(poster.close)
        sink = _Reporting(poster, mask_webhook(webhook))
        service.on_callback(sink)
        face = stack.enter_context(
            listening(serve_http(service, host=args.host, port=args.port), args.host, args.port)
        )
        stack.enter_context(RealTime(service, speed=args.speed))
        host = face.server.server_address[0]
        api_url = face.base_url.replace(f"//{host!s}:", f"//{reachable(str(host))}:", 1)
        key = f"the key in {API_KEY_ENV}" if sim_key() != SIM_API_KEY else f"the key {SIM_API_KEY}"
        print(
            f"streamlife sim serve: memories.ai simulated at {api_url} (it takes {key}); callbacks to"
            f" {mask_webhook(webhook)}; faults {args.faults} (seed {seed}), mode {args.mode}, speed"
            f" {args.speed:g}{', redelivered' if args.redeliver else ''}",
            file=sys.stderr,
            flush=True,
        )
        print(api_url, flush=True)  # stdout: the one thing a script wants
        while not stopping.wait(0.5):
            pass
    # The driver and the server have stopped: the ledger stands still.
    _summary(service, sink)
    return EXIT_OK


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


class _Reporting:
    """The simulator's sink: posts each callback through ``poster``, counts the callbacks the webhook
    acknowledged (with ``redeliver``, those sent again too) and the attempts that failed, and says
    on stderr when the webhook starts failing and when it answers again (not every failure: a
    receiver that is down fails every few seconds)."""

    def __init__(self, poster: WebhookPoster, shown: str) -> None:
        self.poster = poster
        self.shown = shown
        self.delivered = 0
        self.failed = 0
        self._failing = False
        self._lock = threading.Lock()

    def __call__(self, payload: Payload) -> None:
        delivered = self.poster(payload)
        with self._lock:
            failures = self.poster.failures
            reason = failures[-1][1] if failures else "refused"
            # The poster's own records would grow for as long as this runs: counted, then let go.
            # (``del`` of the counted head keeps what another thread appends meanwhile.)
            acknowledged, failed = len(self.poster.delivered), len(failures)
            del self.poster.delivered[:acknowledged], failures[:failed]
            self.delivered += acknowledged
            self.failed += failed
            if delivered == (not self._failing):
                return
            self._failing = not delivered
            if delivered:
                said = f"the webhook {self.shown} answers again"
            else:
                kept = "kept, to send again" if self.poster.redeliver else "dropped, as --redeliver is off"
                said = f"the webhook {self.shown} failed ({reason}): callbacks {kept}"
                if reason == "HTTP 401":
                    said += " (memories.ai signs nothing: does the URL end with the receiver's token?)"
        print(f"streamlife sim serve: {said}", file=sys.stderr, flush=True)


def _summary(service: SimulatedService, sink: _Reporting) -> None:
    billing = service.billing()
    billed = sum(service.billed_seconds(task_id) for task_id in service.streams)
    line = (
        f"streamlife sim serve: {plural(len(service.streams), 'stream')} started,"
        f" {len(billing)} still billing ({billed:g} s billed in all);"
        f" {plural(sink.delivered, 'callback')} delivered, {plural(sink.failed, 'failed attempt')}"
    )
    kept = len(sink.poster.pending)
    if kept:
        line += f" ({kept} kept for redelivery, never delivered)"
    if billing:
        shown = ", ".join(billing[:10]) + (", ..." if len(billing) > 10 else "")
        line += f"; never stopped: {shown}"
    print(line, file=sys.stderr, flush=True)
