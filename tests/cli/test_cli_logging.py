"""The command line's own logging: ``--log-level`` and ``--log-format`` before or after the command."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli_commands import streamlife


def test_log_options_after_the_command_override_those_before_it(tmp_path: Path) -> None:
    args = ("simulate", "--streams", "3", "--minutes", "1", "--json", "--seed", "1")
    quiet = streamlife(*args, cwd=tmp_path)
    told = streamlife(
        "--log-level", "error", *args, "--log-level", "info", "--log-format", "json", cwd=tmp_path
    )
    assert quiet.returncode == told.returncode == 0, told.stderr
    assert quiet.stderr == ""  # errors only, by default, and the run had none
    events = [json.loads(line) for line in told.stderr.splitlines()]
    assert events, told.stderr
    assert {event["level"] for event in events} <= {"info", "warning", "error"}
    assert "streamlife.transition" in {event["event"] for event in events}
    assert json.loads(told.stdout)["streams_billing_after_settle"] == 0  # stdout stays the report


def test_an_unknown_log_format_is_refused_as_bad_usage(tmp_path: Path) -> None:
    result = streamlife("status", "--log-format", "xml", cwd=tmp_path)
    assert result.returncode == 2
    assert "--log-format" in result.stderr
