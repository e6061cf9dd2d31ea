"""An AsyncFleet on SQLite applies callbacks off the loop in one thread unless told otherwise, so that
those that queue up while it writes share its next commit. ``serve`` builds its receiver so."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from streamlife import OutcomeKind, Policy
from streamlife.aio import AsyncFleet
from streamlife.store import SqliteStore
from tests.aio.test_aio_on_loop import Watched, bodies, made


class Held(Watched):
    """Watched, and the first callback applied waits until ``release`` is set."""

    def __init__(self, fleet: Any) -> None:
        super().__init__(fleet)
        self.entered, self.release = threading.Event(), threading.Event()
        one, many = fleet.handle_callback, fleet.handle_callbacks

        def held(apply: Any) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                if not self.entered.is_set():
                    self.entered.set()
                    assert self.release.wait(10)
                return apply(*args, **kwargs)

            return call

        fleet.handle_callback, fleet.handle_callbacks = held(one), held(many)


def test_sqlite_callbacks_are_applied_off_the_loop_in_one_thread_that_batches(tmp_path: Path) -> None:
    fleet, ids = made(SqliteStore(str(tmp_path / "tasks.db")), tasks=4)
    watched = Held(fleet)
    front = AsyncFleet.from_fleet(fleet)
    first, rest = bodies(ids, 6)[:1], bodies(ids, 6)[1:]

    async def handed() -> tuple[list[Any], int]:
        applying = [asyncio.ensure_future(front.handle_callback(first[0]))]
        await asyncio.to_thread(watched.entered.wait, 10)  # the lane's thread is in the first
        applying += [asyncio.ensure_future(front.handle_callback(body)) for body in rest]
        for _ in range(20):  # each handed over (a thread of the lane that is free would take it)
            await asyncio.sleep(0.005)
        watched.release.set()
        return await asyncio.gather(*applying), threading.get_ident()

    outcomes, loop_thread = asyncio.run(handed())
    assert [outcome.kind for outcome in outcomes] == [OutcomeKind.APPLIED] * 24
    assert len(set(watched.threads)) == 1
    assert loop_thread not in watched.threads
    assert watched.batches == [1, 23]  # those that queued behind the first, in one commit
    for task in fleet.tasks():
        assert [segment.index for segment in task.transcript] == list(range(6))
    front.close()
    fleet.close()


def applied_by_others_while_the_first_is_held(front: AsyncFleet, watched: Held, ids: list[str]) -> None:
    """The first of 12 callbacks held in its thread; the other 11 must be applied meanwhile, by other
    threads of the lane, or this waits for ever (until ``release`` gives up)."""

    async def handed() -> list[Any]:
        first = asyncio.ensure_future(front.handle_callback(bodies(ids, 3)[0]))
        await asyncio.to_thread(watched.entered.wait, 10)
        outcomes = await asyncio.gather(*(front.handle_callback(body) for body in bodies(ids, 3)[1:]))
        watched.release.set()
        return [await first, *outcomes]

    outcomes = asyncio.run(handed())
    assert [outcome.kind for outcome in outcomes] == [OutcomeKind.APPLIED] * 12
    assert len(set(watched.threads)) > 1


def test_callback_threads_given_on_sqlite_are_kept(tmp_path: Path) -> None:
    fleet, ids = made(SqliteStore(str(tmp_path / "tasks.db")), tasks=4)
    watched = Held(fleet)
    front = AsyncFleet.from_fleet(fleet, callback_threads=4)
    applied_by_others_while_the_first_is_held(front, watched, ids)
    front.close()
    fleet.close()


def test_sqlite_keeps_more_threads_where_an_inferred_end_s_stop_goes_out_inline(tmp_path: Path) -> None:
    """With ``stop_concurrency=0`` a stop request goes out on the thread applying its callback: one
    thread would hold every other callback of the process up for the request's time."""
    fleet, ids = made(SqliteStore(str(tmp_path / "tasks.db")), policy=Policy(stop_concurrency=0), tasks=4)
    watched = Held(fleet)
    front = AsyncFleet.from_fleet(fleet)
    applied_by_others_while_the_first_is_held(front, watched, ids)
    front.close()
    fleet.close()
