"""What the command line shows: ``streamlife simulate``'s live panel and summary table, the state
colours, and how text that others control is made safe to print.

Only the command line uses this module; the library itself never prints.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .lifecycle import STATES, TERMINAL
from .simulate import Report, Snapshot

STATE_STYLE: Final = {  # how each state is shown, here and by the command line
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


def printable(text: str, *, lines: bool = False) -> str:
    """Text that others control (a task_id, a server's message, a webhook's body, a dead letter's
    reason), safe to print on a terminal: each character that would act on it instead of printing is
    shown as its Python escape, ESC as ``\\x1b``, CR as ``\\r``, U+202E as ``\\u202e``. A backslash
    is left as it is: ``\\x1b`` on screen may also be those four characters as sent.
    ``lines``: newlines and tabs stay as they are.

    Every untrusted field the command line prints goes through here (or :func:`untrusted`); rich
    markup in it is no concern of this function: print the result as a :class:`~rich.text.Text`,
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
