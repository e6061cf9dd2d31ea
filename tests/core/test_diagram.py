"""The diagrams are generated from the table, and the committed ones must not drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streamlife import _diagram as diagram
from streamlife.lifecycle import CELLS, DEADLINE_TRIGGERS, DEADLINES, TaskState

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamlife", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_committed_diagrams_match_the_table() -> None:
    result = run_cli("diagram", "--check")
    assert result.returncode == 0, result.stderr


def test_check_fails_on_drift_and_writing_repairs_it(tmp_path: Path) -> None:
    assert run_cli("diagram", "--check", "--out", str(tmp_path)).returncode == 1  # missing
    assert run_cli("diagram", "--out", str(tmp_path)).returncode == 0
    assert run_cli("diagram", "--check", "--out", str(tmp_path)).returncode == 0
    mmd = tmp_path / diagram.MERMAID_FILE
    mmd.write_text(mmd.read_text().replace("start_ok", "started"))
    drifted = run_cli("diagram", "--check", "--out", str(tmp_path))
    assert drifted.returncode == 1
    assert "lifecycle.mmd is out of date" in drifted.stderr


def test_the_mermaid_diagram_has_one_arrow_label_per_move() -> None:
    text = diagram.mermaid()
    for (state, trigger), cell in CELLS.items():
        if isinstance(cell, TaskState):
            arrow = next(
                line
                for line in text.splitlines()
                if line.strip().startswith(f"{state.value} --> {cell.value} :")
            )
            assert trigger in arrow.split(":", 1)[1].split(", ") or trigger in arrow


def test_the_matrix_has_a_row_per_trigger_and_a_column_per_state() -> None:
    rows = [line for line in diagram.matrix().splitlines() if line.startswith("| `")]
    assert len(rows) == len({t for _, t in CELLS})
    assert all(row.count("|") == len(TaskState) + 4 for row in rows)  # trigger, source, argument


def test_the_matrix_draws_every_deadline_a_state_arms() -> None:
    text = diagram.matrix()
    for state, deadlines in DEADLINES.items():
        for deadline, guard in deadlines:
            fires = DEADLINE_TRIGGERS[deadline]
            assert f"| {state.value} | `{deadline.value}` | {guard.value} | `{fires}` |" in text


def test_a_bad_command_is_a_usage_error() -> None:
    result = run_cli("no-such-command")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
