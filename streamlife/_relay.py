"""Relay: the workers of ``serve --workers N`` hand each callback they receive to the worker that
applies its task's callbacks (its owner). On SQLite, one worker (worker 0) owns every task, and
takes no connection itself; on PostgreSQL, each worker owns the tasks whose key or task_id hashes
to it (``owner_of``).

Why: a task's callbacks that reach its copy in every worker in turn make each copy replay what the
others journaled before it applies its own (docs/scaling.md), and workers that write the same rows
wait for each other's locks. Through its owner, each task's callbacks go to one copy, never behind.
On SQLite, which lets one process write at a time, workers that each applied what they received
also took turns at one lock with a share of the load each (a smaller batch per commit, more
commits): there, one owner applies every callback, in batches as large as the whole load makes
them, while the other workers parse HTTP, check the token and pass callbacks on. An owner applies
the callbacks that one read brings together, on its relay loop (``RelayOwner``).

Nothing rests on the relay for its correctness: every worker's Fleet can apply any callback
through the shared store. A worker that cannot reach an owner (not started yet, starting again,
gone) applies the callback itself, and tries that owner again after ``RECONNECT`` seconds. A
callback whose answer was lost with its connection is applied again by the worker that received
it: if the owner had journaled it, the replay of the owner's entries makes it a duplicate.

Frames, each way, on one connection from a worker to an owner: a header (``!IIH``: the length of
what follows the header, a sequence number, the key's length) then the key (a task URL's, UTF-8;
empty for none) then the body, as received. The answer: ``!IIB`` (the length after the header, the
sequence number it answers, what it holds) then JSON: an outcome (``[kind, reason]``) or the error
the owner raised (``CallbackError``, ``MisroutedCallbackError``, ``StoreError``,
``ParkingFullError``: the receiver answers each as it would have here; anything else, a 500).

The sockets live in a directory only this user may enter (``tempfile.mkdtemp``): an owner applies
what arrives without a token, which the worker that received the callback checked.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from streamlife._events import Outcome, OutcomeKind
from streamlife._logging import get_logger
from streamlife.errors import CallbackError, MisroutedCallbackError, ParkingFullError, StoreError
from streamlife.store import TaskRow

_log = get_logger()

RECONNECT: Final = 1.0  # seconds between two tries at an owner that could not be reached
# Callbacks an owner applies with one commit, at most, before it answers them: the worker that
# passed them on then has answers to send while the owner applies the rest of what it read, where
# answering a whole read at once left each side idle while the other worked (bench/RESULTS.md,
# ``server``).
BATCH: Final = 16

_ASKED: Final = struct.Struct("!IIH")  # length after the header, sequence number, key's length
_ANSWERED: Final = struct.Struct("!IIB")  # length after the header, sequence number, what it holds
_MAX_FRAME: Final = 64 * 1024 * 1024  # bytes: a frame longer than this is a broken peer's

# What an answer holds.
_OUTCOME, _CALLBACK, _MISROUTED, _STORE, _PARKING, _OTHER = range(6)

# The shared outcomes: each comes back as the same object, which the receiver answers from its own
# table (``outcome is Outcome.APPLIED``). Their answers are made once, and read back without JSON:
# nearly every callback's outcome is one of them.
_SHARED_OUTCOMES: Final = (
    Outcome.APPLIED,
    Outcome.DUPLICATE,
    Outcome.LATE,
    Outcome.PARKED,
    Outcome.FOREIGN,
    Outcome.PARKED_ALREADY,
)

# The owner's way to apply callbacks that came together: (bodies, keys) -> each one's outcome or
# error, in order (``streamlife._together.apply_together`` on the owner's Fleet).
ApplyTogether = Callable[[list[bytes], list[str | None]], Sequence[Outcome | BaseException]]


class RelayLost(ConnectionError):
    """The connection to the owner ended before it answered."""


class RelayFailed(RuntimeError):
    """The owner raised something no receiver answers for: the server answers 500."""


# -- the answers ------------------------------------------------------------------------------------
def encode_answer(result: Outcome | BaseException) -> tuple[int, bytes]:
    """What an answer holds, and its JSON."""
    shared = _SHARED_TEXT.get(id(result))
    if shared is not None and shared[0] is result:
        return _OUTCOME, shared[1]
    if isinstance(result, Outcome):
        return _OUTCOME, _dumps([result.kind.value, result.reason])
    if isinstance(result, MisroutedCallbackError):
        return _MISROUTED, _dumps([result.problem])
    if isinstance(result, CallbackError):
        return _CALLBACK, _dumps([result.field, result.problem])
    if isinstance(result, StoreError):
        return _STORE, _dumps([str(result)])
    if isinstance(result, ParkingFullError):
        return _PARKING, _dumps([result.task_id, result.limit])
    return _OTHER, _dumps([type(result).__name__])


def decode_answer(holds: int, text: bytes) -> Outcome | BaseException:
    """The outcome, or the error to raise, that an answer says."""
    if holds == _OUTCOME:
        shared = _SHARED_BY_TEXT.get(text)
        if shared is not None:
            return shared
    values = json.loads(text)
    if holds == _OUTCOME:
        return Outcome(OutcomeKind(values[0]), values[1])
    if holds == _MISROUTED:
        return MisroutedCallbackError(values[0])
    if holds == _CALLBACK:
        return CallbackError(values[0], values[1])
    if holds == _STORE:
        return StoreError(values[0])
    if holds == _PARKING:
        return ParkingFullError(values[0], values[1])
    return RelayFailed(f"the owner worker raised {values[0]}")


def _dumps(values: list[Any]) -> bytes:
    return json.dumps(values, separators=(",", ":")).encode()


# By identity (the outcome is kept beside its text, so its id is not reused), as the receiver keeps
# its answers: cheaper than hashing an outcome for every callback.
_SHARED_TEXT: Final = {
    id(outcome): (outcome, _dumps([outcome.kind.value, outcome.reason])) for outcome in _SHARED_OUTCOMES
}
_SHARED_BY_TEXT: Final = {text: outcome for outcome, text in _SHARED_TEXT.values()}


class _Frames:
    """Frames out of a byte stream: ``feed`` the bytes as they come, take each whole frame."""

    def __init__(self, header: struct.Struct) -> None:
        self._header = header
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[tuple[int, ...], bytes]]:
        """Each whole frame now in: its header's fields, and what follows the header."""
        buffer = self._buffer
        buffer += data
        header, size = self._header, self._header.size
        frames = []
        start = 0
        while len(buffer) - start >= size:
            fields = header.unpack_from(buffer, start)
            length = fields[0]
            if length > _MAX_FRAME:
                raise ValueError(f"a relay frame of {length} bytes")
            end = start + size + length
            if len(buffer) < end:
                break
            frames.append((fields, bytes(buffer[start + size : end])))
            start = end
        del buffer[:start]
        return frames


# -- the owner --------------------------------------------------------------------------------------
class RelayOwner:
    """The owner's side: a Unix socket server on the running event loop, applying the callbacks
    that arrive with ``apply`` and answering them.

    The callbacks that one read of a connection brings are applied together (``BATCH`` at a time),
    on the loop itself, and each batch is answered in one write. The loop is the owner's alone
    (``relaying``), so applying on it blocks nothing else: the frames that come meanwhile wait in
    the socket, and the next read takes them all. A hand-over to a thread would cost each callback
    two wake-ups and the interpreter's lock passed back and forth, for no gain: one process writes
    a SQLite file one transaction at a time anyway."""

    def __init__(self, path: str, apply: ApplyTogether) -> None:
        self.path = path
        self._apply = apply
        self._server: asyncio.AbstractServer | None = None
        self._sides: set[_OwnerSide] = set()

    async def start(self) -> None:
        # (A socket file left by an owner that died is removed first: asyncio's, and uvloop's, way.)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _OwnerSide(self._apply, self._sides), self.path)

    async def stop(self) -> None:
        """Take no more callbacks: the workers apply what is still in flight themselves."""
        self.close()

    def close(self) -> None:
        """``stop``, from the loop's own thread without awaiting (from ``apply``, say)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for side in list(self._sides):
            side.close()


class _Side(asyncio.Protocol):
    """One end of a connection between a worker and the owner: frames in, frames out."""

    def __init__(self, header: struct.Struct) -> None:
        self._frames = _Frames(header)
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._frames.feed(data)
        except ValueError as error:
            _log.warning("streamlife.relay_broken", error=str(error))
            self.close()
            return
        if frames:
            self._take_all(frames)

    def _take_all(self, frames: list[tuple[tuple[int, ...], bytes]]) -> None:
        raise NotImplementedError


class _OwnerSide(_Side):
    """One worker's connection, at the owner."""

    def __init__(self, apply: ApplyTogether, sides: set[_OwnerSide]) -> None:
        super().__init__(_ASKED)
        self._apply = apply
        self._sides = sides

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._sides.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # (answers still being made are dropped: the worker applies again)
        self._sides.discard(self)

    def _take_all(self, frames: list[tuple[tuple[int, ...], bytes]]) -> None:
        for start in range(0, len(frames), BATCH):
            self._apply_and_answer(frames[start : start + BATCH])

    def _apply_and_answer(self, frames: list[tuple[tuple[int, ...], bytes]]) -> None:
        bodies: list[bytes] = []
        keys: list[str | None] = []
        for (_, _, key_length), rest in frames:
            keys.append(rest[:key_length].decode() or None)
            bodies.append(rest[key_length:])
        try:
            results = self._apply(bodies, keys)
        except Exception as error:  # (each of them hears it, as a callback applied alone would)
            results = [error] * len(frames)
        answers = []
        for ((_, number, _), _), result in zip(frames, results, strict=True):
            holds, text = encode_answer(result)
            answers.append(_ANSWERED.pack(len(text), number, holds) + text)
        transport = self._transport
        if transport is not None and not transport.is_closing():  # (else the workers apply them)
            transport.write(b"".join(answers))


@contextmanager
def relaying(owner: RelayOwner) -> Iterator[None]:
    """Run ``owner`` on an event loop of its own (uvloop's where installed), on a thread, until the
    block ends. Raises what starting it raised (a socket that cannot be bound)."""
    loop = _new_loop()
    started: concurrent.futures.Future[None] = concurrent.futures.Future()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(owner.start())
        except BaseException as error:
            started.set_exception(error)
            return
        started.set_result(None)
        loop.run_forever()
        loop.run_until_complete(owner.stop())

    thread = threading.Thread(target=run, name="streamlife-relay", daemon=True)
    thread.start()
    try:
        started.result()
        yield
    finally:
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


# -- a worker that passes callbacks on -------------------------------------------------------------
# The first plain string value of a "task_id" in a body: where a callback's task is told, whatever
# the callback's shape. Only where the callback goes depends on it (a wrong or missing one costs a
# catch-up, never a callback): the owner reads the body whole. Bounded, so that no body makes the
# search slow.
_TASK_ID: Final = re.compile(rb'"task_id"\s*:\s*"([^"\\]{1,256})"')


def owner_of(payload: bytes, key: str | None, owners: int) -> int | None:
    """Which of ``owners`` applies this callback: by its task's key (a task URL's) or the task_id
    the body names, the same for every callback of a task; None when the body names none."""
    if owners == 1:
        return 0
    if key:
        named = key.encode()
    else:
        found = _TASK_ID.search(payload)
        if found is None:
            return None
        named = found[1]
    return _share(named, owners)


def owns_row(row: TaskRow, me: int, owners: int) -> bool:
    """Whether owner ``me`` of ``owners`` owns the stored task ``row``, and so takes it back at its
    start and runs its timers: by its task_id, as the callbacks to the account's webhook are passed
    on; by its key while it has none. A task whose callbacks come by its task URL may be timed by
    another owner than the one that applies them: then each of its deadlines catches up first."""
    named = row.task_id if row.task_id is not None else row.key
    return _share(named.encode(), owners) == me


def owns_task_id(task_id: str, me: int, owners: int) -> bool:
    """Whether owner ``me`` of ``owners`` owns ``task_id``: the callbacks to the account's webhook
    that name it are passed on to ``me``, so ``me`` parks them while no task holds it, and takes
    them back at its start."""
    return _share(task_id.encode(), owners) == me


def _share(named: bytes, owners: int) -> int:
    # CRC-32, the same in every process (``hash`` is salted per process).
    return zlib.crc32(named) % owners


class RelaySink:
    """An ``AsyncCallbackSink`` that hands each callback to its owner (``owner_of``), one of the
    Unix sockets ``paths``, and returns the owner's outcome. It applies the callback with
    ``local`` (this worker's ``AsyncFleet``) when this worker is the owner (``me``), when the body
    names no task, when the owner cannot be reached, or when its connection ends before it
    answers."""

    def __init__(self, paths: Sequence[str], local: Any, *, me: int | None = None) -> None:
        self.paths = tuple(paths)
        self.me = me
        self._local = local
        self._links = [_Link(path) for path in self.paths]

    @property
    def fleet(self) -> Any:
        """The local Fleet, for the receiver's blocking faces."""
        return self._local.fleet

    async def handle_callback(self, payload: bytes, *, key: str | None = None) -> Outcome:
        owner = owner_of(payload, key, len(self._links))
        side = None if owner is None or owner == self.me else await self._links[owner].side()
        if side is not None:
            try:
                result = await side.ask(payload, key)
            except RelayLost:
                pass  # (applied here instead: see the module's docstring)
            else:
                if isinstance(result, BaseException):
                    raise result
                return result
        return await self._local.handle_callback(payload, key=key)  # type: ignore[no-any-return]

    def close(self) -> None:
        for link in self._links:
            link.close()


class _Link:
    """A worker's way to one owner: its connection, made when first needed and again after it
    ends, and not tried again within ``RECONNECT`` seconds of a failed try."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._side: _WorkerSide | None = None
        self._connecting: asyncio.Future[_WorkerSide | None] | None = None
        self._retry_at = 0.0

    async def side(self) -> _WorkerSide | None:
        """The connection, or None where the owner cannot be reached now."""
        side = self._side
        if side is not None and not side.lost:
            return side
        if self._connecting is not None:
            return await asyncio.shield(self._connecting)
        if time.monotonic() < self._retry_at:
            return None
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        side = None
        try:
            _, side = await loop.create_unix_connection(_WorkerSide, self.path)
        except OSError as error:
            self._retry_at = time.monotonic() + RECONNECT
            _log.debug("streamlife.relay_unreachable", error=str(error))
        finally:
            self._side = side
            self._connecting.set_result(side)
            self._connecting = None
        return side

    def close(self) -> None:
        if self._side is not None:
            self._side.close()
            self._side = None


class _WorkerSide(_Side):
    """A worker's connection to the owner. The callbacks it passes on in one turn of the event loop
    (those that came in together) go out in one write, at the start of the next: one system call,
    not one a callback."""

    def __init__(self) -> None:
        super().__init__(_ANSWERED)
        self._waiting: dict[int, asyncio.Future[Outcome | BaseException]] = {}
        self._next = 0
        self._out: list[bytes] = []

    @property
    def lost(self) -> bool:
        return self._transport is None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._out.clear()
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(RelayLost("the owner worker's connection ended"))

    def _take_all(self, frames: list[tuple[tuple[int, ...], bytes]]) -> None:
        waiting = self._waiting
        for (_, number, holds), rest in frames:
            future = waiting.pop(number, None)
            if future is not None and not future.done():
                future.set_result(decode_answer(holds, rest))

    async def ask(self, body: bytes, key: str | None) -> Outcome | BaseException:
        if self._transport is None:
            raise RelayLost("the owner worker's connection ended")
        number = self._next
        self._next = (number + 1) & 0xFFFFFFFF
        future: asyncio.Future[Outcome | BaseException] = self._loop.create_future()
        self._waiting[number] = future
        encoded = b"" if key is None else key.encode()
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(_ASKED.pack(len(encoded) + len(body), number, len(encoded)) + encoded + body)
        return await future

    def _flush(self) -> None:
        if self._transport is not None and self._out:
            self._transport.write(b"".join(self._out))
        self._out.clear()
