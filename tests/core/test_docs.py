"""The README's code runs as written, and `make demo`'s walk tells the stories it claims to."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


def test_every_python_block_in_the_readme_runs_as_written() -> None:
    blocks = python_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    outputs = []
    for block in blocks:
        result = subprocess.run(
            [sys.executable, "-c", block], cwd=REPO, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""  # streamlife prints nothing the example did not ask for
        outputs.append(result.stdout)
    fleet, cost, journal, user_tests, webhook, from_asyncio, by_hand, simulator, video, understand = outputs
    assert user_tests == ""  # it only defines tests: test_testing_plugin.py runs them under pytest
    assert "task 1: stopping -> stopped on stopped" in fleet
    assert "still billing: []" in fleet
    terminal = r"'(ended|failed|stopped)': \d+"
    assert re.search(rf"^tasks: \{{{terminal}(, {terminal})*\}}$", fleet, re.MULTILINE)
    assert cost.splitlines() == [
        "stopped max_duration 60.0",
        "stopped max_duration 20.0",
        "billed: 80.0 s, about $0.0148; still billing: []",
    ]
    recovered, tail, billing = journal.splitlines()
    assert recovered.startswith("['running', 'running', 'running'] 'segment 0 of")
    assert tail == "['segment', 'segment', 'segment']"  # callbacks after the restart, journaled
    assert billing == "still billing: []"
    assert webhook.splitlines() == ["{'outcome': 'applied'}", "401", "Hi."]  # and no log line
    assert re.findall(r"^segment (\d+): ", from_asyncio, re.MULTILINE)[:2] == ["0", "1"]
    assert from_asyncio.splitlines()[-1] == "stopped still billing: []"
    assert "Hello there." in by_hand
    assert "13 callbacks; the last: stopped" in simulator
    assert "billed: 30.0 s; still billing: []" in simulator
    assert video.splitlines() == [
        "segment 3: unsafe content in https://storage.sim.invalid/e3e70682-c209-4cac-a29f-6fbed82c07cd/3.mp4",
        "stopped after 4 segments, 40 frames checked",
    ]
    assert understand.splitlines() == [
        "uncertain None",  # the start answer was lost
        "running 2 results",  # named by its first result, on its own URL
        "{'audio': 'stopped', 'video': 'stopped', 'understand': 'stopped'} []",
    ]


def test_the_walk_ends_each_story_where_the_lifecycle_says() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamlife", "walk"], cwd=REPO, capture_output=True, text=True, check=True
    )
    endings = re.findall(r"^(\S.*?):\n(?:.*\n)*?  => (\w+);", result.stdout, flags=re.MULTILINE)
    assert dict(endings) == {
        "clean stop": "stopped",
        "stop while starting": "stopped",
        "lost start answer": "failed",
        "service ends it": "ended",
        "capacity refused": "failed",
        "started twice": "starting",
    }
    assert "final_callback_missing" in result.stdout
    assert "refused with LocalTransitionError" in result.stdout
    assert result.stderr == ""  # log events stay below the CLI's default level
