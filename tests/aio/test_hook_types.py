"""Typed hooks: mypy refuses a hook of the wrong shape for a Fleet or an AsyncFleet, and takes the
right ones (plain functions, lambdas, and, for an AsyncFleet, coroutine functions)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

CHECKED = """
from streamlife import Fleet, ForeignCallback, HistoryEntry, Orphan, Segment, StreamTask
from streamlife.aio import AsyncFleet


def right(fleet: Fleet, aio: AsyncFleet) -> None:
    heard: list[object] = []
    fleet.on_segment(lambda task, segment: heard.append(segment.text))
    fleet.on_orphan(heard.append)

    @fleet.on_transition
    def seen(task: StreamTask, entry: HistoryEntry) -> None: ...

    @aio.on_segment
    async def segment(task: StreamTask, segment: Segment) -> None: ...

    @aio.on_foreign
    async def foreign(callback: ForeignCallback) -> None: ...

    aio.on_transition(seen)
    aio.on_orphan(lambda orphan: heard.append(orphan.task))
    reveal_type(segment)


def wrong(fleet: Fleet, aio: AsyncFleet) -> None:
    fleet.on_segment(lambda task: None)  # wrong

    @fleet.on_transition  # wrong
    def takes_the_task_only(task: StreamTask) -> None: ...

    @fleet.on_segment  # wrong
    async def a_coroutine_nobody_awaits(task: StreamTask, segment: Segment) -> None: ...

    @aio.on_segment  # wrong
    async def takes_an_entry(task: StreamTask, entry: HistoryEntry) -> None: ...

    @aio.on_orphan  # wrong
    def takes_a_task(task: StreamTask) -> None: ...

    aio.on_foreign(lambda: None)  # wrong
"""


def test_mypy_refuses_hooks_of_the_wrong_shape_and_takes_the_right_ones(tmp_path: Path) -> None:
    checked = tmp_path / "hooks_in_use.py"
    checked.write_text(CHECKED)
    # In a process of its own: mypy raises the interpreter's recursion limit for good.
    ran = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--cache-dir",
         str(tmp_path / "cache"), str(checked)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    out, err = ran.stdout, ran.stderr
    errors = {int(found[1]) for found in re.finditer(r"hooks_in_use\.py:(\d+): error:", out)}
    lines = CHECKED.splitlines()
    wanted = {number for number, line in enumerate(lines, 1) if line.endswith("# wrong")}
    assert len(wanted) == 6
    assert errors == wanted, out + err
    assert "Coroutine[Any, Any, None]" in out  # (reveal_type: a decorated hook keeps its type)
