"""streamlife prints nothing by itself: its events follow the application's logging.

Each case runs in a fresh interpreter, as an application would start: nothing configured, then the
standard library's logging configured, then structlog. The run makes events at every level: a
segment per callback (debug), moves (info), a reaped orphan (warning), a failing hook (an error
with its traceback).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

RUN = """
from streamlife import Fleet, ManualClock, Policy
from streamlife.protocol import segment_callback
from streamlife.sim import SimTransport, SimulatedService

clock = ManualClock()
service = SimulatedService(clock=clock)
fleet = Fleet(SimTransport(service), clock=clock, policy=Policy(stop_concurrency=0, park_ttl=5))
service.on_callback(fleet.handle_callback)

@fleet.on_transition
def fails(task, event):
    raise RuntimeError("a hook that fails")

task = fleet.start("audio", audio_url="rtmp://example.invalid/live", provider="assemblyai")
fleet.handle_callback(segment_callback("a-stream-nobody-started", 0))  # parked, then an orphan
service.advance(20)
clock.advance(10)
fleet.tick()
fleet.stop_all()
service.advance(1)
print("done", task.state.value)
"""


def run(setup: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", setup + RUN], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    )


def test_an_application_that_configures_no_logging_sees_nothing_of_streamlife() -> None:
    result = run("")
    assert result.stdout == "done stopped\n"
    assert result.stderr == ""


def test_events_follow_the_standard_library_logging_the_application_configured() -> None:
    form = "%(name)s %(levelname)s %(message)s"
    result = run(f"import logging\nlogging.basicConfig(level=logging.WARNING, format={form!r})\n")
    assert result.stdout == "done stopped\n"
    lines = result.stderr.splitlines()
    assert any(line.startswith("streamlife WARNING streamlife.orphan ") for line in lines), lines
    assert any(line.startswith("streamlife ERROR streamlife.hook_failed ") for line in lines), lines
    assert "RuntimeError: a hook that fails" in result.stderr  # the traceback, with the error
    assert not any(" DEBUG " in line or " INFO " in line for line in lines)  # below the level set


def test_the_record_carries_the_event_and_its_keys() -> None:
    setup = (
        "import logging, json\n"
        "class Keys(logging.Handler):\n"
        "    def emit(self, record):\n"
        "        print(json.dumps({'event': record.streamlife_event, 'keys': sorted(record.streamlife)}))\n"
        "logging.getLogger('streamlife').addHandler(Keys(logging.INFO))\n"
        "logging.getLogger('streamlife').setLevel(logging.INFO)\n"
    )
    result = run(setup)
    records = [json.loads(line) for line in result.stdout.splitlines()[:-1]]
    moves = [record for record in records if record["event"] == "streamlife.transition"]
    assert moves
    assert {"task", "task_id", "trigger", "from", "to", "outcome"} <= set(moves[0]["keys"])
    assert result.stdout.splitlines()[-1] == "done stopped"


def test_an_application_that_configured_structlog_gets_structured_events_through_it() -> None:
    setup = (
        "import logging, sys, structlog\n"
        "structlog.configure(processors=[structlog.processors.add_log_level,"
        " structlog.processors.JSONRenderer()],"
        " wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),"
        " logger_factory=structlog.PrintLoggerFactory(sys.stderr))\n"
    )
    result = run(setup)
    assert result.stdout == "done stopped\n"
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    names = {event["event"] for event in events}
    assert {"streamlife.transition", "streamlife.orphan", "streamlife.hook_failed"} <= names
    assert all(event["level"] != "debug" for event in events)


def test_the_level_check_follows_structlog_as_configured_now() -> None:
    """What a hot path asks before it builds an event: the wrapper class configured at the time,
    as the application changes it, then the standard library's levels once structlog is reset."""
    script = (
        "import logging, structlog\n"
        "from streamlife._logging import enabled_for\n"
        "asked = []\n"
        "for level in (logging.WARNING, logging.DEBUG):\n"
        "    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))\n"
        "    asked.append(enabled_for(logging.INFO))\n"
        "structlog.reset_defaults()\n"
        "logging.getLogger('streamlife').setLevel(logging.ERROR)\n"
        "asked.append(enabled_for(logging.INFO))\n"
        "print(asked)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout == "[False, True, False]\n"


def test_the_debug_check_follows_structlog_as_configured_now() -> None:
    """``debug_enabled``, asked for every segment, reads the answer kept for the configured wrapper
    class: asked again, and after the application configures another, it answers as configured now."""
    script = (
        "import logging, structlog\n"
        "from streamlife._logging import debug_enabled\n"
        "asked = []\n"
        "for level in (logging.INFO, logging.DEBUG, logging.WARNING):\n"
        "    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))\n"
        "    asked += [debug_enabled(), debug_enabled()]\n"
        "structlog.reset_defaults()\n"
        "logging.getLogger('streamlife').setLevel(logging.DEBUG)\n"
        "asked.append(debug_enabled())\n"
        "logging.getLogger('streamlife').setLevel(logging.INFO)\n"
        "asked.append(debug_enabled())\n"
        "print(asked)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout == "[False, False, True, True, False, False, True, False]\n"
