"""What `streamlife sim serve` says when a receiver answers 401: a hint that fits the URL refused."""

from __future__ import annotations

import pytest

from streamlife import CallbackUrls, Fleet
from streamlife.cli.simulator import _Reporting
from streamlife.protocol import understand_result
from streamlife.sim import Delivery, SimTransport, SimulatedService
from streamlife.webhook import WebhookReceiver, serve_webhook

TOKEN = "the-receivers-token-0123456789"
OTHER = "another-token-not-the-receivers"
RESULT = understand_result("t-1", "a door opens", "2026-12-05T10:00:00Z")


def refused_hint(url: str, callback: str | None, capsys: pytest.CaptureFixture[str]) -> str:
    poster = _Reporting(url, redeliver=False)
    try:
        assert poster.deliver(Delivery(at=0.0, task_id="t-1", payload=RESULT, callback=callback)) is False
    finally:
        poster.close()
    return capsys.readouterr().err


def test_a_task_url_signed_with_another_token_is_told_to_check_the_start_s_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fleet = Fleet(SimTransport(SimulatedService()))
    with serve_webhook(WebhookReceiver(fleet, token=TOKEN)) as hook:
        signed_elsewhere = CallbackUrls(hook.url, token=OTHER).url_for("a" * 32)
        said = refused_hint(f"{hook.url}/{TOKEN}", signed_elsewhere, capsys)
    assert "failed (HTTP 401)" in said
    assert "a task's own URL: were its start and the receiver given the same token?" in said
    assert "does the URL end with the receiver's token" not in said
    assert signed_elsewhere.rsplit("/", 1)[1] not in said  # the signature stays hidden


def test_the_webhook_refused_is_told_to_check_its_token(capsys: pytest.CaptureFixture[str]) -> None:
    fleet = Fleet(SimTransport(SimulatedService()))
    with serve_webhook(WebhookReceiver(fleet, token=TOKEN)) as hook:
        said = refused_hint(f"{hook.url}/{OTHER}", None, capsys)
    assert "does the URL end with the receiver's token?" in said
    assert OTHER not in said
