"""The dev loop, through the entry point in subprocesses over loopback sockets: `streamlife sim serve`
posting its callbacks, faults on, to `streamlife serve`; `start`, `stop` and `status` told everything by
the environment alone; `send-callback` against a receiver; the environment's refusals; the options
after a command's action; and `sim serve` leaving on SIGTERM or SIGINT, saying what still bills."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamlife import Fleet, ManualClock, Policy, StreamKind
from streamlife.cli.simulator import mask_webhook
from streamlife.sim import SimTransport, SimulatedService
from streamlife.transport import HttpTransport
from streamlife.webhook import WebhookReceiver, serve_webhook
from tests.cli.test_cli_commands import Served, environment, json_of, streamlife
from tests.scripted_server import Answer, scripted_server

TOKEN = "dev-loop-token-0123456789"
KEY = "sk-mai-dev-loop-key"


def free_port() -> int:
    """A port nobody listens on now: what a user's stable port is, on a machine other tests share."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Running(Served):
    """A command in a subprocess: its stderr read line by line (``Served``), its stdout in a file."""

    def __init__(self, process: subprocess.Popen[str], stdout: Path) -> None:
        super().__init__(process)
        self.stdout = stdout

    def printed(self) -> str:
        """What it has printed on stdout so far."""
        return self.stdout.read_text()


@contextmanager
def running(*args: str, cwd: Path, env: dict[str, str]) -> Iterator[Running]:
    path = cwd / f"stdout-{args[0]}-{free_port()}.txt"
    with path.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlife", *args],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=environment(**env),
        )
    command = Running(process, path)
    try:
        yield command
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        command._reader.join(timeout=5)
        assert process.stderr is not None
        process.stderr.close()


def dev_environment(tmp_path: Path, sim_port: int) -> dict[str, str]:
    """What a developer exports once, in every terminal of the loop."""
    return {
        "STREAMLIFE_STORE": f"sqlite:{tmp_path / 'dev.db'}",
        "MEMORIES_BASE_URL": f"http://127.0.0.1:{sim_port}/serve/api/v2",
        "MEMORIES_API_KEY": KEY,
        "STREAMLIFE_WEBHOOK_TOKEN": TOKEN,
    }


def test_the_dev_loop_end_to_end_with_faults_and_nothing_repeated(tmp_path: Path) -> None:
    sim_port, understand_port = free_port(), free_port()
    env = dev_environment(tmp_path, sim_port)

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return streamlife(*args, cwd=tmp_path, **env)

    with running("serve", "--port", "0", cwd=tmp_path, env=env) as serve:
        webhook_port = serve.wait_for(r"webhooks at http://127\.0\.0\.1:(\d+)/<token hidden>; recovered")[1]
        webhook = f"http://127.0.0.1:{webhook_port}/{TOKEN}"
        # Seed 4 of the `all` preset: the start's own callback comes before its answer, and every
        # fault of the stream, the stop and the deliveries is on, often.
        sim_args = ("sim", "serve", "--webhook", webhook, "--port", str(sim_port), "--faults", "all",
                    "--understand-port", str(understand_port))  # fmt: skip
        with running(*sim_args, "--seed", "4", "--speed", "5", cwd=tmp_path, env=env) as sim:
            said = sim.wait_for(r"memories\.ai simulated at (\S+) \(it takes the key in MEMORIES_API_KEY\)")
            assert said[1] == env["MEMORIES_BASE_URL"]
            assert TOKEN not in "".join(sim.seen)  # the webhook is shown with its token hidden
            sim.wait_for(r"faults all \(seed 4\), mode segments, speed 5")

            started = json_of(command("start", "audio", "rtmp://example.invalid/live", "--provider",
                                      "assemblyai", "--json"))  # fmt: skip
            assert started["state"] == "running", started
            assert started["store"] == env["STREAMLIFE_STORE"]
            task_id = started["task_id"]

            unfinished = json_of(command("status", "--json"))
            assert [row["task_id"] for row in unfinished] == [task_id]

            stopped = json_of(command("stop", task_id, "--wait", "60", "--json"))
            assert stopped["terminal"], stopped
            assert json_of(command("status", "--json")) == []
            everything = json_of(command("status", "--all", "--json"))
            assert [(row["task_id"], row["terminal"]) for row in everything] == [(task_id, True)]

            assert sim.terminate() == 0
            summary = sim.wait_for(r"(\d+) stream started, (\d+) still billing")
            assert (summary[1], summary[2]) == ("1", "0")  # the simulator bills nothing after
            taken = sim.wait_for(r"(\d+) callbacks delivered, 0 failed attempts")  # serve took each one
            assert int(taken[1]) > 0
            # Its URLs, once each, on stdout: the API's first, then Live Video Understanding's host.
            assert sim.printed() == f"{env['MEMORIES_BASE_URL']}\nhttp://127.0.0.1:{understand_port}\n"
        assert serve.terminate() == 0
        serve.wait_for(r"leaving 0 unfinished tasks in")


def test_sim_serve_leaves_on_sigterm_or_sigint_naming_the_streams_that_still_bill(tmp_path: Path) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        sim_port = free_port()
        env = dev_environment(tmp_path, sim_port)
        del env["MEMORIES_API_KEY"]  # the simulator takes its own key then
        nobody = f"http://127.0.0.1:{free_port()}/{TOKEN}"
        with running("sim", "serve", "--webhook", nobody, "--port", str(sim_port), "--speed", "20",
                     "--understand-port", "0", cwd=tmp_path, env=env) as sim:  # fmt: skip
            sim.wait_for(r"\(it takes the key sk-mai-simulated\)")
            started = streamlife(
                "start", "video", "rtmp://example.invalid/live", "--json", cwd=tmp_path,
                **env, MEMORIES_API_KEY="sk-mai-simulated",
            )  # fmt: skip
            task_id = json_of(started)["task_id"]
            # Nobody listens at the webhook: said once, not for every callback.
            sim.wait_for(r"the webhook http://127\.0\.0\.1:\d+/<token hidden> failed \(ConnectionError\)")
            sim.process.send_signal(signum)
            assert sim.process.wait(timeout=30) == 0
            summary = sim.wait_for(r"1 stream started, 1 still billing .*; never stopped: (\S+)")
            assert summary[1] == task_id
            assert sum("failed (" in line for line in sim.seen) == 1
            assert "Traceback" not in "".join(sim.seen)


def test_sim_serve_redelivers_in_order_and_says_what_it_kept(tmp_path: Path) -> None:
    sim_port = free_port()
    env = dev_environment(tmp_path, sim_port)
    nobody = f"http://127.0.0.1:{free_port()}/{TOKEN}"
    args = ("sim", "serve", "--webhook", nobody, "--port", str(sim_port), "--speed", "50", "--redeliver",
            "--understand-port", "0")  # fmt: skip
    with running(*args, cwd=tmp_path, env=env) as sim:
        sim.wait_for(r", redelivered$")
        started = streamlife("start", "video", "rtmp://example.invalid/live", cwd=tmp_path, **env)
        assert started.returncode == 0, started.stderr
        sim.wait_for(r"failed \(ConnectionError\): callbacks kept, to send again")
        assert sim.terminate() == 0
        summary = sim.wait_for(r"0 callbacks delivered, (\d+) failed attempts? \((\d+) kept for redelivery")
        assert int(summary[2]) >= 1


def test_sim_serve_serves_understand_on_its_own_port_posting_results_to_each_starts_callback(
    tmp_path: Path,
) -> None:
    sim_port, understand_port = free_port(), free_port()
    env = dev_environment(tmp_path, sim_port)
    nobody = f"http://127.0.0.1:{free_port()}/{TOKEN}"  # the account's webhook: no product posts there
    gone = f"http://127.0.0.1:{free_port()}/task/k0/secret-sig"  # a start's callback nobody answers
    args = ("sim", "serve", "--webhook", nobody, "--port", str(sim_port), "--speed", "50",
            "--understand-port", str(understand_port))  # fmt: skip
    with scripted_server() as hooks, running(*args, cwd=tmp_path, env=env) as sim:
        hooks.then(*[Answer(200, {"ok": True})] * 500)
        said = sim.wait_for(r"Live Video Understanding at (\S+);")
        assert said[1] == f"http://127.0.0.1:{understand_port}"
        http = HttpTransport(KEY, base_url=env["MEMORIES_BASE_URL"], understand_url=said[1])
        body = {"url": "rtmp://example.invalid/live", "user_prompt": "Describe it"}
        heard = http.start(StreamKind.UNDERSTAND, {**body, "callback": hooks.url + "/task/k1/sig-1"})
        lost = http.start(StreamKind.UNDERSTAND, {**body, "callback": gone})
        sim.wait_for(
            r"the callback URL http://127\.0\.0\.1:\d+/task/k0/<token hidden> failed \(ConnectionError\)"
        )
        give_up = time.monotonic() + 15
        while not hooks.requests and time.monotonic() < give_up:
            time.sleep(0.05)
        assert http.stop(StreamKind.UNDERSTAND, heard.task_id).final
        assert http.stop(StreamKind.UNDERSTAND, lost.task_id).final
        http.close()
        assert sim.terminate() == 0
        sim.wait_for(r"2 streams started, 0 still billing")
    assert hooks.requests
    assert {(seen.path, seen.body["task_id"]) for seen in hooks.requests} == {
        ("/task/k1/sig-1", heard.task_id)
    }
    assert "secret-sig" not in "".join(sim.seen)  # a callback URL's last segment may be its secret


def test_sim_serve_refuses_a_bad_webhook_or_a_port_in_use(tmp_path: Path) -> None:
    bad = streamlife("sim", "serve", "--webhook", "ftp://127.0.0.1/x", cwd=tmp_path)
    assert bad.returncode == 2
    assert "--webhook" in bad.stderr
    missing = streamlife("sim", "serve", cwd=tmp_path)
    assert missing.returncode == 2
    assert "--webhook" in missing.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = streamlife("sim", "serve", "--webhook", "http://127.0.0.1:9/x", "--port", port, cwd=tmp_path)
        # The understand host's port, taken: the message names that one.
        other = streamlife("sim", "serve", "--webhook", "http://127.0.0.1:9/x", "--port", "0",
                           "--understand-port", port, cwd=tmp_path)  # fmt: skip
    assert busy.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert "Traceback" not in busy.stderr
    assert other.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}:" in other.stderr
    assert "Traceback" not in other.stderr


@pytest.fixture
def receiver() -> Iterator[tuple[str, Fleet, str]]:
    """A webhook receiver on loopback, with one running task: (its URL without the token, the
    Fleet, the task's task_id)."""
    clock = ManualClock(1_700_000_000.0)
    service = SimulatedService(clock=clock)
    with Fleet(SimTransport(service), clock=clock, policy=Policy(stop_concurrency=0)) as fleet:
        task = fleet.start("audio", audio_url="rtmp://example.invalid/live", provider="assemblyai")
        assert task.task_id is not None
        with serve_webhook(WebhookReceiver(fleet, token=TOKEN), "127.0.0.1", 0) as hook:
            port = hook.server.server_address[1]
            yield f"http://127.0.0.1:{port}/hook", fleet, task.task_id


def test_sim_serve_says_when_the_webhook_refuses_its_callbacks_for_want_of_the_token(
    tmp_path: Path, receiver: tuple[str, Fleet, str]
) -> None:
    url, _, _ = receiver  # the receiver's URL without its token
    sim_port = free_port()
    env = dev_environment(tmp_path, sim_port)
    args = (
        "sim",
        "serve",
        "--webhook",
        url,
        "--port",
        str(sim_port),
        "--speed",
        "50",
        "--understand-port",
        "0",
    )
    with running(*args, cwd=tmp_path, env=env) as sim:
        sim.wait_for(r"memories\.ai simulated at")
        started = streamlife("start", "video", "rtmp://example.invalid/live", cwd=tmp_path, **env)
        assert started.returncode == 0, started.stderr
        sim.wait_for(r"failed \(HTTP 401\): callbacks dropped.*does the URL end with the receiver's token\?")
        assert sim.terminate() == 0


def test_send_callback_posts_a_documented_callback_that_the_receiver_applies(
    tmp_path: Path, receiver: tuple[str, Fleet, str]
) -> None:
    url, fleet, task_id = receiver
    segment = streamlife(
        "send-callback", url, "--task", task_id, "--kind", "segment", "--index", "0", "--text", "hi there",
        cwd=tmp_path, STREAMLIFE_WEBHOOK_TOKEN=TOKEN,
    )  # fmt: skip
    assert segment.returncode == 0, segment.stderr
    assert segment.stdout.startswith("HTTP 200\n")
    assert json.loads(segment.stdout.splitlines()[1])["outcome"] == "applied"
    task = fleet.get(task_id)
    assert task is not None
    assert [part.text for part in task.transcript] == ["hi there"]

    turn = streamlife(
        "send-callback", url, "--task", task_id, "--kind", "segment", "--provider", "assemblyai",
        "--index", "1", "--text", "and then", cwd=tmp_path, STREAMLIFE_WEBHOOK_TOKEN=TOKEN,
    )  # fmt: skip
    assert turn.returncode == 0, turn.stderr
    assert json.loads(turn.stdout.splitlines()[1])["outcome"] == "applied"
    assert [part.text for part in task.transcript] == ["hi there", "and then"]

    # The token in the URL, as the console's webhook URL holds it, and no variable: the same.
    stopped = streamlife(
        "send-callback", f"{url}/{TOKEN}", "--task", task_id, "--kind", "stopped", "--json", cwd=tmp_path
    )
    assert stopped.returncode == 0, stopped.stderr
    answer = json.loads(stopped.stdout)
    assert answer["status"] == 200
    assert answer["sent"]["data"]["status"] == 14
    assert fleet.get(task_id).state.value == "stopped"  # type: ignore[union-attr]


def test_send_callback_with_a_wrong_token_shows_the_401_and_exits_1(
    tmp_path: Path, receiver: tuple[str, Fleet, str]
) -> None:
    url, fleet, task_id = receiver
    wrong = "not-the-token-but-long-enough"
    refused = streamlife(
        "send-callback", url, "--task", task_id, "--kind", "segment", "--token", wrong, cwd=tmp_path
    )
    assert refused.returncode == 1
    assert refused.stdout.startswith("HTTP 401\n")
    assert "answered HTTP 401" in refused.stderr
    assert wrong not in refused.stdout + refused.stderr
    task = fleet.get(task_id)
    assert task is not None
    assert list(task.transcript) == []
    unreachable = streamlife(
        "send-callback", f"http://127.0.0.1:{free_port()}/{TOKEN}", "--task", "t", "--kind", "stopped",
        cwd=tmp_path,
    )  # fmt: skip
    assert unreachable.returncode == 1
    assert "could not post to" in unreachable.stderr
    assert TOKEN not in unreachable.stderr  # the URL is shown with its token hidden


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("--kind", "ended", "--status", "14"), "--kind stopped"),
        (("--kind", "ended", "--status", "0"), "does not end a stream"),
        (("--kind", "stopped", "--status", "12"), "status is 14"),
        (("--kind", "stopped", "--text", "x"), "only with --kind segment"),
        (("--kind", "segment", "--stream", "video", "--text", "x"), "no transcript"),
        (("--kind", "segment", "--index", "-1"), "--index"),
        (("--kind", "whatever"), "--kind"),
        (("--kind", "stopped", "--provider", "assemblyai"), "--provider: only with --kind segment"),
        (("--kind", "segment", "--stream", "video", "--provider", "elevenlabs"), "of an audio stream"),
    ],
)
def test_send_callback_refuses_options_that_do_not_fit_the_callback(
    tmp_path: Path, args: tuple[str, ...], complaint: str
) -> None:
    result = streamlife("send-callback", "http://127.0.0.1:9/x", "--task", "t", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert complaint in result.stderr


def test_send_callback_dry_run_prints_the_documented_shapes(tmp_path: Path) -> None:
    def sent(*args: str) -> dict[str, object]:
        return dict(json_of(streamlife("send-callback", "http://127.0.0.1:9/x", "--task", "t1", *args,
                                       "--dry-run", cwd=tmp_path)))  # fmt: skip

    ended = sent("--kind", "ended", "--stream", "video", "--status", "16")
    assert ended == {
        "code": "200",
        "message": "SUCCESS",
        "task_id": "t1",
        "data": {"status": 16, "message": "Capacity Reached", "data": None, "token": None},
    }
    partial = sent("--kind", "segment", "--index", "2", "--partial", "--text", "hel")
    assert partial["data"] == {
        "segment_index": 2,
        "segment_start_time": "10.0",
        "segment_end_time": "15.0",
        "status": 0,
        "message": "partial",
        "transcript": {"text": "hel", "is_final": False},
    }
    committed = sent("--kind", "segment", "--provider", "elevenlabs", "--text", "hi")
    assert committed["data"] == {"message_type": "committed_transcript", "text": "hi"}
    turn = sent("--kind", "segment", "--provider", "assemblyai", "--index", "3", "--partial")
    assert turn["data"]["type"] == "Turn"  # type: ignore[index]
    assert (turn["data"]["turn_order"], turn["data"]["end_of_turn"]) == (3, False)  # type: ignore[index]
    moderation = sent("--kind", "segment", "--stream", "video", "--unsafe")
    assert moderation["data"]["data"]["content_moderation"]["has_unsafe_content"] is True  # type: ignore[index]


@pytest.mark.parametrize(
    ("command", "env", "complaint"),
    [
        (("status",), {"STREAMLIFE_STORE": "bogus"}, "STREAMLIFE_STORE='bogus' is not a store URL"),
        (("journal", "x"), {"STREAMLIFE_STORE": "  "}, "STREAMLIFE_STORE is set but empty"),
        (("deadletter", "list"), {"STREAMLIFE_STORE": "mysql:x"}, "STREAMLIFE_STORE='mysql:x'"),
        (("prune", "--older-than", "1d"), {"STREAMLIFE_STORE": "sqlite:"}, "STREAMLIFE_STORE"),
        (
            ("status",),
            {"STREAMLIFE_STORE": "sqlite:{tmp}/missing.db"},
            "STREAMLIFE_STORE sqlite:{tmp}/missing.db: there is no file",
        ),
        (
            ("start", "audio", "rtmp://x", "--provider", "assemblyai"),
            {"MEMORIES_BASE_URL": "ftp://example.invalid/api", "MEMORIES_API_KEY": KEY},
            "MEMORIES_BASE_URL='ftp://example.invalid/api' is not an http:// or https:// URL",
        ),
        (
            ("stop", "x"),
            {"MEMORIES_BASE_URL": "", "MEMORIES_API_KEY": KEY},
            "MEMORIES_BASE_URL is set but empty",
        ),
        (
            ("serve",),
            {"MEMORIES_BASE_URL": "127.0.0.1:8790", "MEMORIES_API_KEY": KEY}
            | {"STREAMLIFE_WEBHOOK_TOKEN": TOKEN},
            "MEMORIES_BASE_URL='127.0.0.1:8790'",
        ),
        (
            ("send-callback", "http://127.0.0.1:9/x", "--task", "t", "--kind", "stopped"),
            {"STREAMLIFE_WEBHOOK_TOKEN": " "},
            "STREAMLIFE_WEBHOOK_TOKEN is set but empty",
        ),
    ],
)  # fmt: skip
def test_a_variable_that_is_set_and_invalid_is_bad_usage_naming_it(
    tmp_path: Path, command: tuple[str, ...], env: dict[str, str], complaint: str
) -> None:
    filled = {name: value.replace("{tmp}", str(tmp_path)) for name, value in env.items()}
    result = streamlife(*command, cwd=tmp_path, **filled)
    assert result.returncode == 2, result.stderr
    assert complaint.replace("{tmp}", str(tmp_path)) in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # refused before a store was made


def test_an_option_given_wins_over_the_environment(tmp_path: Path) -> None:
    bad = {"STREAMLIFE_STORE": "bogus", "MEMORIES_BASE_URL": "nonsense"}
    listed = streamlife("status", "--store", "memory:", "--json", cwd=tmp_path, **bad)
    assert json_of(listed) == []
    # With --sim URL (start and stop) the API's URL is the simulator's: the variable is not read.
    done = streamlife("stop", "x", "--sim", "http://127.0.0.1:9", "--store", "memory:", cwd=tmp_path, **bad)
    assert done.returncode == 1  # got past the environment, to a store that holds no such task
    assert "holds no task" in done.stderr
    api = streamlife("start", "audio", "rtmp://x", "--provider", "assemblyai", "--api-url", "ftp://x",
                     cwd=tmp_path, MEMORIES_API_KEY=KEY)  # fmt: skip
    assert api.returncode == 2
    assert "--api-url 'ftp://x' is not an http:// or https:// URL" in api.stderr


def test_serve_takes_faults_mode_and_seed_only_with_sim(tmp_path: Path) -> None:
    result = streamlife("serve", "--faults", "all", "--mode", "passthrough", "--seed", "0", cwd=tmp_path,
                        MEMORIES_API_KEY=KEY, STREAMLIFE_WEBHOOK_TOKEN=TOKEN)  # fmt: skip
    assert result.returncode == 2
    assert "--faults, --mode, --seed: only with --sim" in result.stderr


def test_serve_sim_runs_its_simulator_with_the_faults_asked_for(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'tasks.db'}"
    # Seed 31 of the `all` preset: the first start is answered 402, insufficient balance.
    args = ("serve", "--sim", "--faults", "all", "--seed", "31", "--mode", "passthrough", "--port", "0")
    with running(*args, "--store", store, cwd=tmp_path, env={}) as serve:
        sim = serve.wait_for(r"simulator API at (\S+) \(faults all;")[1]
        refused = streamlife("start", "video", "rtmp://example.invalid/live", "--sim", sim, "--store", store,
                             cwd=tmp_path)  # fmt: skip
        assert refused.returncode == 1
        assert "Insufficient balance" in refused.stderr
        assert serve.terminate() == 0


@pytest.mark.parametrize(
    ("command", "code", "said"),
    [
        (("deadletter", "list", "--store", "memory:"), 0, "no dead letters"),
        (("sim", "serve", "--webhook", "ftp://x"), 2, "--webhook 'ftp://x' is not"),  # after parsing
        (
            ("send-callback", "http://127.0.0.1:9/x", "--task", "t", "--kind", "stopped", "--dry-run"),
            0,
            '"t"',
        ),
    ],
)
def test_log_options_follow_a_commands_action_too(
    tmp_path: Path, command: tuple[str, ...], code: int, said: str
) -> None:
    result = streamlife(*command, "--log-level", "debug", "--log-format", "json", cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert said in result.stdout + result.stderr


@given(
    host=st.sampled_from(["127.0.0.1", "localhost:8080", "user:pw@example.invalid", "[::1]:5000"]),
    prefix=st.lists(st.text(alphabet="abcdefghij-_", min_size=1, max_size=6), max_size=3),
    token=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=16),
    slash=st.sampled_from(["", "/", "//"]),
    query=st.sampled_from(["", "?token=QUERY-SECRET-VALUE"]),
)
def test_a_webhook_url_is_never_shown_with_what_the_receiver_reads_as_its_token(
    host: str, prefix: list[str], token: str, slash: str, query: str
) -> None:
    url = f"http://{host}/{'/'.join([*prefix, token])}{slash}{query}"
    shown = mask_webhook(url)
    assert token not in shown
    assert "QUERY-SECRET-VALUE" not in shown
    assert ":pw@" not in shown
    assert shown.startswith("http://")
