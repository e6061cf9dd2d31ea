"""`streamlife start understand` without --callback: the task's own signed URL under the public URL
of `streamlife serve` (--public-url or STREAMLIFE_PUBLIC_URL), signed with the webhook token. In
process for what the command sends and refuses; over loopback, in subprocesses, for the dev loop:
`sim serve` posts each result to the task's URL, `serve` routes it to its task."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import structlog

from streamlife._task_urls import task_signature
from streamlife.protocol import understand_result
from streamlife.testing import MemoriesSim
from tests.cli.test_cli_commands import json_of, streamlife
from tests.cli.test_cli_devloop import TOKEN, dev_environment, free_port, running
from tests.cli.test_cli_understand import CALLBACK, RTMP, bodies, run
from tests.cli.test_cli_understand import sim as sim  # the fixture

PUBLIC = "https://hooks.example.invalid/memories"


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    configured = structlog.get_config()
    yield
    structlog.configure(**configured)


@pytest.fixture(autouse=True)
def no_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STREAMLIFE_PUBLIC_URL", "STREAMLIFE_WEBHOOK_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def start(capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str) -> tuple[int, str, str]:
    store = f"sqlite:{tmp_path / 'u.db'}"
    return run(capsys, "start", "understand", RTMP, "--prompt", "Describe", "--store", store, *argv)


@pytest.mark.parametrize("told_by", ["option", "environment"])
def test_without_callback_the_start_names_the_tasks_own_signed_url(
    sim: MemoriesSim,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    told_by: str,
) -> None:
    if told_by == "option":
        argv: tuple[str, ...] = ("--public-url", PUBLIC + "/", "--token", TOKEN)
    else:
        monkeypatch.setenv("STREAMLIFE_PUBLIC_URL", PUBLIC)
        monkeypatch.setenv("STREAMLIFE_WEBHOOK_TOKEN", TOKEN)
        argv = ()
    code, out, err = start(capsys, tmp_path, *argv, "--json", "--log-level", "debug")
    assert code == 0, err
    key = json.loads(out)["key"]
    sig = task_signature(TOKEN.encode(), key)
    assert bodies(sim)[0]["callback"] == f"{PUBLIC}/task/{key}/{sig}"
    assert sim.service.streams[json.loads(out)["task_id"]].callback == f"{PUBLIC}/task/{key}/{sig}"
    assert TOKEN not in out + err
    assert sig not in out + err


def test_a_callback_given_wins_over_the_public_url(
    sim: MemoriesSim, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAMLIFE_PUBLIC_URL", PUBLIC)
    code, _, err = start(capsys, tmp_path, "--callback", CALLBACK)  # (no token needed then)
    assert code == 0, err
    assert bodies(sim)[0]["callback"] == CALLBACK


@pytest.mark.parametrize(
    ("argv", "environ", "words"),
    [
        ([], {}, "--public-url URL (or STREAMLIFE_PUBLIC_URL), the public base URL of `streamlife serve`"),
        ([], {}, "or --callback URL"),
        (["--public-url", PUBLIC], {}, "--public-url: a task's own URL is signed with the webhook token"),
        ([], {"STREAMLIFE_PUBLIC_URL": PUBLIC}, "STREAMLIFE_PUBLIC_URL: a task's own URL is signed"),
        (["--public-url", PUBLIC, "--token", "short"], {}, "16 characters or more, got 5"),
        (["--public-url", f"{PUBLIC}/{TOKEN}", "--token", TOKEN], {}, "must not carry the webhook token"),
        (["--public-url", "ftp://h.example/x", "--token", TOKEN], {}, "--public-url 'ftp://h.example/"),
        ([], {"STREAMLIFE_PUBLIC_URL": f"{PUBLIC}?a=b"}, "STREAMLIFE_PUBLIC_URL='https://hooks."),
        ([], {"STREAMLIFE_PUBLIC_URL": " "}, "STREAMLIFE_PUBLIC_URL is set but empty"),
        (
            ["--public-url", PUBLIC],
            {"STREAMLIFE_WEBHOOK_TOKEN": " "},
            "STREAMLIFE_WEBHOOK_TOKEN is set but empty",
        ),
    ],
)
def test_what_task_urls_lack_is_bad_usage_that_says_what_to_pass_and_sends_nothing(
    sim: MemoriesSim,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    argv: list[str],
    environ: dict[str, str],
    words: str,
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    code, out, err = start(capsys, tmp_path, *argv)
    assert code == 2
    assert words in err
    assert TOKEN not in out + err
    assert sim.service.start_requests == 0
    assert not (tmp_path / "u.db").exists()


# -- over loopback: sim serve, serve and start, each a process -------------------------------------------
@pytest.mark.parametrize("server", ["builtin", "uvicorn"])
def test_the_dev_loop_routes_understand_results_by_the_tasks_own_url(tmp_path: Path, server: str) -> None:
    """`start understand` without --callback, told serve's public URL by STREAMLIFE_PUBLIC_URL: `sim
    serve` posts each result to the task's URL, `serve` (either server) verifies it and applies it
    to the task; `stop` settles it. A hand-made POST with a wrong signature is answered 401."""
    if server == "uvicorn":
        pytest.importorskip("uvicorn")
    sim_port, understand_port = free_port(), free_port()
    env = dev_environment(tmp_path, sim_port)
    env["MEMORIES_UNDERSTAND_URL"] = f"http://127.0.0.1:{understand_port}"

    def command(*args: str) -> tuple[str, str]:
        done = streamlife(*args, cwd=tmp_path, **env)
        assert done.returncode == 0, done.stderr
        return done.stdout, done.stderr

    with running("serve", "--port", "0", "--server", server, cwd=tmp_path, env=env) as serve:
        port = serve.wait_for(r"webhooks at http://127\.0\.0\.1:(\d+)/<token hidden>.*; recovered")[1]
        env["STREAMLIFE_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
        sim_args = ("sim", "serve", "--webhook", f"http://127.0.0.1:{port}/{TOKEN}", "--port",
                    str(sim_port), "--understand-port", str(understand_port), "--speed", "50")  # fmt: skip
        with running(*sim_args, cwd=tmp_path, env=env) as sim:
            sim.wait_for(r"Live Video Understanding at (\S+);")
            out, err = command("start", "understand", "--url", RTMP, "--prompt", "Describe it", "--json")
            started = json.loads(out)
            assert (started["kind"], started["state"]) == ("understand", "running")
            key, task_id = started["key"], started["task_id"]
            sig = task_signature(TOKEN.encode(), key)
            assert TOKEN not in out + err
            assert sig not in out + err

            give_up = time.monotonic() + 20
            while time.monotonic() < give_up:
                entries = json_of(streamlife("journal", key, "--json", cwd=tmp_path, **env))
                if sum(entry["trigger"] == "segment" for entry in entries) >= 3:
                    break
                time.sleep(0.1)
            assert sum(entry["trigger"] == "segment" for entry in entries) >= 3
            shown = json_of(streamlife("status", "--task", key, "--json", cwd=tmp_path, **env))
            assert (shown["task_id"], shown["state"]) == (task_id, "running")
            assert shown["version"] >= 5  # start, its answer and the results

            # A result with a wrong signature, to the task's path: refused, and not applied.
            wrong = task_signature(b"another-token-0123456789", key)
            result = understand_result(task_id, "forged", "2026-12-05T10:00:05Z")
            answer = requests.post(f"http://127.0.0.1:{port}/task/{key}/{wrong}", json=result, timeout=10)
            assert answer.status_code == 401
            entries = json_of(streamlife("journal", key, "--json", cwd=tmp_path, **env))
            assert "forged" not in json.dumps(entries)

            out, err = command("stop", task_id, "--json")
            assert json.loads(out)["state"] == "stopped"
            assert json_of(streamlife("status", "--json", cwd=tmp_path, **env)) == []
            assert sim.terminate() == 0
            sim.wait_for(r"1 stream started, 0 still billing")
            sim.wait_for(r"(\d+) callbacks delivered, 0 failed attempts")
        assert serve.terminate() == 0
        serve.wait_for(r"leaving 0 unfinished tasks in")
    assert TOKEN not in "".join(serve.seen + sim.seen)
    assert sig not in "".join(serve.seen + sim.seen)
