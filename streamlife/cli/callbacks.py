"""``send-callback``: post one callback, as memories.ai would, to a webhook, and show the answer.

Each callback is built by ``streamlife.protocol``'s builders, in the shapes the docs give (and, where
they are silent, in the shapes streamlife assumes and says so there): an audio segment (a partial or a
final transcript; in pass-through mode, the provider's own message in the envelope) or a video
moderation result, a Live Video Understanding result, the status-14 stop callback, or a status
callback that ends the stream. memories.ai signs nothing: the token goes in the URL, as the console's webhook
URL holds it, or in the ``X-Streamlife-Token`` header, which ``streamlife serve`` also reads.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any, Final

import requests

from streamlife._events import StreamKind
from streamlife.protocol import (
    SEGMENT_SECONDS,
    STOPPED_BY_USER,
    Payload,
    assemblyai_turn,
    elevenlabs_transcript,
    envelope,
    moderation_callback,
    segment_callback,
    status_callback,
    understand_result,
)
from streamlife.sim._messages import SIM_STATUS_MESSAGES
from streamlife.sim._records import SOURCE_ENDED
from streamlife.webhook import TOKEN_HEADER

from .environment import webhook_token
from .exits import EXIT_OK, Problem, Usage
from .render import printable
from .simulator import checked_webhook, mask_webhook

CALLBACK_KINDS: Final = ("segment", "stopped", "ended")
ONGOING: Final = 0  # the status of a result: the stream goes on


def run_send_callback(args: argparse.Namespace) -> int:
    checked_webhook(args.url)
    payload = build(args)
    if args.dry_run:
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    headers = {"Content-Type": "application/json"}
    token = webhook_token(args.token)
    if token:
        headers[TOKEN_HEADER] = token
    shown = mask_webhook(args.url)
    try:
        answer = requests.post(args.url, data=json.dumps(payload), headers=headers, timeout=args.timeout)
    except requests.RequestException as error:
        # (Never the exception's words: they quote the URL, and the URL may hold the token.)
        raise Problem(f"could not post to {shown}: {type(error).__name__}") from None
    body = _body(answer)
    if args.json:
        print(json.dumps({"status": answer.status_code, "body": body, "sent": payload}, indent=2))
    else:
        print(f"HTTP {answer.status_code}")
        if body not in ("", None):
            text = body if isinstance(body, str) else json.dumps(body)
            print(printable(text, lines=True))
    if 200 <= answer.status_code < 300:
        return EXIT_OK
    raise Problem(f"{shown} answered HTTP {answer.status_code}")


def build(args: argparse.Namespace) -> Payload:
    """The callback the options describe, refusing options that do not fit it."""
    stream = StreamKind(args.stream)
    if not args.task:
        raise Usage("--task is empty: give the task_id the callback is about")
    if stream is StreamKind.UNDERSTAND:
        return _understand(args)
    if args.timestamp is not None:
        raise Usage("--timestamp: an understand result's (--stream understand)")
    if args.provider is not None and (args.kind != "segment" or stream is StreamKind.VIDEO):
        raise Usage("--provider: only with --kind segment of an audio stream (pass-through mode)")
    if args.kind != "segment":
        unfit = [name for name, value in (("--text", args.text), ("--partial", args.partial)) if value]
        if unfit:
            raise Usage(f"{', '.join(unfit)}: only with --kind segment")
    if args.kind == "segment":
        if args.status is not None:
            raise Usage(f"--status: a segment's status is {ONGOING}; give --kind stopped or ended instead")
        index = 0 if args.index is None else args.index
        if stream is StreamKind.VIDEO:
            if args.text is not None or args.partial:
                raise Usage("--text, --partial: an audio segment's; a video segment has no transcript")
            return moderation_callback(
                args.task,
                index,
                video_url=f"https://storage.example.invalid/{args.task}/{index}.mp4",
                unsafe=args.unsafe,
                frames_processed=int(SEGMENT_SECONDS),  # one frame a second, the default fps
                message="Segment processed",  # the docs give no words: the simulator's
            )
        if args.unsafe:
            raise Usage("--unsafe: a video segment's (--stream video)")
        text = "hello there" if args.text is None else args.text
        if args.provider == "assemblyai":  # pass-through mode: the provider's message, in the envelope
            turn = assemblyai_turn(index, text, end_of_turn=not args.partial, formatted=False)
            return envelope(args.task, turn)
        if args.provider == "elevenlabs":  # (ElevenLabs names no index: --index is not sent)
            return envelope(args.task, elevenlabs_transcript(text, committed=not args.partial))
        return segment_callback(args.task, index, text, final=not args.partial)
    if args.unsafe:
        raise Usage("--unsafe: only with --kind segment --stream video")
    if args.kind == "stopped":
        if args.status not in (None, STOPPED_BY_USER):
            raise Usage(f"--status: the stop callback's status is {STOPPED_BY_USER}")
        status = STOPPED_BY_USER
    else:
        status = SOURCE_ENDED if args.status is None else args.status
        if status in (ONGOING, STOPPED_BY_USER):
            raise Usage(
                f"--status {status} does not end a stream: {ONGOING} is a result, {STOPPED_BY_USER} the"
                " stop callback (--kind stopped)"
            )
    message = SIM_STATUS_MESSAGES.get(status)
    if stream is StreamKind.VIDEO:
        return status_callback(args.task, status, kind=stream, message=message)
    return status_callback(args.task, status, message=message, last_index=args.index)


def _understand(args: argparse.Namespace) -> Payload:
    """A Live Video Understanding result: its text and timestamp, with no segment index."""
    if args.kind != "segment":
        raise Usage(
            f"--kind {args.kind}: Live Video Understanding documents no {args.kind} callback (its stop's"
            " answer settles the task, and a stream that ends by itself says nothing); only --kind segment,"
            " a result"
        )
    unfit = [
        name
        for name, given in (
            ("--index", args.index is not None),
            ("--partial", args.partial),
            ("--unsafe", args.unsafe),
            ("--provider", args.provider is not None),
            ("--status", args.status is not None),
        )
        if given
    ]
    if unfit:
        raise Usage(f"{', '.join(unfit)}: not for an understand result, which has a text and a timestamp")
    text = "A person walks across the frame." if args.text is None else args.text
    # Each result is told from the others by its timestamp: now, unless given (to send one again).
    timestamp = args.timestamp or datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return understand_result(args.task, text, timestamp)


def _body(answer: requests.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return answer.text
