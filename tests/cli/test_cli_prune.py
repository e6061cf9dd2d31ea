"""`streamlife prune`: old terminal tasks and dead letters go, the rest stays; bad durations are
refused as bad usage."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest

from streamlife.cli.values import duration
from streamlife.store import JournalEntry, SqliteStore, TaskRow
from tests.cli.test_cli_commands import json_of, served, streamlife

DAY = 86400.0


def keep_task(store: SqliteStore, key: str, state: str, age_days: float) -> None:
    at = time.time() - age_days * DAY
    entries = [JournalEntry(v, at, "segment", "running", state, None) for v in (1, 2)]
    store.create(TaskRow(key, "audio", f"tid-{key}", state, 2, at, at, {}), entries)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "streams.db"
    store = SqliteStore(path)
    keep_task(store, "old-stopped", "stopped", 40)
    keep_task(store, "old-failed", "failed", 31)
    keep_task(store, "recent", "stopped", 29)
    keep_task(store, "old-running", "running", 40)
    store.dead_letter(time.time() - 40 * DAY, "old", None, b"{}")
    store.dead_letter(time.time() - 1 * DAY, "new", None, b"{}")
    store.close()
    return path


def kept_keys(path: Path) -> list[str]:
    store = SqliteStore(path)
    try:
        return sorted(row.key for row in store.rows(terminal=True))
    finally:
        store.close()


def test_prune_dry_run_counts_then_prune_lets_go(store_path: Path, tmp_path: Path) -> None:
    url = f"sqlite:{store_path}"
    counted = json_of(
        streamlife("prune", "--store", url, "--older-than", "30d", "--dry-run", "--json", cwd=tmp_path)
    )
    assert (counted["tasks"], counted["entries"], counted["dead_letters"]) == (2, 4, 1)
    assert counted["dry_run"] is True
    assert abs(counted["before_unix"] - (time.time() - 30 * DAY)) < 60
    assert kept_keys(store_path) == ["old-failed", "old-running", "old-stopped", "recent"]

    pruned = json_of(streamlife("prune", "--store", url, "--older-than", "720h", "--json", cwd=tmp_path))
    assert (pruned["tasks"], pruned["entries"], pruned["dead_letters"], pruned["dry_run"]) == (2, 4, 1, False)
    assert kept_keys(store_path) == ["old-running", "recent"]

    again = streamlife("prune", "--store", url, "--older-than", "30d", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("pruned 0 terminal tasks (0 journal entries) and 0 dead letters")


@pytest.mark.parametrize(
    "given", ["30", "30x", "-5d", "0d", "0.0h", "", "d", "1e3s", "30 d", "thirty days", "1000000d"]
)
def test_a_bad_duration_is_bad_usage(store_path: Path, tmp_path: Path, given: str) -> None:
    result = streamlife("prune", "--store", f"sqlite:{store_path}", f"--older-than={given}", cwd=tmp_path)
    assert result.returncode == 2
    assert "--older-than" in result.stderr
    assert "duration" in result.stderr
    assert kept_keys(store_path) == ["old-failed", "old-running", "old-stopped", "recent"]


def test_prune_needs_a_period_and_a_store_that_exists(tmp_path: Path) -> None:
    result = streamlife("prune", "--store", f"sqlite:{tmp_path / 'none.db'}", cwd=tmp_path)
    assert result.returncode == 2
    assert "--older-than" in result.stderr
    missing = streamlife(
        "prune", "--store", f"sqlite:{tmp_path / 'none.db'}", "--older-than", "1d", cwd=tmp_path
    )
    assert missing.returncode == 2
    assert "there is no file" in missing.stderr
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        ("30d", 30 * DAY),
        ("12h", 12 * 3600.0),
        ("90m", 5400.0),
        ("3600s", 3600.0),
        ("1.5h", 5400.0),
        (" 2d ", 2 * DAY),
    ],
)
def test_durations_read_as_seconds(given: str, seconds: float) -> None:
    assert duration(given) == seconds


def test_a_duration_past_any_float_is_refused() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="above 0"):
        duration("9" * 400 + "d")


def test_serve_with_a_retention_prunes_the_store_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "served.db"
    store = SqliteStore(path)
    keep_task(store, "old-stopped", "stopped", 40)
    keep_task(store, "recent", "stopped", 29)
    store.close()
    with served(
        "--sim", "--store", f"sqlite:{path}", "--port", "0", "--retention", "30d", cwd=tmp_path
    ) as serve:
        serve.wait_for(r"webhooks at .+; recovered 0 tasks from")
        give_up_at = time.monotonic() + 15
        while kept_keys(path) != ["recent"]:
            assert time.monotonic() < give_up_at, kept_keys(path)
            time.sleep(0.1)
        assert serve.terminate() == 0


def test_serve_refuses_a_bad_retention(tmp_path: Path) -> None:
    result = streamlife("serve", "--sim", "--store", "memory:", "--retention=0d", cwd=tmp_path)
    assert result.returncode == 2
    assert "--retention" in result.stderr
