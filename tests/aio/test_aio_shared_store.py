"""AsyncFleet's ``stop(wait=)`` on a store another process shares (a SQLite file, PostgreSQL): the
status 14 reaches that process, and the wait on the loop sees it through the store, as
``Fleet.stop(wait=)`` does."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import pytest
import requests

from streamlife import ManualClock, Policy, StreamTask, TaskState
from streamlife.aio import AsyncFleet
from streamlife.protocol import status_callback
from streamlife.sim import SimTransport, SimulatedService, serve_http
from streamlife.store import open_store
from tests.fleet_worker import Worker

KEY = "sk-mai-aio-shared"
URL = "rtmp://sim.invalid/live"
REAL_SECONDS = 30.0  # a wait no step of this test comes near, unless something hangs


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'shared.db'}"
    dsn: str = request.getfixturevalue("pg_store_dsn")
    return f"postgres:{dsn}"


@pytest.mark.parametrize("how", ["stop", "stop_all"])
def test_a_stop_awaited_here_settles_when_another_process_hears_its_status_14(
    store_url: str, how: str, tmp_path: Path
) -> None:
    """``stop``: one task, its row read; ``stop_all``: more tasks than are read one by one, so the
    wait scans the unfinished rows."""
    service = SimulatedService(clock=ManualClock(1_700_000_000.0), api_key=KEY)
    token = secrets.token_urlsafe(24)
    store = open_store(store_url)
    fleet = AsyncFleet(
        SimTransport(service, KEY), policy=Policy(seed=0, stop_concurrency=2, shared_poll=0.1), store=store
    )
    count = 1 if how == "stop" else 40

    async def run(other: Worker) -> tuple[list[StreamTask], list[StreamTask]]:
        async with fleet:
            tasks = [await fleet.start("audio", audio_url=URL, provider="assemblyai") for _ in range(count)]
            assert {task.state for task in tasks} == {TaskState.RUNNING}
            waiting: asyncio.Task[StreamTask | list[StreamTask]] = asyncio.create_task(
                fleet.stop(tasks[0], wait=REAL_SECONDS)
                if how == "stop"
                else fleet.stop_all(wait=REAL_SECONDS)
            )
            async with asyncio.timeout(REAL_SECONDS):
                while not all(task.stop_acknowledged for task in tasks):
                    await asyncio.sleep(0.005)
            for task in tasks:  # each status 14 reaches the other process only
                answer = await asyncio.to_thread(
                    requests.post,
                    f"{other.url}/hooks/{token}",
                    data=json.dumps(status_callback(task.task_id or "", 14)),
                    headers={"Content-Type": "application/json"},
                    timeout=REAL_SECONDS,
                )
                assert answer.status_code == 200, answer.text
                assert answer.json()["outcome"] == "applied"
            returned = await waiting
            return tasks, returned if isinstance(returned, list) else []

    try:
        with serve_http(service) as face:
            other = Worker.spawn(
                store=store_url, sim=face.base_url, api_key=KEY, token=token, log_path=tmp_path / "other.log"
            )
            try:
                tasks, unsettled = asyncio.run(run(other))
                other.quit()
            finally:
                other.close()
    finally:
        store.close()
    assert unsettled == []
    assert {task.state for task in tasks} == {TaskState.STOPPED}
    assert service.billing() == []
