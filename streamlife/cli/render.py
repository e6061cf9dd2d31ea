"""What the command line shows, and how: the state colours, the tables of tasks, journal entries and
dead letters, a task's fields, ``simulate``'s live panel and summary, and text that others control
made safe to print.

Only the command line uses this module; the library itself never prints.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from streamlife._simulate import Report, Snapshot
from streamlife.lifecycle import STATES, TERMINAL
from streamlife.store import JournalEntry, TaskRow

STATE_STYLE: Final = {  # the colour each state is shown in
    "stopped": "green",
    "ended": "yellow",
    "failed": "red",
    "running": "cyan",
    "stopping": "magenta",
    "ending": "bold yellow",
    "uncertain": "bold red",
}


# Shown escaped: characters that act on a terminal instead of printing (an escape sequence starts with
# ESC, a Cc; so do carriage return and backspace, which overwrite what is shown), that reorder or hide
# text (a bidirectional override is a Cf), and line separators.
_UNPRINTABLE: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

PREVIEW_WIDTH: Final = 60  # characters of a dead letter's body shown in `deadletter list`


def printable(text: str, *, lines: bool = False) -> str:
    """Text that others control (a task_id, a server's message, a webhook's body, a dead letter's
    reason), safe to print on a terminal: each character that would act on it instead of printing is
    shown as its Python escape, ESC as ``\\x1b``, CR as ``\\r``, U+202E as ``\\u202e``. A backslash
    is left as it is: ``\\x1b`` on screen may also be those four characters as sent.
    ``lines``: newlines and tabs stay as they are.

    Every untrusted field the command line prints goes through here (or :func:`untrusted`); rich
    markup in it is not this function's concern: print the result as a :class:`~rich.text.Text`,
    never inside a markup string."""
    kept_as_is = "\n\t" if lines else ""
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if unicodedata.category(char) in _UNPRINTABLE and char not in kept_as_is
        else char
        for char in text
    )


def untrusted(text: str, *, style: str = "", lines: bool = False) -> Text:
    """Text that others control as a rich :class:`~rich.text.Text`: shown as written, its brackets
    never read as markup, what would act on the terminal shown escaped (see :func:`printable`)."""
    return Text(printable(text, lines=lines), style=style)


def live_panel(snapshot: Snapshot, title: str) -> Group:
    """One frame of the live display."""
    minutes, seconds = divmod(int(snapshot.seconds), 60)
    header = Text.assemble(
        (title, "bold"),
        f"   virtual time {minutes:02d}:{seconds:02d}   ",
        (snapshot.phase, "bold cyan" if snapshot.phase == "running" else "bold magenta"),
    )
    states = Table(show_edge=False, pad_edge=False, box=None)
    counts = [snapshot.tasks_by_state.get(state.value, 0) for state in STATES]
    for state in STATES:
        states.add_column(state.value, justify="right", style=STATE_STYLE.get(state.value, ""))
    states.add_row(*(str(n) for n in counts))
    flow = Table(show_edge=False, pad_edge=False, box=None)
    for name in (*snapshot.callbacks, "orphans", "billing now", "billed s"):
        flow.add_column(name, justify="right")
    flow.add_row(
        *(str(n) for n in snapshot.callbacks.values()),
        str(snapshot.orphans),
        str(snapshot.billing_now),
        f"{snapshot.billed_seconds:,.0f}",
    )
    return Group(header, Text("tasks", style="dim"), states, Text("callbacks", style="dim"), flow)


def summary(report: Report) -> Group:
    """The closing table, and a verdict line."""
    table = Table(title="streamlife simulate", title_justify="left", show_header=False)
    table.add_column("what", style="dim")
    table.add_column("value", justify="right")
    mode = "over loopback HTTP" if report.http else "in-process"
    table.add_row("run", f"{report.streams} streams, {report.minutes:g} min, faults {report.faults}, {mode}")
    table.add_row("seed", str(report.seed))
    terminal = {state.value for state in TERMINAL}
    by_kind = ", ".join(f"{kind} {count}" for kind, count in report.tasks_by_kind.items())
    table.add_row("tasks by product", by_kind or "none")
    for state, count in report.tasks_by_state.items():
        table.add_row(f"tasks {state}" + ("" if state in terminal else " (not terminal!)"), str(count))
    for outcome, count in report.callbacks.items():
        table.add_row(f"callbacks {outcome}", str(count))
    table.add_row("orphans reaped", str(report.orphans_reaped))
    table.add_row("seconds billed to orphans", f"{report.orphan_billed_seconds:,.0f}")
    table.add_row("seconds billed in all", f"{report.billed_seconds:,.0f}")
    table.add_row("stops sent (failed)", f"{report.stops_sent} ({report.stop_failures})")
    table.add_row("settled after", f"{report.settle_seconds:g} virtual s")
    table.add_row("streams billing after settle", str(report.streams_billing_after_settle))
    table.add_row("invariant violations", str(report.invariant_violations))
    table.add_row("wall time", f"{report.wall_seconds:.1f} s")
    table.add_row("store", untrusted(report.store))  # the user's --store: a path may hold "[...]"
    in_store = ", ".join(f"{state} {count}" for state, count in report.tasks_in_store.items())
    table.add_row("tasks in store", in_store or "none")
    parts: list[Table | Text] = [table]
    for violation in report.violations[:10]:
        parts.append(untrusted(f"  violation: {violation}", style="red"))
    if report.ok:
        parts.append(Text("every task terminal, nothing billing, no invariant broken", style="bold green"))
    else:
        parts.append(Text("the run broke its promises (see above)", style="bold red"))
    return Group(*parts)


def iso_utc(at: float, timespec: str = "seconds") -> str:
    """A time from the journal as ISO 8601, in UTC."""
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def print_table(table: Table) -> None:
    """Print a table with rich; wide when the output is not a terminal (a pipe, a file), so that task_ids
    and times are not folded to fit 80 columns. ``COLUMNS`` still rules where it is set."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=160)
    console.print(table)


def state_text(state: str) -> Text:
    return untrusted(state, style=STATE_STYLE.get(state, ""))


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
    print_fields(lines)


def print_fields(fields: Sequence[tuple[str, str]]) -> None:
    """A field a line, the values aligned; each value made safe to print (others wrote most of them)."""
    width = max(len(name) for name, _ in fields) + 1
    for name, value in fields:
        print(f"{name:<{width}}{printable(value)}")


def tasks_table(rows: Sequence[TaskRow], title: str) -> Table:
    """``status``: a task a row."""
    table = Table(title=untrusted(title), title_justify="left")
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
            state_text(row.state),
            str(row.version),
            iso_utc(row.updated_at),
            untrusted(str(row.facts.get("last_error") or "")),
        )
    return table


def journal_table(entries: Sequence[JournalEntry], title: str) -> Table:
    """``journal``: an entry a row."""
    table = Table(title=untrusted(title), title_justify="left")
    table.add_column("v", justify="right")
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("trigger", no_wrap=True)
    table.add_column("from → to", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for entry in entries:
        moved = Text.assemble(untrusted(entry.from_state), " → ", state_text(entry.to_state))
        table.add_row(
            str(entry.version),
            iso_utc(entry.at, "milliseconds"),
            untrusted(entry.trigger),
            moved,
            untrusted(describe(entry.args)),  # the server's messages, a transcript's words
        )
    return table


def letters_table(listed: Sequence[Mapping[str, Any]], title: str) -> Table:
    """``deadletter list``: a letter a row, as its JSON form (without the body) gives it."""
    table = Table(title=untrusted(title), title_justify="left")
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
            iso_utc(letter["at_unix"]),
            size,
            untrusted(letter["field"] or "-"),
            untrusted(letter["reason"]),
            Text(letter["preview"]),  # (made printable by preview already)
        )
    return table


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
        # A result that carries no index (Live Video Understanding's) is known by its timestamp.
        which = segment.get("index")
        if which is None:
            which = f"at {segment['stamp']}" if segment.get("stamp") else "unnumbered"
        return clip(f"segment {which} {final}{said}", width)
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
