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
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from .clock import ManualClock
from .fleet import Fleet
from .policy import Policy
from .sim import Faults, SimTransport, SimulatedService
from .simulate import FAULT_PRESETS

_MARKER = "memories"
_EPOCH = 1_700_000_000.0


@dataclass
class MemoriesSim:
    service: SimulatedService
    transport: SimTransport
    clock: ManualClock
    fleets: list[Fleet] = field(default_factory=list)

    def fleet(self, policy: Policy | None = None) -> Fleet:
        """A Fleet on this simulator: callbacks wired, stops sent on the calling thread."""
        chosen = policy or Policy(seed=0, stop_concurrency=0)
        made = Fleet(self.transport, clock=self.clock, policy=chosen)
        self.service.on_callback(made.handle_callback)
        self.fleets.append(made)
        return made

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
        while self.clock.now() < deadline and not self._settled():
            self.advance(1.0)

    def billing(self) -> list[str]:
        """The task_ids of the streams the simulated service still bills."""
        return self.service.billing()

    def _settled(self) -> bool:
        for fleet in self.fleets:
            stats = fleet.stats()
            if stats.parked or any(not task.terminal for task in fleet.tasks()):
                return False
        return not self.service.billing()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(faults='none'|'default'|'all'|Faults, seed=0, max_streams=10000, policy=Policy):"
        " how streamlife's memories_sim and fleet fixtures behave",
    )


@pytest.fixture
def memories_sim(request: pytest.FixtureRequest) -> Iterator[MemoriesSim]:
    """memories.ai's stream API in-process, on a virtual clock (see the module's docstring)."""
    options = _options(request)
    faults = options.get("faults", "none")
    seed = options.get("seed", 0)
    if isinstance(faults, str):
        if faults not in FAULT_PRESETS:
            raise pytest.UsageError(f"@pytest.mark.{_MARKER}(faults=...) takes {', '.join(FAULT_PRESETS)}")
        faults = FAULT_PRESETS[faults](seed)
    elif not isinstance(faults, Faults):
        raise pytest.UsageError(f"@pytest.mark.{_MARKER}(faults=...) takes a preset name or a Faults")
    clock = ManualClock(_EPOCH)
    service = SimulatedService(clock=clock, faults=faults, max_streams=options.get("max_streams", 10_000))
    sim = MemoriesSim(service, SimTransport(service), clock)
    yield sim
    for fleet in sim.fleets:
        fleet.close()


@pytest.fixture
def fleet(memories_sim: MemoriesSim, request: pytest.FixtureRequest) -> Fleet:
    """A Fleet wired to ``memories_sim`` (see the module's docstring)."""
    policy = _options(request).get("policy")
    if policy is not None and not isinstance(policy, Policy):
        raise pytest.UsageError(f"@pytest.mark.{_MARKER}(policy=...) takes a Policy")
    return memories_sim.fleet(policy)


def _options(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker(_MARKER)
    return {} if marker is None else dict(marker.kwargs)
