"""The relay between serve's workers (``streamlife._relay``), on real Unix sockets: what the owner
made of a callback comes back to the worker that received it, outcomes and errors alike, each to
its own caller; a worker applies the callback itself when the owner cannot be reached, or when the
owner's connection ends before it answers; a broken frame ends the connection."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import struct
import tempfile
import threading
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamlife import Outcome
from streamlife import _relay as relay
from streamlife._relay import (
    RelayFailed,
    RelayOwner,
    RelaySink,
    decode_answer,
    encode_answer,
    owner_of,
    owns_row,
    owns_task_id,
    relaying,
)
from streamlife.errors import CallbackError, MisroutedCallbackError, ParkingFullError, StoreError
from streamlife.protocol import segment_callback
from streamlife.store import TaskRow


@pytest.fixture
def path() -> Iterator[str]:
    """A socket path in a directory of its own (short: a Unix socket's path has ~100 bytes)."""
    directory = tempfile.mkdtemp(prefix="relay-")
    try:
        yield os.path.join(directory, "relay.sock")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class Local:
    """A worker's own AsyncFleet: what it applied itself."""

    def __init__(self) -> None:
        self.applied: list[tuple[bytes, str | None]] = []
        self.fleet = object()

    async def handle_callback(self, payload: bytes, *, key: str | None = None) -> Outcome:
        self.applied.append((payload, key))
        return Outcome.rejected("applied locally")


class Owner:
    """The owner's Fleet, applying each read's callbacks together (``ApplyTogether``), its answers
    chosen by the body."""

    def __init__(self) -> None:
        self.applied: list[tuple[bytes, str | None]] = []
        self.batches: list[int] = []  # how many callbacks each call applied
        self.then: Callable[[], None] = lambda: None  # run after each call (the owner going away, say)

    def apply(self, bodies: list[bytes], keys: list[str | None]) -> list[Outcome | BaseException]:
        self.applied += zip(bodies, keys, strict=True)
        self.batches.append(len(bodies))
        answers: dict[bytes, Outcome | BaseException] = {
            b"applied": Outcome.APPLIED,
            b"parked already": Outcome.PARKED_ALREADY,
            b"callback": CallbackError("data.segment_index", "not an integer"),
            b"misrouted": MisroutedCallbackError("names another stream"),
            b"store": StoreError("database is locked"),
            b"parking": ParkingFullError("task-9", "3 callbacks parked for this task_id"),
            b"bug": KeyError("oops"),
        }
        if b"raise" in bodies:
            raise KeyError("the whole batch")
        self.then()
        return [answers.get(body, Outcome.rejected(body.decode())) for body in bodies]


def run(test: Callable[..., Awaitable[None]], *args: Any) -> None:
    asyncio.run(asyncio.wait_for(test(*args), 30))


@asynccontextmanager
async def relayed(path: str, owner: Owner, local: Local) -> AsyncIterator[RelaySink]:
    """An owner listening at ``path``, and a worker's sink that passes callbacks to it."""
    server = RelayOwner(path, owner.apply)
    await server.start()
    sink = RelaySink([path], local)
    try:
        yield sink
    finally:
        sink.close()
        await server.stop()


def test_outcomes_come_back_as_the_owner_made_them(path: str) -> None:
    async def test() -> None:
        owner, local = Owner(), Local()
        async with relayed(path, owner, local) as sink:
            assert await sink.handle_callback(b"applied") is Outcome.APPLIED  # the shared value itself
            assert await sink.handle_callback(b"parked already") is Outcome.PARKED_ALREADY
            assert await sink.handle_callback(b"why", key="task-key-1") == Outcome.rejected("why")
        assert owner.applied == [(b"applied", None), (b"parked already", None), (b"why", "task-key-1")]
        assert local.applied == []

    run(test)


def test_errors_come_back_as_the_owner_raised_them(path: str) -> None:
    async def test() -> None:
        async with relayed(path, Owner(), Local()) as sink:
            with pytest.raises(CallbackError) as callback:
                await sink.handle_callback(b"callback")
            assert type(callback.value) is CallbackError
            assert (callback.value.field, callback.value.problem) == ("data.segment_index", "not an integer")
            with pytest.raises(MisroutedCallbackError, match="names another stream"):
                await sink.handle_callback(b"misrouted")
            with pytest.raises(StoreError, match="database is locked"):
                await sink.handle_callback(b"store")
            with pytest.raises(ParkingFullError) as parking:
                await sink.handle_callback(b"parking")
            assert parking.value.task_id == "task-9"
            assert parking.value.limit == "3 callbacks parked for this task_id"
            with pytest.raises(RelayFailed, match="KeyError"):
                await sink.handle_callback(b"bug")

    run(test)


def test_callbacks_in_flight_together_are_applied_together_and_each_answer_reaches_its_caller(
    path: str,
) -> None:
    """Many callbacks in flight at once on one connection: the owner applies those that come in
    one read in one call (one commit), in the order they were passed on."""

    async def test() -> None:
        owner = Owner()
        bodies = [f"callback #{n}".encode() for n in range(200)]
        async with relayed(path, owner, Local()) as sink:
            answers = await asyncio.gather(*(sink.handle_callback(body) for body in bodies))
        assert answers == [Outcome.rejected(body.decode()) for body in bodies]
        assert owner.applied == [(body, None) for body in bodies]
        assert sum(owner.batches) == len(bodies)
        assert max(owner.batches) > 1, owner.batches

    run(test)


def test_an_owner_answers_each_batch_before_it_applies_the_next(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker has the first batch's answers to send while the owner applies the rest of a read:
    here the owner holds its third batch until the worker has the second's answers."""
    monkeypatch.setattr(relay, "BATCH", 4)
    owner = Owner()
    answered = threading.Event()

    def hold_the_third_batch() -> None:
        if len(owner.batches) == 3 and not answered.wait(10):
            raise TimeoutError("the second batch was not answered while the third waited")

    owner.then = hold_the_third_batch
    with relaying(RelayOwner(path, owner.apply)):

        async def ask() -> list[Outcome]:
            sink = RelaySink([path], Local())
            try:
                assert await sink.handle_callback(b"connect") == Outcome.rejected("connect")  # batch 1
                asked = [asyncio.ensure_future(sink.handle_callback(b"#%d" % n)) for n in range(12)]
                await asyncio.gather(*asked[:4])
                answered.set()
                return await asyncio.gather(*asked)
            finally:
                sink.close()

        answers = asyncio.run(asyncio.wait_for(ask(), 30))
    assert answers == [Outcome.rejected(f"#{n}") for n in range(12)]
    assert owner.batches == [1, 4, 4, 4]


def test_an_apply_that_raises_answers_each_of_its_callbacks_with_the_error(path: str) -> None:
    async def test() -> None:
        owner = Owner()
        async with relayed(path, owner, Local()) as sink:
            assert await sink.handle_callback(b"before") == Outcome.rejected("before")  # (connected)
            asked = [sink.handle_callback(body) for body in (b"one", b"raise", b"two")]
            answers = await asyncio.gather(*asked, return_exceptions=True)
            assert await sink.handle_callback(b"after") == Outcome.rejected("after")  # still relaying
        assert owner.batches == [1, 3, 1]
        assert [type(answer) for answer in answers] == [RelayFailed] * 3
        assert all("KeyError" in str(answer) for answer in answers)

    run(test)


def test_an_unreachable_owner_leaves_the_callback_to_this_worker(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def test() -> None:
        local, owner = Local(), Owner()
        sink = RelaySink([path], local)
        assert await sink.handle_callback(b"first", key="k") == Outcome.rejected("applied locally")
        server = RelayOwner(path, owner.apply)
        await server.start()
        try:
            # Up until RECONNECT seconds after the failed try, the owner is not tried again.
            assert await sink.handle_callback(b"second") == Outcome.rejected("applied locally")
            assert local.applied == [(b"first", "k"), (b"second", None)]
            monkeypatch.setattr(relay, "RECONNECT", 0.0)
            sink._links[0]._retry_at = 0.0
            assert await sink.handle_callback(b"third") == Outcome.rejected("third")
            assert owner.applied == [(b"third", None)]
        finally:
            sink.close()
            await server.stop()

    run(test)


def test_a_connection_lost_before_the_answer_leaves_the_callback_to_this_worker(path: str) -> None:
    """The owner dies with callbacks in flight: the worker applies them itself (a callback the
    owner had journaled is then a duplicate, by the store)."""

    async def test() -> None:
        local, owner = Local(), Owner()
        server = RelayOwner(path, owner.apply)
        owner.then = server.close  # every connection closed mid-apply, as a killed owner's are
        await server.start()
        sink = RelaySink([path], local)
        try:
            assert await sink.handle_callback(b"in flight", key="k") == Outcome.rejected("applied locally")
            assert owner.applied == local.applied == [(b"in flight", "k")]
            # The connection is gone: the next callback goes to this worker too, not to a dead end.
            assert await sink.handle_callback(b"next") == Outcome.rejected("applied locally")
        finally:
            sink.close()

    run(test)


def test_a_frame_longer_than_any_callback_ends_the_connection(path: str) -> None:
    async def test() -> None:
        owner = Owner()
        server = RelayOwner(path, owner.apply)
        await server.start()
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(struct.pack("!IIH", 2**31, 1, 0))
            assert await reader.read() == b""  # closed, unanswered
            writer.close()
            assert owner.applied == []
        finally:
            await server.stop()

    run(test)


def test_the_relay_socket_is_not_a_tcp_port(path: str) -> None:
    """The owner takes callbacks without a token: it listens on a Unix socket only, at ``path``."""

    async def test() -> None:
        server = RelayOwner(path, Owner().apply)
        await server.start()
        try:
            assert Path(path).is_socket()
            probe = socket.socket(socket.AF_UNIX)
            probe.connect(path)
            probe.close()
        finally:
            await server.stop()

    run(test)


@given(
    st.one_of(
        st.builds(Outcome.rejected, st.text()),
        st.sampled_from([Outcome.APPLIED, Outcome.DUPLICATE, Outcome.LATE, Outcome.PARKED, Outcome.FOREIGN]),
        st.builds(CallbackError, st.none() | st.text(), st.text()),
        st.builds(MisroutedCallbackError, st.text()),
        st.builds(StoreError, st.text()),
        st.builds(ParkingFullError, st.text(), st.text()),
    )
)
def test_an_answer_says_what_was_made_of_the_callback(result: Outcome | Exception) -> None:
    back = decode_answer(*encode_answer(result))
    assert type(back) is type(result)
    if isinstance(result, Outcome):
        assert back == result
    else:
        assert str(back) == str(result)
        assert vars(back) == vars(result)


def test_relaying_runs_the_owner_on_a_loop_of_its_own_until_the_block_ends(path: str) -> None:
    owner = Owner()
    with relaying(RelayOwner(path, owner.apply)):
        # (The owner's loop is another thread's: this test's loop only asks.)
        async def ask() -> Outcome:
            sink = RelaySink([path], Local())
            try:
                return await sink.handle_callback(b"applied", key="k")
            finally:
                sink.close()

        assert asyncio.run(ask()) is Outcome.APPLIED
    assert owner.applied == [(b"applied", "k")]
    probe = socket.socket(socket.AF_UNIX)
    with pytest.raises(ConnectionRefusedError):  # nobody listens once the block has ended
        probe.connect(path)
    probe.close()


def test_an_owner_that_cannot_listen_says_why(tmp_path: Path) -> None:
    with (
        pytest.raises(FileNotFoundError),
        relaying(RelayOwner(str(tmp_path / "no" / "such" / "dir"), Owner().apply)),
    ):
        pass


def test_each_task_has_one_owner_whatever_its_callback_says() -> None:
    """Where a task's callbacks go: by the task_id a body names (wherever it names it first) or by
    a task URL's key; the same in every process (not Python's salted hash)."""
    segment = json.dumps({"task_id": "task-7", "data": {"segment_index": 3}}).encode()
    status = json.dumps({"code": "200", "data": {"status": 14}, "task_id": "task-7"}).encode()
    spaced = b'{"message": "ok", "task_id" :  "task-7"}'
    assert owner_of(segment, None, 4) == owner_of(status, None, 4) == owner_of(spaced, None, 4)
    assert owner_of(segment, None, 4) == zlib.crc32(b"task-7") % 4
    assert owner_of(segment, "key-1", 4) == zlib.crc32(b"key-1") % 4  # a task URL's key decides
    assert owner_of(b'{"code": 200}', None, 4) is None  # no task named: applied where it came
    assert owner_of(b"not json", None, 4) is None
    assert owner_of(b"not json", None, 1) == 0  # one owner takes everything
    owners = {owner_of(json.dumps({"task_id": f"t{n}"}).encode(), None, 3) for n in range(50)}
    assert owners == {0, 1, 2}


# Task ids and keys as the relay reads a body's task_id: printable ASCII without a quote or a
# backslash, at most 256 characters. (A body whose task_id holds a JSON escape goes to no owner: the
# worker that received it applies it.)
_NAMES = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'), min_size=1, max_size=256
)


@given(task_id=st.one_of(st.none(), _NAMES), key=_NAMES, owners=st.integers(1, 8))
def test_each_stored_task_is_taken_back_by_the_one_worker_its_callbacks_go_to(
    task_id: str | None, key: str, owners: int
) -> None:
    """One worker of any number owns a stored task: by its task_id, the worker that its callbacks
    to the account's webhook go to; by its key while it has none, as a task URL's go."""
    row = TaskRow(key, "audio", task_id, "running", 2, 0.0, 0.0, {})
    (owner,) = [me for me in range(owners) if owns_row(row, me, owners)]
    if task_id is None:
        assert owner == owner_of(b"{}", key, owners)
    else:
        assert owner == owner_of(json.dumps(segment_callback(task_id, 0)).encode(), None, owners)


@given(task_id=_NAMES, owners=st.integers(1, 8))
def test_each_parked_callback_is_taken_back_by_the_one_worker_it_goes_to(task_id: str, owners: int) -> None:
    """One worker of any number owns a task_id, and takes back the callbacks parked for it: the
    worker that the account webhook's callbacks naming it go to, which parked them."""
    (owner,) = [me for me in range(owners) if owns_task_id(task_id, me, owners)]
    assert owner == owner_of(json.dumps(segment_callback(task_id, 0)).encode(), None, owners)


def test_a_worker_applies_its_own_tasks_and_passes_the_others_on() -> None:
    """Three workers, each owning a share of the tasks: worker 1 applies its own share and passes
    each other callback to the worker that owns its task."""
    paths = [str(Path(tempfile.mkdtemp(prefix="relay-")) / f"relay-{n}.sock") for n in range(3)]

    async def test() -> None:
        owners = [Owner(), None, Owner()]
        servers = [RelayOwner(paths[n], owner.apply) for n, owner in enumerate(owners) if owner]
        for server in servers:
            await server.start()
        local = Local()
        sink = RelaySink(paths, local, me=1)
        bodies = [json.dumps({"task_id": f"task-{n}"}).encode() for n in range(30)]
        try:
            for body in bodies:
                await sink.handle_callback(body)
        finally:
            sink.close()
            for server in servers:
                await server.stop()
        for n, owner in enumerate(owners):
            mine = [(body, None) for body in bodies if owner_of(body, None, 3) == n]
            assert mine, n  # (each worker owns some of these tasks)
            assert (local if owner is None else owner).applied == mine

    try:
        run(test)
    finally:
        for path in paths:
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
