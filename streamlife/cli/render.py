"""How the commands show what they found: times, task fields, journal details, dead letters'
bodies, plural nouns."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from rich.console import Console
from rich.text import Text

from streamlife import console as console_view
from streamlife.console import printable, untrusted
from streamlife.store import TaskRow

PREVIEW_WIDTH: Final = 60  # characters of a dead letter's body shown in `deadletter list`


def iso_utc(at: float, timespec: str = "seconds") -> str:
    """A time from the journal as ISO 8601, in UTC."""
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def wide_console() -> Console:
    """Rich's console; wide when the output is no terminal (a pipe, a file), so that task_ids and
    times are not folded to fit 80 columns. ``COLUMNS`` still rules where it is set."""
    console = Console()
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(width=160)


def state_text(state: str) -> Text:
    return untrusted(state, style=console_view.STATE_STYLE.get(state, ""))


def print_task(row: TaskRow) -> None:
    """One task, a field a line."""
    facts = {name: value for name, value in row.facts.items() if name != "last_error"}
    lines = [
        ("key", row.key),
        ("kind", row.kind),
        ("task_id", row.task_id or "-"),
        ("state", row.state),
        ("version", str(row.version)),
        ("created", iso_utc(row.created_at)),
        ("updated", iso_utc(row.updated_at)),
        ("last_error", str(row.facts.get("last_error") or "-")),
        ("facts", ", ".join(f"{name}={value}" for name, value in facts.items())),
    ]
    for name, value in lines:
        print(f"{name:<11}{printable(value)}")


def describe(args: Mapping[str, Any] | None, width: int = 60) -> str:
    """A journal entry's argument in a few words: a task_id, an error, a product, a segment, a status."""
    if not args:
        return ""
    if "error" in args:
        return clip(f"error: {args['error']}", width)
    if "segment" in args:
        segment = args["segment"]
        said = "" if segment.get("text") is None else f" {segment['text']!r}"
        final = "final" if segment.get("final") else "partial"
        return clip(f"segment {segment.get('index')} {final}{said}", width)
    if "status" in args:
        status = args["status"]
        meaning = f" ({status['meaning']})" if status.get("meaning") else ""
        message = f" {status['message']}" if status.get("message") else ""
        return clip(f"status {status.get('status')}{meaning}{message}", width)
    if "provider" in args:
        provider = args["provider"]
        return clip(f"{provider.get('provider')} {provider.get('message_type')}", width)
    if "task_id" in args:
        return f"task_id {args['task_id']}"
    if "kind" in args:
        return f"found on {args['kind']}"
    return clip(json.dumps(args), width)


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def preview(body: bytes) -> str:
    """The start of a body on one line: each run of whitespace as one space, what is no UTF-8 and
    what would act on a terminal shown escaped."""
    start = body[: PREVIEW_WIDTH * 4].decode("utf-8", "backslashreplace")  # enough to fill the width
    return clip(printable(" ".join(start.split())), PREVIEW_WIDTH)


def hexdump(data: bytes, width: int = 16) -> str:
    """Bytes as offset, hex and the printable ASCII beside it, ``width`` bytes a line."""
    lines = []
    for offset in range(0, len(data), width):
        chunk = data[offset : offset + width]
        ascii_ = "".join(chr(byte) if 0x20 <= byte < 0x7F else "." for byte in chunk)
        lines.append(f"{offset:08x}  {chunk.hex(' '):<{3 * width - 1}}  |{ascii_}|")
    return "\n".join(lines)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")
