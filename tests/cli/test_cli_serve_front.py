"""What serve's receiver awaits under uvicorn: on SQLite, workers apply callbacks on their loops
while there are no more of them than cores; more workers sharing the file apply them in the
callbacks lane, off the loop, so that one waiting for another's commit goes on reading requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamlife import OutcomeKind
from streamlife.cli import serve
from streamlife.cli.serve import _async_front
from streamlife.store import SqliteStore
from tests.aio.test_aio_on_loop import Watched, applied, bodies, made


@pytest.mark.parametrize(("workers", "on_loop"), [(1, True), (2, True), (3, False), (4, False)])
def test_serve_applies_sqlite_callbacks_on_its_loop_while_each_worker_has_a_core(
    workers: int, on_loop: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve, "_cores", lambda: 2)
    fleet, ids = made(SqliteStore(str(tmp_path / "tasks.db")))
    watched = Watched(fleet)
    front = _async_front(fleet, workers=workers)
    outcomes, loop_thread = asyncio.run(applied(front, bodies(ids, 5)))
    assert [outcome.kind for outcome in outcomes] == [OutcomeKind.APPLIED] * 10
    assert (set(watched.threads) == {loop_thread}) is on_loop
    assert (loop_thread in watched.threads) is on_loop
    front.close()
    fleet.close()
