"""A pytest plugin: simulate memories.ai, faults included, in your own tests.

Installed with streamlife (a ``pytest11`` entry point), so its fixtures are there in any project
that depends on streamlife:

``memories_sim``
    A ``MemoriesSim``: the simulated service on a virtual clock, its in-process transport, and
    ``advance(seconds)``, which lets virtual time pass one second at a time, delivering callbacks
    and ticking every Fleet made from it. Faults are off unless the test asks, with a marker:
    ``@pytest.mark.memories(faults="all", seed=3)`` (a preset name or a ``Faults``).
``fleet``
    A ``Fleet`` on ``memories_sim``: its callbacks wired, its deadlines on the virtual clock, its
    stops sent on the test's thread (``stop_concurrency=0``), so a run replays exactly. Mark the
    test ``@pytest.mark.memories(policy=Policy(...))`` for other timeouts (keep
    ``stop_concurrency=0`` in it to keep the replay exact).

``memories_sim.billing()`` names the streams still billing: assert it is empty after ``stop_all``
and ``settle()`` to prove your code leaves nothing running.

Over loopback HTTP: mark the test ``@pytest.mark.memories(http=True)`` and the ``fleet`` fixture
sends through ``HttpTransport`` to the simulator's two hosts (audio and video; Live Video
Understanding), its callbacks posted to a ``WebhookReceiver`` on a real socket; or make one with
``memories_sim.http_fleet()``. ``memories_sim.serve()`` serves the simulator for a client of your
own (``base_url``, ``understand_url``).

A Live Video Understanding start needs no ``callback=``: every Fleet made here has
``callback_urls`` (``CallbackUrls``), so ``fleet.start("understand", url=..., user_prompt=...)``
gives the task its own signed URL, and its results come routed to it by key, as in production: a
result names a task whose start answer was lost. Over HTTP the URL points at the Fleet's receiver,
which verifies it; in-process it points nowhere and the simulator's delivery is routed by the key
it carries, verified the same way. ``callback=memories_sim.callback_url`` still works for a test
that gives its own URL: the account-wide webhook over HTTP, a placeholder in-process; its results
reach every Fleet unrouted, by task_id. A callback a Fleet refuses in-process (as its receiver
would answer 400 or 403: a routed result for a task another Fleet holds, on a store of its own) is
kept in ``memories_sim.refused``, not raised into ``advance``. The task URLs are signed with
``memories_sim.token``, the webhook token of every Fleet made here: a ``WebhookReceiver`` of your
own mounted on such a Fleet must take it (a receiver refuses a Fleet whose task URLs it cannot
verify), or mark the test ``@pytest.mark.memories(token=<your receiver's token>)``.

More Fleets on one simulator play more processes: ``memories_sim.fleet(store=...)`` makes one on
a store of your choice (give two Fleets one store to play two processes on one database), and
``transport=`` wraps the simulator's transport to fail in ways the simulator's faults do not.
``memories_sim.crash(fleet)`` kills a Fleet's process; a new Fleet on its store plays the restart.
``MemoriesSim.new(faults=..., seed=..., clock=..., token=...)`` makes a simulator outside a fixture (in a
hypothesis state machine, or several in one test); ``close()`` it when done.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Final

import pytest

from ._clock import ManualClock
from ._events import Outcome
from ._policy import Policy
from ._simulate import FAULT_PRESETS
from ._task_urls import MIN_TOKEN_LENGTH, CallbackUrls, posted_route
from .errors import CallbackError
from .fleet import Fleet
from .sim import Faults, SimHttpServer, SimMode, SimTransport, SimulatedService, serve_http
from .sim._records import Delivery
from .sim.service import DEFAULT_API_KEY
from .store import Store
from .transport import HttpTransport, RetryPolicy, Transport
from .webhook import WebhookReceiver, serve_webhook

_MARKER = "memories"
_EPOCH = 1_700_000_000.0
# What an understand start may give as its callback in-process: its results reach every Fleet
# made here, unrouted, so nothing reads it.
_IN_PROCESS_CALLBACK: Final = "https://hooks.sim.invalid/understand"
# Where in-process Fleets' task URLs point: nothing listens there, the delivery's key is read instead.
_IN_PROCESS_TASKS: Final = "https://hooks.sim.invalid/tasks"


@dataclass
class MemoriesSim:
    service: SimulatedService
    transport: SimTransport
    clock: ManualClock
    fleets: list[Fleet] = field(default_factory=list)  # the Fleets ``advance`` ticks
    _made: list[Fleet] = field(default_factory=list, repr=False)  # crashed ones too: ``close`` closes all
    served: SimHttpServer | None = None  # the simulator over loopback HTTP, once ``serve`` was called
    callback_url: str = _IN_PROCESS_CALLBACK  # a ``callback=`` for a test that gives its own
    # In-process: (task_id, why) of each callback a Fleet refused, as its receiver would answer it.
    refused: list[tuple[str, str]] = field(default_factory=list)
    _stack: ExitStack = field(default_factory=ExitStack, repr=False)  # what ``serve`` and HTTP Fleets hold
    _receivers: dict[int, ExitStack] = field(default_factory=dict, repr=False)  # an HTTP Fleet's, by id
    _sinks: dict[int, _InProcess] = field(default_factory=dict, repr=False)  # an in-process Fleet's, by id
    # The webhook token of every Fleet made here, which signs its task URLs: one deployment, whose
    # processes verify each other's URLs. A WebhookReceiver mounted on such a Fleet takes this token.
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)

    @classmethod
    def new(
        cls,
        faults: str | Faults = "none",
        *,
        seed: int = 0,
        max_streams: int = 10_000,
        mode: SimMode = "segments",
        clock: ManualClock | None = None,
        token: str | None = None,
    ) -> MemoriesSim:
        """A simulator with ``faults`` (a preset's name, seeded from ``seed``, or a ``Faults``), at
        most ``max_streams`` live streams, ``mode``'s messages (``"segments"`` or ``"passthrough"``),
        on ``clock`` (a new ``ManualClock`` at 1_700_000_000 by default). ``token``: the webhook
        token its Fleets sign task URLs with, and their receivers take (random by default): give
        your own receiver's, to mount it on a Fleet made here. The fixtures make theirs with this;
        call ``close()`` on one made by hand."""
        clock = ManualClock(_EPOCH) if clock is None else clock
        service = SimulatedService(
            clock=clock, faults=_faults(faults, seed), max_streams=max_streams, mode=mode
        )
        if token is None:
            return cls(service, SimTransport(service), clock)
        CallbackUrls(_IN_PROCESS_TASKS, token=token)  # (refuses a token too short, as a receiver does)
        return cls(service, SimTransport(service), clock, token=token)

    def fleet(
        self, policy: Policy | None = None, *, store: Store | None = None, transport: Transport | None = None
    ) -> Fleet:
        """A Fleet on this simulator: callbacks wired, ticked by ``advance``, stops sent on the
        calling thread unless ``policy`` says otherwise. ``store`` is its store (a MemoryStore of its
        own by default; the caller closes one it passes). ``transport`` is what it sends requests
        through: ``self.transport`` by default, or a wrapper of it that fails on purpose. Its
        ``callback_urls`` give each understand start with no ``callback=`` its own URL; what the
        simulator sends there reaches the Fleet routed by the task's key."""
        chosen = policy or Policy(seed=0, stop_concurrency=0)
        made = Fleet(
            self.transport if transport is None else transport,
            clock=self.clock,
            policy=chosen,
            store=store,
            callback_urls=CallbackUrls(_IN_PROCESS_TASKS, token=self.token),
        )
        sink = self._sinks[id(made)] = _InProcess(made, self.token.encode(), self.refused)
        self.service.on_delivery(sink)
        self.fleets.append(made)
        self._made.append(made)
        return made

    def serve(self, *, redeliver: bool = False) -> SimHttpServer:
        """Serve this simulator over loopback HTTP until ``close()``: audio and video at
        ``base_url``, Live Video Understanding at ``understand_url``, both taking the simulator's
        key (``"sk-mai-simulated"``). Callbacks are posted to ``served.poster.url`` (the account's
        webhook: set it, or make an ``http_fleet``) and to each understand start's callback URL;
        with ``redeliver``, one refused is sent again (``WebhookPoster``). Time still passes only
        by ``advance``. Serves once: a second call returns the same server."""
        if self.served is None:
            self.served = self._stack.enter_context(serve_http(self.service, redeliver=redeliver))
        return self.served

    def http_fleet(self, policy: Policy | None = None, *, store: Store | None = None) -> Fleet:
        """A Fleet on this simulator over loopback HTTP: ``HttpTransport`` to both of its hosts
        (``serve``), its callbacks taken by a ``WebhookReceiver`` of its own on a real socket,
        ticked by ``advance``, stops sent on the calling thread unless ``policy`` says otherwise.

        The account has one webhook: the simulator posts audio and video callbacks to the newest
        HTTP Fleet's receiver, and ``callback_url`` becomes that receiver's URL, for an understand
        start that gives its own ``callback=``. One that leaves it out is given its task's own URL
        at this Fleet's receiver (``callback_urls``), which verifies it and routes its results."""
        server = self.serve()
        receiver = ExitStack()
        transport = HttpTransport(
            DEFAULT_API_KEY,
            base_url=server.base_url,
            understand_url=server.understand_url,
            timeout=(2.0, 5.0),
            retry=RetryPolicy(attempts=1, deadline=10.0),  # the Fleet retries, on the virtual clock
        )
        receiver.callback(transport.close)
        token = self.token
        # The receiver takes its sink before it listens, and the Fleet needs the receiver's address
        # for its task URLs: the sink hands callbacks to the Fleet made once it listens.
        late = _LateSink()
        hook = receiver.enter_context(serve_webhook(WebhookReceiver(late, token=token)))
        urls = CallbackUrls(f"{hook.url}/hooks", token=token)
        made = late.fleet = Fleet(
            transport,
            clock=self.clock,
            policy=policy or Policy(seed=0, stop_concurrency=0),
            store=store,
            callback_urls=urls,
        )
        self._stack.push(receiver)
        self._receivers[id(made)] = receiver
        server.poster.url = self.callback_url = f"{hook.url}/{token}"
        self.fleets.append(made)
        self._made.append(made)
        return made

    def crash(self, fleet: Fleet) -> None:
        """Kill the process of ``fleet`` (one this simulator made, not crashed yet): it hears no more
        callbacks (an HTTP Fleet's receiver stops listening) and ``advance`` ticks it no more.
        Nothing is closed or flushed, as in a crash; a new ``fleet(store=...)`` plays the restart."""
        receiver = self._receivers.pop(id(fleet), None)
        if receiver is None:
            self.service.off_delivery(self._sinks.pop(id(fleet)))
        else:
            receiver.close()
        self.fleets.remove(fleet)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass, a second at a time: callbacks, then every Fleet's tick."""
        end = self.clock.now() + seconds
        while self.clock.now() < end:
            self.service.run_until(min(end, self.clock.now() + 1.0))
            for fleet in self.fleets:
                fleet.tick()

    def settle(self, limit: float = 600.0) -> None:
        """Advance until every Fleet's tasks are terminal, nothing is parked and nothing bills (or
        ``limit`` virtual seconds pass: then the caller's assertions say what is left)."""
        deadline = self.clock.now() + limit
        while self.clock.now() < deadline and not self.settled():
            self.advance(1.0)

    def settled(self) -> bool:
        """Whether every Fleet's tasks are terminal, nothing is parked and nothing bills."""
        for fleet in self.fleets:
            stats = fleet.stats()
            if stats.parked or any(not task.terminal for task in fleet.tasks()):
                return False
        return not self.service.billing()

    def billing(self) -> list[str]:
        """The task_ids of the streams the simulated service still bills."""
        return self.service.billing()

    def close(self) -> None:
        """Close every Fleet made here, crashed ones included (their stop workers). Stores passed
        to ``fleet`` are the caller's to close."""
        for fleet in self._made:
            fleet.close()
        self._stack.close()  # then the receivers, the transports and the simulator's servers


class _InProcess:
    """An in-process Fleet's receiver: each delivery as a ``WebhookReceiver`` would take it at the
    URL the simulator addresses. A task URL is verified with the token and routed by its key; any
    other URL (the webhook, a ``callback=`` of the test's own) goes by task_id. A refusal is kept
    in ``refused``, as the receiver's 400, 401 or 403 would answer it, so the simulator's other
    deliveries still go out."""

    def __init__(self, fleet: Fleet, token: bytes, refused: list[tuple[str, str]]) -> None:
        self.fleet, self._token, self.refused = fleet, token, refused

    def __repr__(self) -> str:
        return f"_InProcess({self.fleet!r})"

    def __call__(self, delivery: Delivery) -> None:
        key, refusal = posted_route(self._token, delivery.callback)
        if refusal is not None:
            self.refused.append((delivery.task_id, refusal))
            return
        try:
            self.fleet.handle_callback(delivery.payload, key=key)
        except CallbackError as error:
            self.refused.append((delivery.task_id, str(error)))


class _LateSink:
    """An HTTP Fleet's receiver's sink, handed the Fleet once the receiver listens (see
    ``http_fleet``): it passes each callback on, with its key, as the Fleet takes it."""

    def __init__(self) -> None:
        self.fleet: Fleet | None = None

    def __repr__(self) -> str:
        return f"_LateSink({self.fleet!r})"

    def _made(self) -> Fleet:
        if self.fleet is None:
            raise RuntimeError("no callback is posted before the Fleet is made")
        return self.fleet

    def handle_callback(self, payload: bytes | str | Mapping[str, Any], *, key: str | None = None) -> Outcome:
        return self._made().handle_callback(payload, key=key)

    def handle_callbacks(
        self, payloads: Iterable[bytes | str | Mapping[str, Any]], *, keys: Sequence[str | None] | None = None
    ) -> list[Outcome | CallbackError]:
        return self._made().handle_callbacks(payloads, keys=keys)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(faults='none'|'default'|'all'|Faults, seed=0, max_streams=10000, policy=Policy,"
        " http=False, token=<your receiver's>):"
        " how streamlife's memories_sim and fleet fixtures behave",
    )


@pytest.fixture
def memories_sim(request: pytest.FixtureRequest) -> Iterator[MemoriesSim]:
    """memories.ai's stream API in-process, on a virtual clock (see the module's docstring)."""
    options = _options(request)
    try:
        faults = _faults(options.get("faults", "none"), options.get("seed", 0))
    except ValueError:
        raise pytest.UsageError(
            f"@pytest.mark.{_MARKER}(faults=...) takes {', '.join(FAULT_PRESETS)} or a Faults"
        ) from None
    token = options.get("token")
    if token is not None and (not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH):
        raise pytest.UsageError(
            f"@pytest.mark.{_MARKER}(token=...) takes a string of {MIN_TOKEN_LENGTH} characters or more"
        )
    sim = MemoriesSim.new(faults, max_streams=options.get("max_streams", 10_000), token=token)
    yield sim
    sim.close()


@pytest.fixture
def fleet(memories_sim: MemoriesSim, request: pytest.FixtureRequest) -> Fleet:
    """A Fleet wired to ``memories_sim`` (see the module's docstring)."""
    policy = _options(request).get("policy")
    if policy is not None and not isinstance(policy, Policy):
        raise pytest.UsageError(f"@pytest.mark.{_MARKER}(policy=...) takes a Policy")
    if _options(request).get("http", False):
        return memories_sim.http_fleet(policy)
    return memories_sim.fleet(policy)


def _faults(faults: object, seed: int) -> Faults:
    if isinstance(faults, Faults):
        return faults
    if not isinstance(faults, str) or faults not in FAULT_PRESETS:
        raise ValueError(f"faults must be one of {', '.join(FAULT_PRESETS)}, or a Faults, got {faults!r}")
    return FAULT_PRESETS[faults](seed)


def _options(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker(_MARKER)
    return {} if marker is None else dict(marker.kwargs)
