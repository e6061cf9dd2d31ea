"""The command line prints what others control (a server's task_ids and messages, a webhook sender's
payloads, the errors they cause) as text: its brackets are never read as rich markup, and what would
act on the terminal (escape sequences, carriage return, backspace, bidirectional overrides) is shown
escaped, never sent raw. Real tasks in a real SQLite file; the commands run in-process through
``main`` and as subprocesses."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from streamlife import Fleet, ManualClock, Policy
from streamlife._events import StartResult, StopResult, StreamKind
from streamlife.cli import main
from streamlife.cli.render import printable
from streamlife.errors import OutcomeUnknownError
from streamlife.protocol import status_callback
from streamlife.store import SqliteStore
from tests.scripted_server import error, ok, scripted_server

from .test_cli_commands import environment

ROUTE = "[/serve/api/v2/audio-stream/stop]"  # rich reads it as a closing tag with nothing open
MARKUP = "[bold red]x[/]"
TRICKS = "\x1b[2J \x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\ \r\b \u202egnp.exe"
HOSTILE_ID = f"task{ROUTE}{MARKUP}{TRICKS}"
HOSTILE_ERROR = f"upstream {ROUTE} timed out {MARKUP} {TRICKS}"
# structlog's console renderer shows a value with a space, a quote, "=", CR or LF by its repr, escaped;
# this one it would show as it is.
BARE_ID = "task[/serve/api/v2/audio-stream/stop]\x1b[2J\x1b]8;;http://evil\x1b\\\b\u202egnp.exe"
RAW = ("\x1b", "\r", "\b", "\u202e")  # none of these may reach the terminal as they are


class HostileServer:
    """A transport whose server names its streams with markup and escape sequences, and whose stop
    fails with such words."""

    def __init__(self) -> None:
        self.started = 0

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        self.started += 1
        return StartResult(HOSTILE_ID + "#" * (self.started - 1), message=HOSTILE_ERROR)

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        raise OutcomeUnknownError(HOSTILE_ERROR, operation=f"{kind.value}.stop")

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Hostile:
    store: str
    key: str  # a task stopping, its stop failed with hostile words
    ended: str  # a task ended by a callback with a hostile message
    letter: int
    cwd: Path


@pytest.fixture
def hostile(tmp_path: Path) -> Hostile:
    """A store holding two tasks with hostile task_ids and last_errors, one ended by a callback with a
    hostile message, and a dead letter whose reason, field and body are hostile."""
    path = tmp_path / "tasks.db"
    clock = ManualClock(1_700_000_000.0)
    store = SqliteStore(path)
    with Fleet(HostileServer(), clock=clock, policy=Policy(stop_concurrency=0), store=store) as fleet:
        stopping, ended = (
            fleet.start("audio", audio_url="rtmp://example.invalid/live", provider="assemblyai")
            for _ in range(2)
        )
        assert stopping.task_id == HOSTILE_ID
        assert ended.task_id is not None
        fleet.stop(stopping)
        fleet.stop(ended)
        callback = status_callback(ended.task_id, 14)
        callback["data"]["message"] = HOSTILE_ERROR
        fleet.handle_callback(callback)
        assert ended.terminal
        assert stopping.key is not None
        assert ended.key is not None
    letter = store.dead_letter(clock.now(), HOSTILE_ERROR, HOSTILE_ID, HOSTILE_ERROR.encode())
    row = store.row(stopping.key)
    store.close()
    assert row is not None
    assert HOSTILE_ERROR in str(row.facts.get("last_error"))  # the store holds the words as they came
    return Hostile(store=f"sqlite:{path}", key=stopping.key, ended=ended.key, letter=letter, cwd=tmp_path)


def assert_shown_as_text(output: str, *, markup: bool = True) -> None:
    assert ROUTE in output
    if markup:
        assert MARKUP in output
    for raw in RAW:
        assert raw not in output, f"{raw!r} reached the terminal raw"
    assert "\\x1b]8;;http://evil\\x1b\\" in output  # the hyperlink shown, not made
    assert "\\u202e" in output


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """``main`` configures structlog and psycopg's logger, as the application it is; put the tests'
    own configuration back for the tests that follow."""
    configured = structlog.get_config()
    psycopg_level = logging.getLogger("psycopg").level
    yield
    structlog.configure(**configured)
    logging.getLogger("psycopg").setLevel(psycopg_level)


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables wide enough that no cell is folded or cut: the test is about what is shown, not where."""
    monkeypatch.setenv("COLUMNS", "2000")


@pytest.mark.parametrize(
    "command",
    [("status",), ("status", "--all"), ("status", "--task", "KEY"), ("journal", "KEY")],
    ids=["status", "status-all", "status-task", "journal"],
)
def test_task_commands_print_hostile_words_as_text(
    hostile: Hostile, capsys: pytest.CaptureFixture[str], command: tuple[str, ...]
) -> None:
    argv = [hostile.key if word == "KEY" else word for word in command]
    code, out, err = run_main(capsys, *argv, "--store", hostile.store)
    assert code == 0, err
    assert_shown_as_text(out)
    assert printable(HOSTILE_ID) in out or command[0] == "journal"


def test_journal_shows_the_servers_message_as_text(
    hostile: Hostile, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(capsys, "journal", hostile.ended, "--store", hostile.store)
    assert code == 0, err
    assert "error: OutcomeUnknownError: audio.stop: upstream [/serve" in out  # (cut to fit)
    assert "status 14 (stopped) upstream [/serve" in out
    for raw in RAW:
        assert raw not in out


@pytest.mark.parametrize(
    "command", [("deadletter", "list"), ("deadletter", "show", "ID")], ids=["list", "show"]
)
def test_dead_letter_commands_print_hostile_words_as_text(
    hostile: Hostile, capsys: pytest.CaptureFixture[str], command: tuple[str, ...]
) -> None:
    argv = [str(hostile.letter) if word == "ID" else word for word in command]
    code, out, err = run_main(capsys, *argv, "--store", hostile.store)
    assert code == 0, err
    assert_shown_as_text(out)


def test_an_error_that_quotes_a_hostile_task_id_is_printed_as_text(
    hostile: Hostile, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens on port 9: the stop is never sent, and the error names the task.
    code, out, err = run_main(
        capsys, "stop", hostile.key, "--sim", "http://127.0.0.1:9", "--wait", "0", "--store", hostile.store
    )
    assert code == 1
    assert_shown_as_text(out)  # the task as it stands
    assert ROUTE in err
    for raw in RAW:
        assert raw not in err


def test_replay_of_a_hostile_letter_prints_its_refusal_as_text(
    hostile: Hostile, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(capsys, "deadletter", "replay", "--store", hostile.store)
    assert code == 1  # still refused, and kept
    assert f"dead letter {hostile.letter}: still refused" in out
    for raw in RAW:
        assert raw not in out + err


@pytest.mark.parametrize(
    "command",
    [("status", "--all"), ("journal", "KEY"), ("deadletter", "list"), ("deadletter", "show", "ID")],
    ids=["status-all", "journal", "deadletter-list", "deadletter-show"],
)
def test_in_a_subprocess_nothing_raw_reaches_the_output(hostile: Hostile, command: tuple[str, ...]) -> None:
    argv = [{"KEY": hostile.key, "ID": str(hostile.letter)}.get(word, word) for word in command]
    # Bytes, not text: reading text would turn a raw carriage return into a newline.
    result = subprocess.run(
        [sys.executable, "-m", "streamlife", *argv, "--store", hostile.store],
        capture_output=True,
        check=False,
        timeout=60,
        cwd=hostile.cwd,
        env=environment(COLUMNS="2000"),
    )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    assert "Traceback" not in err
    assert_shown_as_text(out)


def test_json_keeps_the_words_as_they_came(hostile: Hostile, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "status", "--all", "--json", "--store", hostile.store)
    assert code == 0, err
    for raw in RAW:
        assert raw not in out  # JSON escapes every control character itself
    row = next(row for row in json.loads(out) if row["key"] == hostile.key)
    assert row["task_id"] == HOSTILE_ID
    assert HOSTILE_ERROR in row["last_error"]


@pytest.mark.parametrize(
    "command",
    [("status", "--all"), ("deadletter", "list"), ("simulate", "--streams", "2", "--minutes", "0.2")],
    ids=["status", "deadletter-list", "simulate"],
)
def test_a_store_path_with_brackets_is_shown_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: tuple[str, ...]
) -> None:
    folder = tmp_path / "runs[" / "serve]"  # the path holds "[/serve]"
    folder.mkdir(parents=True)
    path = folder / "tasks.db"
    if command[0] != "simulate":  # (simulate wants a store that holds no task yet)
        store = SqliteStore(path)
        with Fleet(HostileServer(), policy=Policy(stop_concurrency=0), store=store) as fleet:
            fleet.start("video", url="rtmp://example.invalid/live")
        store.dead_letter(0.0, "not JSON", None, b"{")
        store.close()
    code, out, err = run_main(capsys, *command, "--store", f"sqlite:{path}")
    assert code == 0, err
    assert str(path) in "".join(out.split())  # (a title is folded to its table's width)


def python(*args: str, cwd: Path) -> tuple[int, str, str]:
    """Run this Python in a fresh process (no test's logging set-up), its output read as bytes: text
    would turn a raw carriage return into a newline."""
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, check=False, timeout=60, cwd=cwd, env=environment()
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def test_log_events_show_hostile_words_escaped(hostile: Hostile) -> None:
    path = Path(hostile.store.removeprefix("sqlite:"))
    callback = status_callback(BARE_ID, 14)  # a stream no task of the store has
    callback["data"]["message"] = HOSTILE_ERROR
    store = SqliteStore(path)
    letter = store.dead_letter(0.0, "an older parser's reason", None, json.dumps(callback).encode())
    store.close()
    argv = ("--log-level", "debug", "deadletter", "replay", str(letter), "--store", hostile.store)
    code, _, err = python("-m", "streamlife", *argv, cwd=hostile.cwd)
    assert code == 0, err
    assert "streamlife.dead_letter_replayed" in err
    assert printable(BARE_ID) in err
    for raw in RAW:
        assert raw not in err


LOG_AN_EXCEPTION = """
import sys
import structlog
from streamlife.cli import main

main(["walk"])  # logging configured as every command configures it
try:
    raise RuntimeError(sys.argv[1])
except RuntimeError:
    structlog.get_logger("streamlife").exception("streamlife.stop_failed", task_id=sys.argv[2])
"""


def test_a_logged_exception_shows_hostile_words_escaped(tmp_path: Path) -> None:
    code, _, err = python("-c", LOG_AN_EXCEPTION, HOSTILE_ERROR, BARE_ID, cwd=tmp_path)
    assert code == 0, err
    assert "streamlife.stop_failed" in err
    assert f"RuntimeError: upstream {ROUTE} timed out" in err
    assert printable(BARE_ID) in err
    for raw in RAW:
        assert raw not in err


def test_start_and_stop_print_a_hostile_servers_words_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:{tmp_path / 'tasks.db'}"
    with scripted_server() as server:
        server.then(ok(HOSTILE_ID, HOSTILE_ERROR))
        argv = ("start", "audio", "rtmp://example.invalid/live", "--provider", "assemblyai")
        code, out, err = run_main(capsys, *argv, "--sim", server.url, "--store", store)
        assert code == 0, err
        assert_shown_as_text(out)

        server.then(*[error(500, HOSTILE_ERROR)] * 10)  # a stop refused, again and again
        code, out, err = run_main(
            capsys, "stop", HOSTILE_ID, "--wait", "0", "--sim", server.url, "--store", store
        )
    assert code == 1
    assert_shown_as_text(out + err)
