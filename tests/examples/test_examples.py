"""Every program in examples/ runs for real: as a process, on loopback, against the simulator.

The worker and the video moderation stream run as the README says to run them, and must print
what they claim and nothing on stderr. The web applications are served by the servers their
docstrings name (their own ``python examples/...``, ``flask --app``, ``uvicorn --factory``), and
memories.ai's simulator, behind its own HTTP face, posts real webhooks to them while streams are
started and stopped through their APIs. The pytest example passes under pytest.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from streamlife import ManualClock
from streamlife.sim import RealTime, SimHttpServer, SimulatedService, serve_http

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
BIN = Path(sys.executable).parent
API_KEY = "sk-mai-examples-test"
TOKEN = "examples-webhook-token-0123456789"
SPEED = 10.0  # virtual seconds per real second: a 5-second segment every half second
READY = 60.0  # real seconds a server may take to answer its first request before the test fails


def environment(**extra: str) -> dict[str, str]:
    """The test's environment without memories.ai's settings (an example with no key uses the
    simulator), plus ``extra``."""
    ours = ("MEMORIES_", "STREAMLIFE_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(ours)}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def run_example(name: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=REPO,
        env=env or environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def simulator(webhook_url: str) -> Iterator[SimHttpServer]:
    """memories.ai's simulator on loopback, its clock following the real one SPEED times as fast,
    posting its callbacks to ``webhook_url``."""
    service = SimulatedService(clock=ManualClock(time.time()), api_key=API_KEY)
    with serve_http(service, webhook_url=webhook_url) as face, RealTime(service, speed=SPEED):
        yield face


# -- the programs --------------------------------------------------------------------------------
def test_the_video_moderation_example_flags_unsafe_segments_and_stops() -> None:
    result = run_example("video_moderation.py")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # streamlife prints nothing the example did not ask for
    lines = result.stdout.splitlines()
    assert lines[:2] == ["pending -> starting on start", "starting -> running on start_ok"]
    clip = r"https://storage\.sim\.invalid/[0-9a-f-]{36}"
    assert re.fullmatch(rf"segment 3 \(15\.0-20\.0 s\): unsafe, see {clip}/3\.mp4", lines[2])
    assert re.fullmatch(rf"segment 10 \(50\.0-55\.0 s\): unsafe, see {clip}/10\.mp4", lines[3])
    assert lines[4:] == [
        "running -> stopping on stop",
        "stopping -> stopping on stop_ok",
        "stopping -> stopped on stopped",  # the status-14 callback
        "stopped: 12 segments, 120 frames checked, unsafe in [3, 10]",  # fps=2: 10 frames a segment
        "billed: 60.0 s, about $0.0375",  # moderation alone at fps 2: $2.25 an hour
        "still billing: []",
    ]


def test_the_worker_runs_its_streams_against_the_simulator_and_stops_them() -> None:
    result = run_example("worker.py")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    names = ("lobby", "stage", "street")
    for name in names:
        for move in ("starting (start)", "running (start_ok)", "stopping (stop)", "stopped (stopped)"):
            assert f"{name}: {move}\n" in result.stdout
        assert re.search(rf"^{name}: first words: 'segment 0 of [0-9a-f]{{8}}'$", result.stdout, re.MULTILINE)
    summary = result.stdout.split("summary:\n", 1)[1].splitlines()
    assert summary == [
        *(f"  {name}: stopped, 24 final segments" for name in names),  # two minutes: 24 segments
        "  billed: 360.0 s, about $0.0150",
        "  still billing: []",
    ]


def test_the_worker_runs_against_an_api_over_http_with_its_own_webhook_server() -> None:
    """With a key, the worker talks HTTP to the API at MEMORIES_BASE_URL (here the simulator's face)
    and takes the callbacks on its own server, at the URL the simulator posts to."""
    port = free_port()
    with simulator(f"http://127.0.0.1:{port}/memories/{TOKEN}") as face:
        streams = ["rtmp://example.invalid/live/a", "rtmp://example.invalid/live/b"]
        env = environment(
            MEMORIES_API_KEY=API_KEY,
            MEMORIES_BASE_URL=face.base_url,
            STREAMLIFE_WEBHOOK_TOKEN=TOKEN,
            STREAMLIFE_WEBHOOK_PORT=str(port),
            WORKER_STREAMS=" ".join(streams),
            WORKER_SECONDS="3",
        )
        result = run_example("worker.py", env)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        summary = result.stdout.split("summary:\n", 1)[1].splitlines()
        assert re.fullmatch(r"  stream 1: stopped, \d+ final segments", summary[0])
        assert re.fullmatch(r"  stream 2: stopped, \d+ final segments", summary[1])
        assert "stream 1: first words: 'segment 0 of" in result.stdout  # a segment came by webhook
        assert face.service.billing() == []
        streams_ended = [
            (stream.end_status, stream.ended_at is not None) for stream in face.service.streams.values()
        ]
        assert streams_ended == [(14, True), (14, True)]  # both stopped by the worker's stop
        assert face.poster is not None
        assert face.poster.failures == []  # every webhook reached the worker's server


def test_the_worker_stops_its_streams_when_it_is_told_to_quit() -> None:
    port = free_port()
    with simulator(f"http://127.0.0.1:{port}/memories/{TOKEN}") as face:
        env = environment(
            MEMORIES_API_KEY=API_KEY,
            MEMORIES_BASE_URL=face.base_url,
            STREAMLIFE_WEBHOOK_TOKEN=TOKEN,
            STREAMLIFE_WEBHOOK_PORT=str(port),
            WORKER_STREAMS="rtmp://example.invalid/live/a rtmp://example.invalid/live/b",
            WORKER_SECONDS="3600",
        )
        worker = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "worker.py")],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert face.poster is not None
        deadline = time.monotonic() + READY
        while len(face.poster.delivered) < 4:  # both streams are live: their segments came by webhook
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, "no segment reached the worker"
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)  # a supervisor stops the worker long before its hour
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        assert err == ""
        assert "interrupted: stopping every stream\n" in out
        assert "  stream 1: stopped," in out
        assert "  stream 2: stopped," in out
        assert face.service.billing() == []


def test_the_pytest_example_passes_under_pytest() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "examples/test_example.py", "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^5 passed in ", result.stdout, re.MULTILINE), result.stdout


def test_pytest_collects_the_examples_only_when_asked() -> None:
    """`make test` runs pytest with no path: testpaths keeps it to tests/, so the example's tests run
    once, from the test above, and not a second time beside it."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not re.search(r"^examples/", result.stdout, re.MULTILINE)
    assert "tests/examples/test_examples.py::" in result.stdout


# -- the web applications ------------------------------------------------------------------------
def _hear_sigint() -> None:
    """SIGINT back to its default in the child, before it starts: a shell runs a background job
    with SIGINT ignored, and a Python started so never turns it into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class App:
    """A web application example in a process of its own, on loopback."""

    def __init__(self, command: list[str], port: int, env: dict[str, str]) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_hear_sigint,
        )  # fmt: skip
        deadline = time.monotonic() + READY
        while True:
            assert self.process.poll() is None, self.finish(signal.SIGTERM)
            try:
                requests.get(f"{self.url}/streams", timeout=5)
                return
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the application never answered"
                time.sleep(0.1)

    def finish(self, signum: signal.Signals) -> str:
        """Stop the process with ``signum``; return everything it printed, stdout then stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            out, err = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # Killed and read here, not left running: its pipes and its process would otherwise be
            # reported against whichever test comes next.
            self.process.kill()
            out, err = self.process.communicate()
            told = f"the application did not exit within 60 s of {signum.name}:\n{out}{err}"
            raise AssertionError(told) from None
        self.stdout, self.stderr = out, err
        return out + err

    def post(self, path: str, json: Any = None, **headers: str) -> requests.Response:
        return requests.post(f"{self.url}{path}", json=json, headers=headers, timeout=30)

    def stream(self, task_id: str) -> dict[str, Any]:
        answer = requests.get(f"{self.url}/streams/{task_id}", timeout=30)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body


def exercise(app: App) -> None:
    """Start an audio and a video stream through the application's API, let callbacks come by
    webhook, check the receiver's door, stop both through the API: each must end ``stopped``."""
    audio_start = {"kind": "audio", "url": "rtmp://example.invalid/a", "provider": "assemblyai"}
    audio = app.post("/streams", audio_start)
    assert audio.status_code == 201, audio.text
    assert audio.json()["state"] == "running"
    video = app.post(
        "/streams",
        {"kind": "video", "url": "rtmp://example.invalid/v", "options": {"enable_content_moderation": True}},
    )
    assert video.status_code == 201, video.text
    refused = app.post("/streams", {"kind": "audio", "url": "rtmp://example.invalid/a"})  # no provider
    assert refused.status_code in (400, 422), refused.text  # Flask's 400, FastAPI's validation 422
    audio_id, video_id = audio.json()["task_id"], video.json()["task_id"]

    deadline = time.monotonic() + READY  # segments come every half second: wait for a few
    while app.stream(audio_id)["segments"] < 4 or app.stream(video_id)["segments"] < 4:
        assert time.monotonic() < deadline, (app.stream(audio_id), app.stream(video_id))
        time.sleep(0.1)
    assert app.stream(audio_id)["text"].startswith(f"segment 0 of {audio_id[:8]} segment 1 of")
    assert app.stream(video_id)["unsafe"] == [3]  # the simulator's 4th segment of each 7 is unsafe

    # The receiver is mounted with the token: a stranger is refused, a malformed callback is a 400.
    assert app.post("/memories/not-the-token-at-all", {"task_id": audio_id}).status_code == 401
    malformed = app.post(f"/memories/{TOKEN}", {"task_id": audio_id, "data": "?"})
    assert malformed.status_code == 400, malformed.text

    for task_id in (audio_id, video_id):
        stopped = app.post(f"/streams/{task_id}/stop")
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["state"] == "stopped"  # the status-14 callback came by webhook
        assert stopped.json()["final_callback_missing"] is False
    assert app.post(f"/streams/{audio_id}/stop").json()["state"] == "stopped"  # safe to repeat
    assert app.post("/streams/no-such-task/stop").status_code == 404
    listed = requests.get(f"{app.url}/streams", timeout=30).json()["streams"]
    assert sorted(stream["state"] for stream in listed) == ["stopped", "stopped"]


@pytest.mark.parametrize("name", ["flask_app.py", "fastapi_app.py"])
def test_a_web_app_run_as_a_script_uses_a_simulator_of_its_own_and_leaves_nothing_billing(name: str) -> None:
    port = free_port()
    env = environment(PORT=str(port), SIMULATOR_SPEED=str(SPEED), STREAMLIFE_WEBHOOK_TOKEN=TOKEN)
    app = App([sys.executable, str(EXAMPLES / name)], port, env)
    try:
        exercise(app)
    finally:
        app.finish(signal.SIGTERM)
    assert app.process.returncode == 0, app.stderr
    assert app.stdout.startswith("simulated memories.ai at http://127.0.0.1:")
    assert app.stdout.endswith("still billing: []\n")
    assert "POST /memories/*** " in app.stdout + app.stderr  # the access log shows each webhook...
    assert TOKEN not in app.stdout + app.stderr  # ...never the token
    assert "Traceback" not in app.stdout + app.stderr


@pytest.mark.parametrize(
    "command",
    [
        [str(BIN / "flask"), "--app", "examples/flask_app.py", "run", "--port"],
        [str(BIN / "uvicorn"), "--factory", "--app-dir", "examples", "fastapi_app:create_app", "--port"],
    ],
    ids=["flask", "uvicorn"],
)
def test_a_web_app_in_its_server_takes_memories_webhooks_and_stops_its_streams(
    command: list[str], tmp_path: Path
) -> None:
    port = free_port()
    with simulator(f"http://127.0.0.1:{port}/memories/{TOKEN}") as face:
        env = environment(
            MEMORIES_API_KEY=API_KEY,
            MEMORIES_BASE_URL=face.base_url,
            STREAMLIFE_WEBHOOK_TOKEN=TOKEN,
            STREAMLIFE_STORE=f"sqlite:{tmp_path / 'streams.db'}",
        )
        app = App([*command, str(port)], port, env)
        try:
            exercise(app)
        finally:
            output = app.finish(signal.SIGINT)
        assert face.service.billing() == [], output
        assert len(face.service.streams) == 2  # one start each: no start was sent twice
        assert face.poster is not None
        assert face.poster.failures == [], output  # every webhook was taken
        assert TOKEN not in output
        assert "Traceback" not in output
