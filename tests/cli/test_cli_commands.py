"""`streamlife serve | start | stop | status | journal | deadletter` and `simulate --store`, through the
entry point in subprocesses: a served simulator, streams started, watched, stopped and recovered across
processes that share one SQLite store; dead letters listed, shown, replayed and purged; and the
refusals (no API key, no webhook token, a bad store URL)."""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

from streamlife import Fleet, ManualClock, Policy
from streamlife.lifecycle import Source
from streamlife.protocol import segment_callback
from streamlife.sim import SimTransport, SimulatedService
from streamlife.store import DEAD_LETTER_MAX_BODY, SqliteStore, mask_store_url
from streamlife.transport import HttpTransport
from tests.scripted_server import Answer, scripted_server

SECRETS = ("MEMORIES_API_KEY", "STREAMLIFE_WEBHOOK_TOKEN", "STREAMLIFE_WEBHOOK_PREVIOUS_TOKENS")


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without the key and the token, plus ``extra``."""
    env = {name: value for name, value in os.environ.items() if name not in SECRETS}
    env.update(extra)
    return env


def streamlife(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamlife", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=cwd,
        env=environment(**env),
    )


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class Served:
    """`streamlife serve` running in a subprocess; its stderr read line by line from a thread."""

    def __init__(self, process: subprocess.Popen[str], stream: IO[str] | None = None) -> None:
        self.process = process
        self._stream = process.stderr if stream is None else stream  # (the one it prints to)
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._stream is not None
        for line in self._stream:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """The first line (seen already, or to come) that matches ``pattern``."""
        for said in self.seen:
            if found := re.search(pattern, said):
                return found
        return self.wait_for_next(pattern, timeout)

    def wait_for_next(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """The first line still to come that matches ``pattern`` (not one seen already)."""
        give_up_at = time.monotonic() + timeout
        while (left := give_up_at - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"serve never said {pattern!r}; it said:\n{''.join(self.seen)}")

    def terminate(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


@contextmanager
def served(*args: str, cwd: Path) -> Iterator[Served]:
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlife", "serve", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=environment(),
    )
    serve = Served(process)
    try:
        yield serve
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        serve._reader.join(timeout=5)
        assert process.stderr is not None
        process.stderr.close()


def test_serve_sim_serves_understand_and_posts_its_results_to_the_starts_callback_only(
    tmp_path: Path,
) -> None:
    """The simulator inside `serve --sim` serves Live Video Understanding too, and its results go
    to the callback URL the start named, not to serve's own webhook."""
    path = tmp_path / "tasks.db"
    with (
        scripted_server() as hooks,
        served("--sim", "--store", f"sqlite:{path}", "--port", "0", cwd=tmp_path) as serve,
    ):
        hooks.then(*[Answer(200, {"ok": True})] * 20)
        said = serve.wait_for(r"simulator API at (\S+) \(faults none; Live Video Understanding at (\S+);")
        serve.wait_for(r"webhooks at (.+); recovered 0 tasks from")
        store = SqliteStore(path)
        transport = HttpTransport("sk-mai-simulated", base_url=said[1], understand_url=said[2])
        with Fleet(transport, store=store, policy=Policy(stop_concurrency=0)) as fleet:
            body = {"url": "rtmp://example.invalid/live", "user_prompt": "Describe it"}
            task = fleet.start("understand", **body, callback=f"{hooks.url}/task/k1/sig-1")
            give_up = time.monotonic() + 15
            while not hooks.requests and time.monotonic() < give_up:  # a result every 5 real seconds
                time.sleep(0.1)
            fleet.stop(task)
            assert task.terminal
            sources = {entry.source for entry in task.history}
        triggers = [entry.trigger for entry in store.journal(task.key or "")]
        store.close()
        assert serve.terminate() == 0
    assert [(seen.path, seen.body["task_id"]) for seen in hooks.requests] == [
        ("/task/k1/sig-1", task.task_id)
    ]
    assert Source.CALLBACK not in sources
    assert triggers == [entry.trigger for entry in task.history]  # serve's receiver heard nothing of it


def test_streams_started_stopped_and_recovered_across_processes(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'tasks.db'}"
    with served("--sim", "--store", store, "--port", "0", cwd=tmp_path) as serve:
        sim = serve.wait_for(r"simulator API at (\S+)")[1]
        listens = serve.wait_for(r"webhooks at (.+); recovered 0 tasks from")[1]
        assert listens.endswith("/<token hidden>")

        audio = json_of(
            streamlife(
                "start", "audio", "rtmp://example.invalid/live/a", "--param", "provider=assemblyai",
                "--sim", sim, "--store", store, "--json", cwd=tmp_path,
            )
        )  # fmt: skip
        video = json_of(
            streamlife(
                "start", "video", "rtmp://example.invalid/live/v", "--sim", sim, "--store", store, "--json",
                cwd=tmp_path,
            )
        )  # fmt: skip
        assert audio["state"] == video["state"] == "running"
        task_id = audio["task_id"]

        # A real key is sent as given and never shown; the simulator refuses it, so the start failed.
        key = "sk-mai-never-print-this-key"
        refused = streamlife(
            "start", "audio", "rtmp://example.invalid/live/r", "--provider", "elevenlabs",
            "--api-url", sim, "--store", store, cwd=tmp_path, MEMORIES_API_KEY=key,
        )  # fmt: skip
        assert refused.returncode == 1
        assert "failed" in refused.stdout
        assert key not in refused.stdout + refused.stderr

        unfinished = json_of(streamlife("status", "--store", store, "--json", cwd=tmp_path))
        assert {(row["key"], row["state"]) for row in unfinished} == {
            (audio["key"], "running"),
            (video["key"], "running"),
        }
        table = streamlife("status", "--store", store, cwd=tmp_path)
        assert table.returncode == 0
        assert task_id in table.stdout
        assert "running" in table.stdout
        one = json_of(
            streamlife("status", "--store", store, "--task", audio["key"][:10], "--json", cwd=tmp_path)
        )
        assert one["task_id"] == task_id

        # Segments come every 5 s; serve journals them, and the journal shows them.
        give_up_at = time.monotonic() + 15
        while True:
            entries = json_of(streamlife("journal", task_id, "--store", store, "--json", cwd=tmp_path))
            triggers = [entry["trigger"] for entry in entries]
            if "segment" in triggers or time.monotonic() > give_up_at:
                break
            time.sleep(0.5)
        assert triggers[:2] == ["start", "start_ok"]
        assert "segment" in triggers
        timeline = streamlife("journal", audio["key"], "--store", store, cwd=tmp_path)
        assert timeline.returncode == 0
        assert "start_ok" in timeline.stdout
        assert "segment 0" in timeline.stdout

        stopped = json_of(
            streamlife(
                "stop", task_id, "--sim", sim, "--store", store, "--wait", "10", "--json", cwd=tmp_path
            )
        )
        assert stopped["state"] == "stopped"
        entries = json_of(streamlife("journal", task_id, "--store", store, "--json", cwd=tmp_path))
        # (A segment may land between them: the simulator runs in real time, every 5 s.)
        moves = [entry["trigger"] for entry in entries if entry["trigger"] != "segment"]
        # The stop's answer (here) and the status-14 callback (taken by serve) race: an answer
        # that comes second finds the task stopped, is late, and late events are not journaled.
        assert moves[-3:] == ["stop", "stop_ok", "stopped"] or moves[-2:] == ["stop", "stopped"]
        assert "status 14" in entries[-1]["detail"]  # the status-14 callback, taken by serve

        assert serve.terminate() == 0
        serve.wait_for(r"leaving 1 unfinished task in")  # a durable store: the video stream stays

    with served("--sim", "--store", store, "--port", "0", cwd=tmp_path) as again:
        again.wait_for(r"recovered 1 task from")
        unfinished = json_of(streamlife("status", "--store", store, "--json", cwd=tmp_path))
        assert [row["key"] for row in unfinished] == [video["key"]]
        assert "1 unfinished task in" in streamlife("status", "--store", store, cwd=tmp_path).stdout
        assert again.terminate() == 0


def test_a_simulated_run_leaves_its_tasks_in_the_store(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'run.db'}"
    report = json_of(
        streamlife("simulate", "--streams", "30", "--minutes", "1", "--faults", "all", "--seed", "3",
                   "--store", store, "--json", cwd=tmp_path)
    )  # fmt: skip
    assert report["store"] == store
    assert report["streams_billing_after_settle"] == report["invariant_violations"] == 0
    assert report["tasks_in_store"] == report["tasks_by_state"]

    listed = json_of(streamlife("status", "--store", store, "--all", "--json", cwd=tmp_path))
    assert Counter(row["state"] for row in listed) == report["tasks_by_state"]
    assert json_of(streamlife("status", "--store", store, "--json", cwd=tmp_path)) == []  # all terminal

    first = listed[0]
    entries = json_of(streamlife("journal", first["key"][:12], "--store", store, "--json", cwd=tmp_path))
    assert entries[0]["trigger"] in ("start", "adopt")
    assert entries[-1]["to"] == first["state"]
    assert len(entries) == first["version"]

    # Stopping a terminal task sends nothing (no simulator listens there) and succeeds.
    ended = next(row for row in listed if row["task_id"])
    done = streamlife("stop", ended["task_id"], "--sim", "http://127.0.0.1:9", "--store", store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr

    unknown = streamlife("journal", "no-such-task", "--store", store, cwd=tmp_path)
    assert unknown.returncode == 1
    assert "holds no task" in unknown.stderr

    again = streamlife("simulate", "--streams", "5", "--store", store, "--json", cwd=tmp_path)
    assert again.returncode == 2
    assert "already holds tasks" in again.stderr


# Bodies a hostile sender could post: what would act on a terminal, raw.
NOT_UTF8 = b"\x1b[2J\x00\xff{"
TERMINAL_TRICKS = "\x1b]0;pwned\x07 [bold]markup[/bold] \u202egnp.exe".encode()


def test_dead_letters_listed_shown_replayed_and_purged(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    store_url = f"sqlite:{path}"
    clock = ManualClock(1_700_000_000.0)
    store = SqliteStore(path)
    with Fleet(
        SimTransport(SimulatedService(clock=clock)),
        clock=clock,
        policy=Policy(stop_concurrency=0),
        store=store,
    ) as fleet:
        task = fleet.start("audio", audio_url="rtmp://example.invalid/live", provider="assemblyai")
    assert task.task_id is not None
    readable = json.dumps(segment_callback(task.task_id, 0, "refused by an older parser")).encode()
    ids = [
        store.dead_letter(
            clock.now(), "data.transcript: an older parser's reason", "data.transcript", readable
        ),
        store.dead_letter(clock.now(), "not UTF-8: invalid start byte at byte 4", None, NOT_UTF8),
        store.dead_letter(clock.now(), "not JSON: \x1b[31m quoted", None, TERMINAL_TRICKS),
        store.dead_letter(clock.now(), "not JSON: Extra data", None, readable + b" " * DEAD_LETTER_MAX_BODY),
    ]
    store.close()
    first, not_utf8, tricks, cut = ids

    def deadletter(*args: str) -> subprocess.CompletedProcess[str]:
        return streamlife("deadletter", *args, "--store", store_url, cwd=tmp_path)  # no API key: none needed

    table = deadletter("list")
    assert table.returncode == 0, table.stderr
    assert "4 dead letters" in table.stdout
    assert "(cut)" in table.stdout
    for raw in ("\x1b", "\x07", "\x00", "\u202e"):
        assert raw not in table.stdout  # shown escaped, never sent to the terminal
    assert "\\x1b" in table.stdout
    assert "[bold]" in table.stdout  # the payload's words, not rich's markup
    listed = json_of(deadletter("list", "--json"))
    assert [letter["id"] for letter in listed] == ids
    assert [(letter["size"], letter["truncated"]) for letter in listed] == [
        (len(readable), False),
        (len(NOT_UTF8), False),
        (len(TERMINAL_TRICKS), False),
        (len(readable) + DEAD_LETTER_MAX_BODY, True),
    ]
    assert listed[0]["reason"] == "data.transcript: an older parser's reason"
    assert listed[0]["field"] == "data.transcript"
    assert all("body" not in letter for letter in listed)
    page = json_of(deadletter("list", "--after", str(first), "--limit", "2", "--json"))
    assert [letter["id"] for letter in page] == [not_utf8, tricks]

    dump = deadletter("show", str(not_utf8))
    assert dump.returncode == 0, dump.stderr
    assert "not UTF-8" in dump.stdout
    assert "00000000  1b 5b 32 4a 00 ff 7b" in dump.stdout
    assert "\x1b" not in dump.stdout
    text = deadletter("show", str(tricks))
    assert text.returncode == 0, text.stderr
    assert "\\x1b]0;pwned\\x07 [bold]markup[/bold] \\u202egnp.exe" in text.stdout
    for raw in ("\x1b", "\x07", "\u202e"):
        assert raw not in text.stdout
    shown = json_of(deadletter("show", str(not_utf8), "--json"))
    assert shown["body_encoding"] == "base64"
    assert base64.b64decode(shown["body"]) == NOT_UTF8
    shown = json_of(deadletter("show", str(first), "--json"))
    assert (shown["body_encoding"], shown["body"].encode()) == ("utf-8", readable)
    missing = deadletter("show", "99")
    assert missing.returncode == 1
    assert "keeps no dead letter 99" in missing.stderr

    replayed = deadletter("replay", str(first))
    assert replayed.returncode == 0, replayed.stderr
    assert f"dead letter {first}: applied, purged" in replayed.stdout
    journal = json_of(streamlife("journal", task.task_id, "--store", store_url, "--json", cwd=tmp_path))
    assert journal[-1]["trigger"] == "segment"
    assert "refused by an older parser" in journal[-1]["detail"]
    rest = deadletter("replay", "--json")
    assert rest.returncode == 1  # still refused: kept, and said so
    assert "3 dead letters still refused" in rest.stderr
    results = json.loads(rest.stdout)
    assert [(result["id"], result["result"], result["purged"]) for result in results] == [
        (not_utf8, "refused", False),
        (tricks, "refused", False),
        (cut, "refused", False),
    ]
    assert "cut" in results[2]["error"]
    unknown = deadletter("replay", str(first))  # replayed, so purged
    assert unknown.returncode == 1
    assert f"keeps no dead letter {first}" in unknown.stderr

    purged = deadletter("purge", str(not_utf8), str(tricks))
    assert purged.returncode == 0, purged.stderr
    assert "purged 2 dead letters" in purged.stdout
    again = deadletter("purge", str(tricks))
    assert again.returncode == 1
    assert f"keeps no dead letter {tricks}" in again.stderr
    for neither_or_both in ((), (str(cut), "--all")):
        refused = deadletter("purge", *neither_or_both)
        assert refused.returncode == 2
        assert "or --all" in refused.stderr
    assert json_of(deadletter("purge", "--all", "--json"))["purged"] == 1
    empty = deadletter("list")
    assert empty.returncode == 0
    assert "no dead letters" in empty.stdout


@pytest.mark.parametrize(
    "command",
    [
        ("start", "audio", "rtmp://example.invalid/live", "--provider", "assemblyai"),
        ("stop", "some-task"),
        ("serve", "--token", "t" * 20),
    ],
    ids=["start", "stop", "serve"],
)
@pytest.mark.parametrize("key", [None, "", "   "], ids=["unset", "empty", "blank"])
def test_no_api_key_is_bad_usage(tmp_path: Path, command: tuple[str, ...], key: str | None) -> None:
    result = streamlife(*command, cwd=tmp_path, **({} if key is None else {"MEMORIES_API_KEY": key}))
    assert result.returncode == 2
    assert "MEMORIES_API_KEY" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # refused before the default store was made


@pytest.mark.parametrize(
    ("options", "token_env", "complaint"),
    [
        ((), None, "STREAMLIFE_WEBHOOK_TOKEN"),
        ((), "", "--token"),
        (("--token", "short"), None, "16 characters or more"),
        ((), "short", "16 characters or more"),
    ],
    ids=["none", "empty", "short-option", "short-env"],
)
def test_serve_without_a_good_token_is_bad_usage(
    tmp_path: Path, options: tuple[str, ...], token_env: str | None, complaint: str
) -> None:
    env = {"MEMORIES_API_KEY": "sk-mai-test"} | (
        {} if token_env is None else {"STREAMLIFE_WEBHOOK_TOKEN": token_env}
    )
    result = streamlife("serve", *options, cwd=tmp_path, **env)
    assert result.returncode == 2
    assert complaint in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "complaint"),
    [
        (("status", "--store", "bogus"), "not a store URL"),
        (("journal", "x", "--store", "sqlite:"), "not a store URL"),
        (("simulate", "--store", "memory:later"), "not a store URL"),
        (
            (
                "start",
                "audio",
                "rtmp://x",
                "--provider",
                "assemblyai",
                "--sim",
                "http://127.0.0.1:9",
                "--store",
                "mysql:x",
            ),
            "not a store URL",
        ),
        (("stop", "x", "--sim", "http://127.0.0.1:9", "--store", "postgres:"), "not a store URL"),
        (("serve", "--sim", "--store", "sqlite"), "not a store URL"),
        (("status", "--store", "sqlite:{tmp}/missing.db"), "there is no file"),
        (("deadletter", "list", "--store", "bogus"), "not a store URL"),
        (("deadletter", "replay", "--store", "sqlite:{tmp}/missing.db"), "there is no file"),
        (("simulate", "--store", "sqlite:{tmp}/no/such/dir/run.db"), "could not open"),
        (("status", "--store", "postgres:host=127.0.0.1 port=1 dbname=test"), "could not open PostgresStore"),
    ],
)
def test_a_bad_store_url_is_bad_usage(tmp_path: Path, command: tuple[str, ...], complaint: str) -> None:
    result = streamlife(*(part.replace("{tmp}", str(tmp_path)) for part in command), cwd=tmp_path)
    assert result.returncode == 2
    assert "--store" in result.stderr
    assert complaint in result.stderr
    assert result.stderr.count("could not open") <= 1  # said once, by the store
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("memory:", "memory:"),
        ("sqlite:/var/lib/app/streams.db", "sqlite:/var/lib/app/streams.db"),
        ("postgresql://app:s3cret@db.example:5432/streams", "postgresql://app:***@db.example:5432/streams"),
        ("postgres://app:p@ss@db/streams", "postgres://app:***@db/streams"),
        ("postgresql://db/s?password=s3cret&sslmode=require", "postgresql://db/s?password=***&sslmode=require"),
        ("postgres:host=db password=s3cret dbname=s", "postgres:host=db password=*** dbname=s"),
        ("postgres:host=db password='s3 cret' user=app", "postgres:host=db password=*** user=app"),
    ],
)  # fmt: skip
def test_store_urls_are_shown_with_the_password_masked(url: str, shown: str) -> None:
    assert mask_store_url(url) == shown


def test_serve_answers_408_to_a_client_that_sends_nothing_within_request_timeout(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'tasks.db'}"
    with served("--sim", "--store", store, "--port", "0", "--request-timeout", "0.5", cwd=tmp_path) as serve:
        listens = serve.wait_for(r"webhooks at http://([^/:]+):(\d+)/")
        with socket.create_connection((listens[1], int(listens[2])), timeout=10) as idle:
            began = time.monotonic()
            answer = idle.recv(4096)
            waited = time.monotonic() - began
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert waited < 5, f"closed after {waited:.1f} s"
        assert serve.terminate() == 0


def test_serve_refuses_a_bad_request_timeout_or_connection_cap(tmp_path: Path) -> None:
    for option, value in (("--request-timeout", "0"), ("--max-connections", "0")):
        result = streamlife("serve", "--sim", option, value, cwd=tmp_path)
        assert result.returncode == 2
        assert option in result.stderr


def test_version_prints_the_version_alone(tmp_path: Path) -> None:
    result = streamlife("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert re.fullmatch(r"streamlife \S+\n", result.stdout), result.stdout


def test_dead_letters_are_listed_past_a_page_from_where_asked(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    store = SqliteStore(path)
    ids = [store.dead_letter(1_700_000_000.0, "not JSON", None, b"x%d" % n) for n in range(250)]
    store.close()

    def listed(*args: str) -> list[int]:
        result = streamlife("deadletter", "list", *args, "--json", "--store", f"sqlite:{path}", cwd=tmp_path)
        return [letter["id"] for letter in json_of(result)]

    assert listed() == ids
    assert listed("--after", str(ids[9]), "--limit", "150") == ids[10:160]
    assert listed("--limit", "1") == ids[:1]
    assert listed("--after", str(ids[-1])) == []
