"""`streamlife start understand`, `stop` and `status` for a Live Video Understanding task, and
`send-callback --stream understand`: in-process, where `start` and `stop` reach the simulator
through its in-process transport in place of the HTTP one (``transport_for``), so that what each
command sends and refuses is seen as the command line gives it; and the dev loop in subprocesses
over loopback sockets, against `streamlife sim serve`'s Live Video Understanding host."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from streamlife._callbacks import parse_callback
from streamlife._events import StartResult, StopResult, StreamKind
from streamlife.cli import main
from streamlife.cli import serve as cli_serve
from streamlife.cli import streams as cli_streams
from streamlife.cli.environment import resolve
from streamlife.cli.parser import build_parser
from streamlife.cli.render import describe
from streamlife.protocol import understand_result
from streamlife.sim import Faults, SimTransport
from streamlife.testing import MemoriesSim
from tests.cli.test_cli_commands import json_of, streamlife
from tests.cli.test_cli_devloop import TOKEN, dev_environment, free_port, running
from tests.scripted_server import Answer, scripted_server

RTMP = "rtmp://sim.invalid:1935/live/stream"
CALLBACK = "https://hooks.example.invalid/understand"


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """``main`` configures structlog, as the application it is; put the tests' own back after."""
    configured = structlog.get_config()
    yield
    structlog.configure(**configured)


class Recording:
    """The simulator's in-process transport, keeping each start body it sends; closed by the test."""

    def __init__(self, inner: SimTransport) -> None:
        self.inner = inner
        self.bodies: list[dict[str, Any]] = []

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        self.bodies.append(dict(params))
        return self.inner.start(kind, params)

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        return self.inner.stop(kind, task_id, within=within)

    def close(self) -> None:
        """The command closes its transport when it is done; the simulator outlives it."""


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoriesSim]:
    """A simulator whose in-process transport `start` and `stop` use instead of an HttpTransport."""
    sim = MemoriesSim.new(Faults())
    recording = Recording(sim.transport)
    monkeypatch.setattr(cli_streams, "transport_for", lambda args, retry=None: recording)
    monkeypatch.setattr(sim, "recording", recording, raising=False)
    yield sim
    sim.close()


def bodies(sim: MemoriesSim) -> list[dict[str, Any]]:
    recording: Recording = getattr(sim, "recording")  # noqa: B009  (set by the fixture)
    return recording.bodies


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_an_understand_stream_is_started_listed_and_stopped(
    sim: MemoriesSim, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = f"sqlite:{tmp_path / 'understand.db'}"
    code, out, err = run(
        capsys,
        "start", "understand", "--url", RTMP, "--prompt", "Count the people", "--system-prompt",
        "You watch a shop", "--thinking", "--callback", CALLBACK, "--store", store, "--json",
    )  # fmt: skip
    assert (code, err) == (0, "")
    started = json.loads(out)
    assert (started["kind"], started["state"]) == ("understand", "running")
    stream = sim.service.streams[started["task_id"]]
    assert stream.kind is StreamKind.UNDERSTAND
    assert stream.callback == CALLBACK
    assert bodies(sim) == [
        {
            "url": RTMP,
            "user_prompt": "Count the people",
            "system_prompt": "You watch a shop",
            "thinking": True,
            "callback": CALLBACK,
        }
    ]

    code, out, _ = run(capsys, "status", "--store", store, "--json")
    assert code == 0
    assert [(task["kind"], task["state"]) for task in json.loads(out)] == [("understand", "running")]

    code, out, err = run(capsys, "stop", started["task_id"], "--store", store, "--wait", "5", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["state"] == "stopped"  # settled by the stop's answer: no callback awaited
    assert sim.service.billing() == []


def test_the_url_may_be_given_as_the_argument(
    sim: MemoriesSim, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = f"sqlite:{tmp_path / 'u.db'}"
    code, out, _ = run(
        capsys, "start", "understand", RTMP, "--prompt", "Describe", "--callback", CALLBACK,
        "--store", store, "--json",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["state"] == "running"
    assert sim.service.start_requests == 1


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["understand", "--url", RTMP, "--callback", CALLBACK], "needs --prompt TEXT"),
        (["understand", "--url", RTMP, "--prompt", " ", "--callback", CALLBACK], "needs --prompt TEXT"),
        (
            ["understand", "--url", RTMP, "--prompt", "Describe"],
            "or --callback URL, a public http(s) URL of your own",
        ),
        (
            ["understand", "--url", RTMP, "--prompt", "Describe", "--callback", "ftp://h.example/u"],
            "--callback must be a public http:// or https:// URL",
        ),
        (
            [
                "understand",
                "--url",
                RTMP,
                "--prompt",
                "D",
                "--callback",
                CALLBACK,
                "--provider",
                "assemblyai",
            ],
            "--provider: an audio stream's",
        ),
        (
            ["video", "--url", RTMP, "--prompt", "Describe", "--thinking"],
            "--prompt, --thinking: only for an understand",
        ),
        (["video", RTMP, "--url", RTMP], "given twice"),
        (["video"], "the stream's URL is missing"),
    ],
)
def test_a_start_that_lacks_or_misplaces_what_it_needs_is_bad_usage_and_sends_nothing(
    sim: MemoriesSim, capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], words: str
) -> None:
    code, _, err = run(capsys, "start", *argv, "--store", f"sqlite:{tmp_path / 'none.db'}")
    assert code == 2
    assert words in err
    assert sim.service.start_requests == 0


def test_with_sim_alone_an_understand_request_is_refused_not_sent_elsewhere(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`--sim` names the simulator's audio and video API: Live Video Understanding is on a host of
    its own, and without --understand-url nothing is sent (never to memories.ai's host)."""
    code, _, err = run(
        capsys, "start", "understand", "--url", RTMP, "--prompt", "Describe", "--callback", CALLBACK,
        "--sim", "http://127.0.0.1:9", "--store", f"sqlite:{tmp_path / 's.db'}",
    )  # fmt: skip
    assert code == 2
    assert "needs --understand-url too" in err
    assert not (tmp_path / "s.db").exists()


def test_stopping_an_understand_task_with_sim_alone_is_refused(
    sim: MemoriesSim, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = f"sqlite:{tmp_path / 'u.db'}"
    code, out, _ = run(
        capsys,
        "start",
        "understand",
        RTMP,
        "--prompt",
        "D",
        "--callback",
        CALLBACK,
        "--store",
        store,
        "--json",
    )
    assert code == 0
    task_id = json.loads(out)["task_id"]
    code, _, err = run(capsys, "stop", task_id, "--store", store, "--sim", "http://127.0.0.1:9")
    assert code == 2
    assert "needs --understand-url too" in err
    assert sim.service.billing() == [task_id]  # nothing was sent


@pytest.mark.parametrize(
    ("option", "named"),
    [
        (["--understand-url", "ftp://h.example"], "--understand-url 'ftp://h.example'"),
        ([], "MEMORIES_UNDERSTAND_URL="),
    ],
)
def test_an_understand_url_that_is_not_http_is_bad_usage_naming_where_it_came_from(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, option: list[str], named: str
) -> None:
    monkeypatch.setenv("MEMORIES_UNDERSTAND_URL", "stream.example")  # (an option given wins)
    code, _, err = run(capsys, "stop", "k", "--sim", "http://127.0.0.1:9", *option)
    assert code == 2
    assert named in err
    assert "is not an http:// or https:// URL" in err


# -- send-callback ---------------------------------------------------------------------------------
def dry_run(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, "send-callback", "http://127.0.0.1:9/hook", "--dry-run", *argv)
    assert (code, err) == (0, ""), err
    return json.loads(out)


def test_an_understand_result_is_shaped_as_memories_ai_sends_it(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("--task", "t-1", "--stream", "understand", "--kind", "segment")
    sent = dry_run(capsys, *argv, "--text", "Two people", "--timestamp", "2026-12-05T10:00:05Z")
    assert sent == understand_result("t-1", "Two people", "2026-12-05T10:00:05Z")
    event = parse_callback(sent)
    assert event.task_id == "t-1"
    first, second = dry_run(capsys, *argv), dry_run(capsys, *argv)
    assert first["data"]["text"] == "A person walks across the frame."
    assert first["data"]["timestamp"] <= second["data"]["timestamp"]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--kind", "stopped"], "documents no stopped callback (its stop's answer settles the task"),
        (["--kind", "ended"], "documents no ended callback"),
        (["--kind", "segment", "--index", "3"], "--index: not for an understand result"),
        (["--kind", "segment", "--partial", "--unsafe"], "--partial, --unsafe: not for an understand"),
        (["--kind", "segment", "--status", "0"], "--status: not for an understand result"),
    ],
)
def test_an_understand_callback_that_is_not_documented_is_refused_with_the_reason(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    code, _, err = run(
        capsys, "send-callback", "http://127.0.0.1:9/hook", "--task", "t-1", "--stream", "understand", *argv
    )
    assert code == 2
    assert words in err


def test_a_timestamp_is_an_understand_results_only(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "send-callback", "http://127.0.0.1:9/hook", "--task", "t-1", "--kind", "segment",
        "--timestamp", "2026-12-05T10:00:05Z",
    )  # fmt: skip
    assert code == 2
    assert "--timestamp: an understand result's" in err


def test_an_understand_result_is_posted_over_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    received: list[Any] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/understand"
        code, out, err = run(
            capsys, "send-callback", url, "--task", "t-2", "--stream", "understand", "--kind", "segment",
            "--timestamp", "2026-12-05T10:00:10Z",
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert (code, err) == (0, "")
    assert out.startswith("HTTP 200")
    assert received == [understand_result("t-2", "A person walks across the frame.", "2026-12-05T10:00:10Z")]


# -- over loopback, against `streamlife sim serve` ----------------------------------------------------
def test_the_dev_loop_starts_lists_and_stops_an_understand_stream_told_by_the_environment(
    tmp_path: Path,
) -> None:
    """`sim serve` serves Live Video Understanding on a port of its own; `start`, `status` and `stop`
    reach it in subprocesses, told where by MEMORIES_UNDERSTAND_URL, and its results reach the
    callback URL the start named."""
    sim_port, understand_port = free_port(), free_port()
    env = dev_environment(tmp_path, sim_port)
    env["MEMORIES_UNDERSTAND_URL"] = f"http://127.0.0.1:{understand_port}"
    nobody = f"http://127.0.0.1:{free_port()}/{TOKEN}"  # the account's webhook: understand posts elsewhere
    args = ("sim", "serve", "--webhook", nobody, "--port", str(sim_port), "--speed", "50",
            "--understand-port", str(understand_port))  # fmt: skip
    with scripted_server() as hooks, running(*args, cwd=tmp_path, env=env) as sim:
        hooks.then(*[Answer(200, {"ok": True})] * 500)
        sim.wait_for(r"Live Video Understanding at (\S+);")
        started = json_of(
            streamlife(
                "start", "understand", "--url", RTMP, "--prompt", "Describe it", "--callback",
                hooks.url + "/understand", "--json", cwd=tmp_path, **env,
            )
        )  # fmt: skip
        assert (started["kind"], started["state"]) == ("understand", "running")
        give_up = time.monotonic() + 15
        while not hooks.requests and time.monotonic() < give_up:
            time.sleep(0.05)
        listed = json_of(streamlife("status", "--json", cwd=tmp_path, **env))
        assert [(task["task_id"], task["kind"]) for task in listed] == [(started["task_id"], "understand")]
        stopped = json_of(streamlife("stop", started["task_id"], "--json", cwd=tmp_path, **env))
        assert stopped["state"] == "stopped"  # the stop's answer settles it
        assert sim.terminate() == 0
        sim.wait_for(r"1 streams? started, 0 still billing")
    assert hooks.requests
    assert {(seen.path, seen.body["task_id"]) for seen in hooks.requests} == {
        ("/understand", started["task_id"])
    }


@pytest.mark.parametrize(
    ("argv", "environ", "understand_url"),
    [
        ([], {}, "https://stream.memories.ai"),
        ([], {"MEMORIES_UNDERSTAND_URL": "http://127.0.0.1:8791"}, "http://127.0.0.1:8791"),
        (
            ["--understand-url", "http://127.0.0.1:9"],
            {"MEMORIES_UNDERSTAND_URL": "http://h.example"},
            "http://127.0.0.1:9",
        ),
    ],
)
def test_serve_sends_understand_requests_where_it_is_told(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], environ: dict[str, str], understand_url: str
) -> None:
    """Its Fleet stops understand tasks too (silent ones, orphans): at the host it is given."""
    monkeypatch.delenv("MEMORIES_UNDERSTAND_URL", raising=False)
    for name, value in {"MEMORIES_API_KEY": "sk-mai-x", **environ}.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(["serve", "--token", TOKEN, "--store", "memory:", *argv])
    resolve(args)
    assert cli_serve._settings(args).understand_url == understand_url


def test_serve_takes_both_hosts_of_the_service_but_no_understand_host_with_its_simulator(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEMORIES_API_KEY", "sk-mai-x")
    hosts = ["--api-url", "http://127.0.0.1:8/serve/api/v2", "--understand-url", "http://127.0.0.1:9"]
    args = build_parser().parse_args(["serve", "--token", TOKEN, "--store", "memory:", *hosts])
    resolve(args)
    settings = cli_serve._settings(args)
    assert (settings.api_url, settings.understand_url) == (
        "http://127.0.0.1:8/serve/api/v2",
        "http://127.0.0.1:9",
    )

    monkeypatch.setenv("MEMORIES_UNDERSTAND_URL", "http://h.example")  # (not read with --sim)
    assert main(["serve", "--sim", "--store", "memory:", "--understand-url", "http://127.0.0.1:9"]) == 2
    assert "--understand-url: not with --sim" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("segment", "shown"),
    [
        ({"index": 3, "final": True, "text": "hi"}, "segment 3 final 'hi'"),
        ({"index": None, "final": True, "text": "a dog", "stamp": "2026-12-05T10:00:05Z"},
         "segment at 2026-12-05T10:00:05Z final 'a dog'"),
        ({"index": None, "final": False, "text": "hel"}, "segment unnumbered partial 'hel'"),
    ],
)  # fmt: skip
def test_the_journal_names_a_result_by_its_index_else_by_its_timestamp(
    segment: dict[str, Any], shown: str
) -> None:
    """An understand result carries no index: the journal shows its timestamp, never "None"."""
    assert describe({"segment": segment}, width=200) == shown
