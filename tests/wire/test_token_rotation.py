"""Rotating the webhook token without losing a callback: a receiver given ``previous_tokens`` takes
the old token (path, header or bearer) and the task URLs signed with it, beside the new token, on
real sockets and a real SQLite file, across a restart, and on the ASGI face alike; once the old
token is dropped, it is refused. ``serve`` reads the tokens rotated out from
``STREAMLIFE_WEBHOOK_PREVIOUS_TOKENS``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from streamlife import CallbackUrls, Fleet, TaskState
from streamlife.protocol import segment_callback
from streamlife.sim import SimTransport, SimulatedService
from streamlife.store import SqliteStore
from streamlife.webhook import MAX_PREVIOUS_TOKENS, WebhookReceiver, serve_webhook
from tests.cli.test_cli_commands import Served, environment
from tests.wire.test_task_callback_urls import POLICY, TIMEOUT, Service, body, result
from tests.wire.test_webhook import bench, encoded, tid
from tests.wire.test_webhook_asgi import call_asgi

OLD = "old-token-0123456789abcdef"
NEW = "new-token-fedcba9876543210"
STRANGER = "not-a-token-0123456789abcdef"


def post(url: str, payload: Any, **headers: str) -> requests.Response:
    return requests.post(
        url,
        data=json.dumps(payload),
        headers={"Content-Type": "application/json", **headers},
        timeout=TIMEOUT,
    )


@contextmanager
def receiving(fleet: Fleet, token: str, previous: tuple[str, ...] = ()) -> Iterator[str]:
    """``fleet`` behind a receiver with ``token`` (and ``previous``) on loopback: its base URL."""
    with serve_webhook(WebhookReceiver(fleet, token=token, previous_tokens=previous)) as live:
        yield live.url


def moved(url: str, base: str) -> str:
    """A task URL made under one server's address, sent to another's: the signature covers the key
    alone, as a proxy in front would keep the public URL the same."""
    return base + "/memories/" + url.split("/memories/", 1)[1]


def test_a_rotation_takes_the_old_token_and_its_task_urls_until_it_is_dropped(tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    service = Service()
    # Before: everything under the old token. An understand task's URL is signed with it.
    before = Fleet(
        service,
        policy=POLICY,
        store=SqliteStore(path),
        callback_urls=CallbackUrls("https://x.invalid/memories", token=OLD),
    )
    task = before.start("understand", **body())
    assert task.state is TaskState.RUNNING
    assert before.callback_urls is not None
    assert task.key is not None
    old_url = before.callback_urls.url_for(task.key)
    before.close()

    # The rotation: a restart with the new token, the old one taken beside it.
    service_after = Service()
    store = SqliteStore(path)
    after = Fleet(
        service_after,
        policy=POLICY,
        store=store,
        callback_urls=CallbackUrls("https://x.invalid/memories", token=NEW),
    )
    after.recover()
    with receiving(after, NEW, (OLD,)) as base:
        answer = post(moved(old_url, base), result(str(task.task_id), "seen after the rotation"))
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"outcome": "applied"}
        # The account's webhook, with the old token wherever it may ride, and with the new one.
        segments = iter(range(100))
        for url, headers in (
            (f"{base}/memories/{OLD}", {}),
            (f"{base}/memories", {"X-Streamlife-Token": OLD}),
            (f"{base}/memories", {"Authorization": f"Bearer {OLD}"}),
            (f"{base}/memories/{NEW}", {}),
        ):
            answer = post(url, segment_callback("unknown-stream", next(segments)), **headers)
            assert answer.status_code == 200, (url, headers, answer.text)
        assert post(f"{base}/memories/{STRANGER}", segment_callback("unknown-stream", 9)).status_code == 401
        # A task started now gets a URL signed with the new token.
        fresh = after.start("understand", **body())
        assert after.callback_urls is not None
        assert fresh.key is not None
        assert (
            post(moved(after.callback_urls.url_for(fresh.key), base), result(str(fresh.task_id))).status_code
            == 200
        )

    # The old token dropped: its path and its task URLs are refused, and nothing is applied.
    with receiving(after, NEW) as base:
        answer = post(moved(old_url, base), result(str(task.task_id), "too late"))
        assert answer.status_code == 401
        assert post(f"{base}/memories/{OLD}", segment_callback("unknown-stream", 50)).status_code == 401
    taken_back = after.get(str(task.task_id))
    assert taken_back is not None
    assert [segment.text for segment in taken_back.transcript] == ["seen after the rotation"]
    after.close()


@pytest.mark.parametrize(
    ("options", "error", "says"),
    [
        ({"token": NEW, "previous_tokens": ["short"]}, ValueError, "previous token must be a string of 16"),
        ({"token": NEW, "previous_tokens": [7]}, ValueError, "previous token must be a string"),
        ({"token": NEW, "previous_tokens": OLD}, TypeError, "a list of tokens, not one token"),
        (
            {"allow_unauthenticated": True, "previous_tokens": [OLD]},
            ValueError,
            "previous_tokens need a token",
        ),
        (
            {"token": NEW, "previous_tokens": [f"{OLD}{n}" for n in range(MAX_PREVIOUS_TOKENS + 1)]},
            ValueError,
            f"at most {MAX_PREVIOUS_TOKENS} previous tokens",
        ),
    ],
)
def test_bad_previous_tokens_are_refused_with_a_clear_error(
    options: dict[str, Any], error: type[Exception], says: str
) -> None:
    fleet = Fleet(SimTransport(SimulatedService()), policy=POLICY)
    with pytest.raises(error, match=says):
        WebhookReceiver(fleet, **options)
    fleet.close()


def test_the_repr_shows_no_previous_token() -> None:
    fleet = Fleet(SimTransport(SimulatedService()), policy=POLICY)
    receiver = WebhookReceiver(fleet, token=NEW, previous_tokens=[OLD, NEW])
    shown = repr(receiver)
    assert OLD not in shown
    assert NEW not in shown
    assert "previous_tokens=<1 redacted>" in shown  # the current token is not counted again
    fleet.close()


def serve_command(tmp_path: Path) -> list[str]:
    """``streamlife serve`` on a SQLite file in ``tmp_path``, on any free port."""
    return [
        sys.executable,
        "-m",
        "streamlife",
        "serve",
        "--store",
        f"sqlite:{tmp_path / 'tasks.db'}",
        "--port",
        "0",
    ]


@contextmanager
def serve(tmp_path: Path, **env: str) -> Iterator[tuple[Served, str]]:
    process = subprocess.Popen(
        serve_command(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=environment(MEMORIES_API_KEY="sk-mai-rotation", STREAMLIFE_WEBHOOK_TOKEN=NEW, **env),
    )
    served = Served(process)
    try:
        yield served, served.wait_for(r"webhooks at (http://127\.0\.0\.1:\d+)/<token hidden>")[1]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=TIMEOUT)
        served._reader.join(timeout=TIMEOUT)  # (it read to the end: the process is gone)
        assert process.stderr is not None
        process.stderr.close()


def test_serve_takes_the_tokens_rotated_out_from_the_environment(tmp_path: Path) -> None:
    with serve(tmp_path, STREAMLIFE_WEBHOOK_PREVIOUS_TOKENS=f" {OLD} ,,{STRANGER}") as (served, url):
        for n, token in enumerate((OLD, STRANGER, NEW)):
            assert post(f"{url}/{token}", segment_callback("unknown-stream", n)).status_code == 200
        assert post(f"{url}/{OLD[::-1]}", segment_callback("unknown-stream", 9)).status_code == 401
        assert served.terminate() == 0
    assert OLD not in "".join(served.seen)
    assert STRANGER not in "".join(served.seen)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (" , ", "STREAMLIFE_WEBHOOK_PREVIOUS_TOKENS is set but empty"),
        (f"{OLD},short", "token 2 is 5 characters"),
        (",".join(f"{OLD}{n}" for n in range(MAX_PREVIOUS_TOKENS + 1)), f"at most {MAX_PREVIOUS_TOKENS}"),
    ],
)
def test_bad_previous_tokens_in_the_environment_are_bad_usage(tmp_path: Path, value: str, says: str) -> None:
    finished = subprocess.run(
        serve_command(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=environment(
            MEMORIES_API_KEY="sk-mai-rotation",
            STREAMLIFE_WEBHOOK_TOKEN=NEW,
            STREAMLIFE_WEBHOOK_PREVIOUS_TOKENS=value,
        ),
        check=False,
    )
    assert finished.returncode == 2, finished.stderr
    assert says in finished.stderr
    assert OLD not in finished.stderr


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        (f"/hooks/{OLD}", (("Content-Type", "application/json"),), 200),
        ("/hooks", (("X-Streamlife-Token", OLD),), 200),
        ("/hooks", (("Authorization", f"Bearer {OLD}"),), 200),
        (f"/hooks/{NEW}", (), 200),
        (f"/hooks/{STRANGER}", (), 401),
    ],
)
def test_the_asgi_face_takes_a_previous_token_as_the_others_do(
    path: str, headers: tuple[tuple[str, str], ...], status: int
) -> None:
    rig = bench(token=NEW, previous_tokens=[OLD])
    task = rig.start()
    answer = call_asgi(rig.receiver, [encoded(segment_callback(tid(task), 0))], path=path, headers=headers)
    assert answer.status == status
    assert (task.transcript_text() == "hello there") is (status == 200)
