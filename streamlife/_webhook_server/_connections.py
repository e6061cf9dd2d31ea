"""The server's open connections: their phases, their deadlines, and which one to evict.

Every connection has one deadline for its whole request, head and body: ``request_timeout``
seconds from its accept, not per read. A client that sends nothing, or a byte a second, is answered
408 and closed when it passes. A request with a worker has no deadline there: the sink's own
timeouts (the store's) bound it.

At most ``max_connections`` connections are open, and never more than half the descriptors the
process may open (the soft RLIMIT_NOFILE), so the store, the transport and the rest of the process
keep theirs. When the cap is reached, each accept evicts the oldest connection that has not yet
delivered a complete request. Under a flood of idle sockets that answers a real callback soonest:
a callback writes its request as soon as it connects, so it is read within a turn of the loop and
is not the oldest incomplete connection when the next one arrives; the idle sockets ahead of it
are. The alternative, to stop accepting until a slot frees, would leave the callback in the
kernel's backlog behind the flood until the idle sockets' deadlines ran out. A connection is not
evicted in its first ``EVICTION_GRACE`` seconds, so a burst of callbacks does not evict its own
members before their requests are read; while every slot is that young, or holds a complete
request (the workers are busy), the loop stops polling the listening socket, and the kernel's
backlog holds newcomers until a slot frees.

Evicting is bounded by the grace: at most ``max_connections`` connections every ``EVICTION_GRACE``
seconds. A flood faster than that fills the kernel's backlog, and a callback waits its turn in
it; a proxy in front, with its own connection limits, is the remedy (see the README).

A connection that was answered a refusal and is reading what the client still sends (draining,
see ``LINGER``) is the first evicted for a newcomer, at once: its answer has gone.
"""

from __future__ import annotations

import contextlib
import enum
import selectors
import socket
import sys
from dataclasses import dataclass, field
from typing import Final

from ._request import Head

if sys.platform != "win32":
    import resource

# Seconds a new connection has to send its request before it may be evicted: more than the minimum
# retransmission timeout (200 ms on Linux), so a callback whose first segment was lost survives.
EVICTION_GRACE: Final = 0.5


class Phase(enum.Enum):
    HEAD = "reading the request's head"
    BODY = "reading the request's body"
    APPLYING = "with a worker"
    WRITING = "writing the answer"
    DRAINING = "reading what the client still sends after a refusal"


@dataclass(eq=False)
class Connection:
    sock: socket.socket
    accepted: float
    deadline: float
    phase: Phase = Phase.HEAD
    inbox: bytearray = field(default_factory=bytearray)
    head: Head | None = None
    outbox: bytes = b""
    closed: bool = False

    @property
    def consumed(self) -> bool:
        """Whether everything the client sent was read: the connection can close without a reset."""
        head = self.head
        return head is not None and head.length is not None and len(self.inbox) == head.size + head.length


class ConnectionTable:
    """The open connections, each in ``selector`` unless a worker has it, at most ``capacity``."""

    def __init__(self, selector: selectors.BaseSelector, capacity: int) -> None:
        self.selector = selector
        self.capacity = capacity
        self.next_expiry = float("inf")  # no deadline passes before it
        self._open: dict[int, Connection] = {}
        self._incomplete: dict[int, Connection] = {}  # in the order they were accepted
        self._draining: dict[int, Connection] = {}  # answered refusals reading what is left

    def __len__(self) -> int:
        return len(self._open)

    @property
    def full(self) -> bool:
        return len(self._open) >= self.capacity

    def connections(self) -> list[Connection]:
        """The open connections, in the order they were accepted."""
        return list(self._open.values())

    def admit(self, sock: socket.socket, now: float, deadline: float) -> None:
        """Watch a newly accepted socket for its request until ``deadline``."""
        connection = Connection(sock, accepted=now, deadline=deadline)
        try:
            self.selector.register(sock, selectors.EVENT_READ, connection)
        except OSError:  # the selector could not take it (out of memory): as if accept had failed
            sock.close()
            return
        self._open[sock.fileno()] = connection
        self._incomplete[sock.fileno()] = connection
        self.extend(connection, deadline)

    def hand_to_worker(self, connection: Connection) -> None:
        """The connection's request is complete: no deadline and no eviction while a worker has it."""
        del self._incomplete[connection.sock.fileno()]
        connection.phase = Phase.APPLYING
        self.selector.unregister(connection.sock)  # a client's early close must not wake the loop

    def write(self, connection: Connection, deadline: float) -> None:
        """The connection has an answer to write, until ``deadline``."""
        self.extend(connection, deadline)
        if connection.phase is Phase.APPLYING:
            self.selector.register(connection.sock, selectors.EVENT_WRITE, connection)
        else:
            self._incomplete.pop(connection.sock.fileno(), None)
            self.selector.modify(connection.sock, selectors.EVENT_WRITE, connection)
        connection.phase = Phase.WRITING

    def drain(self, connection: Connection, deadline: float) -> None:
        """The connection's answer has gone: read what the client still sends, until ``deadline``."""
        connection.phase = Phase.DRAINING
        self._draining[connection.sock.fileno()] = connection
        self.extend(connection, deadline)
        self.selector.modify(connection.sock, selectors.EVENT_READ, connection)

    def extend(self, connection: Connection, deadline: float) -> None:
        connection.deadline = deadline
        self.next_expiry = min(self.next_expiry, deadline)

    def close(self, connection: Connection) -> None:
        if connection.closed:
            return
        connection.closed = True
        descriptor = connection.sock.fileno()
        with contextlib.suppress(KeyError):  # a connection with a worker is not in the selector
            self.selector.unregister(connection.sock)
        self._open.pop(descriptor, None)
        self._incomplete.pop(descriptor, None)
        self._draining.pop(descriptor, None)
        connection.sock.close()

    def expired(self, now: float) -> list[Connection]:
        """The connections past their deadlines, none with a worker; ``next_expiry`` then counts
        only the others (a caller that gives one a new deadline tells ``extend``)."""
        if now < self.next_expiry:
            return []
        self.next_expiry = float("inf")
        past: list[Connection] = []
        for connection in self.connections():
            if connection.phase is Phase.APPLYING:
                continue
            if connection.deadline > now:
                self.next_expiry = min(self.next_expiry, connection.deadline)
            else:
                past.append(connection)
        return past

    def room(self, now: float) -> bool:
        """Whether a newcomer can be taken in: a free slot, or one to evict."""
        return not self.full or now >= self.evictable_at()

    def evictable_at(self) -> float:
        """When a connection may be evicted: at once, one answered and draining (its answer has
        gone: only the client's leftovers are owed a read); else the oldest incomplete one, once it
        has had ``EVICTION_GRACE`` to send its request, so a burst of newcomers does not evict
        each other unread."""
        if self._draining:
            return float("-inf")
        oldest = next(iter(self._incomplete.values()), None)
        return float("inf") if oldest is None else oldest.accepted + EVICTION_GRACE

    def evict_oldest(self) -> bool:
        """Close the oldest draining connection, else the oldest that has not delivered a complete
        request, if there is one."""
        oldest = next(iter(self._draining.values()), None) or next(iter(self._incomplete.values()), None)
        if oldest is None:
            return False
        self.close(oldest)
        return True


def descriptor_budget() -> int:
    """The most connections the server may hold: half the descriptors the process may open."""
    if sys.platform == "win32":
        return sys.maxsize
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return sys.maxsize
    return max(1, soft // 2)
