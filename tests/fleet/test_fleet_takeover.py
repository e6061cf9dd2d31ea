"""A process that dies for good loses nothing: the survivors take its overdue tasks over.

Three Fleets share one SQLite file, as three processes would (each its own connection). Each
stream's callbacks go to the Fleet that started it only (a webhook URL of its own), so once that
one is dead, nobody hears its streams: the harshest case. It dies (is never called again) with
one task of each kind a dead process can leave: running and then silent, mid-stop with the stop
acknowledged and its status-14 callback lost, mid-stop with the stop failed and its retry armed in
the dead process's memory, and uncertain (its start answer lost). The two survivors only tick.
Within the policy's bounds every task is settled, the service bills nothing, each deadline is
fired once, and no stop goes out more often than the retry policy allows.

``tests/fleet/test_multiprocess_takeover.py`` does the same with real processes on PostgreSQL,
and a SIGKILL.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlife import Fleet, ManualClock, Policy, StreamKind, TaskState
from streamlife._events import StopResult
from streamlife.errors import ServiceError
from streamlife.protocol import Payload
from streamlife.sim import SimTransport, SimulatedService
from streamlife.store import SqliteStore, Store

URL = "rtmp://sim.invalid/live"
POLICY = Policy(
    stop_concurrency=0,
    seed=0,
    park_ttl=8,
    uncertain_ttl=20,
    final_callback_wait=5,
    silence_after=12,
    stop_when_stalled=True,
    stop_retry_base=1.0,
    stop_retry_cap=8,
    stop_timeout=4,
    takeover_after=6,
)
# The latest a survivor settles a dead process's task, counted from the death: the longest wait
# the task may be in (its silence, then the stop's final callback wait; an uncertain start's ttl; a
# failed stop's backoff and answer), the grace, a look's interval, and then the wait of the state
# the takeover leads to (a stop's answer and final callback).
BOUND = (
    max(POLICY.silence_after, POLICY.uncertain_ttl, POLICY.stop_retry_cap + POLICY.stop_timeout)
    + POLICY.takeover_after * 1.25
    + POLICY.final_callback_wait
    + POLICY.stop_timeout
    + POLICY.takeover_after * 1.25
)


class Router:
    """Each stream's callbacks go to the Fleet that started it, while it lives; a stream nobody
    started (a start whose answer was lost) has its callbacks go to ``anyone``."""

    def __init__(self) -> None:
        self.owner: dict[str, Fleet] = {}
        self.dead: set[int] = set()
        self.anyone: Fleet | None = None

    def __call__(self, payload: Payload) -> None:
        owner = self.owner.get(str(payload.get("task_id")), self.anyone)
        if owner is not None and id(owner) not in self.dead:
            owner.handle_callback(payload)


class FailingStops(SimTransport):
    """The service answers 500 to the stops of the task_ids in ``failing``, and the stream goes on."""

    def __init__(self, service: SimulatedService) -> None:
        super().__init__(service)
        self.failing: set[str] = set()

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        if task_id in self.failing:
            raise ServiceError("internal error (a test)", operation="audio.stop", status=500, code=None)
        return super().stop(kind, task_id, within=within)


def fleets(tmp_path: Path, clock: ManualClock, service: SimulatedService, n: int) -> list[Fleet]:
    return [
        Fleet(FailingStops(service), clock=clock, policy=POLICY, store=SqliteStore(tmp_path / "streams.db"))
        for _ in range(n)
    ]


def start(fleet: Fleet, router: Router) -> str:
    task = fleet.start("audio", audio_url=URL, provider="assemblyai")
    assert task.task_id is not None
    router.owner[task.task_id] = fleet
    return task.task_id


def settle(service: SimulatedService, survivors: list[Fleet], seconds: float, step: float = 0.5) -> None:
    for _ in range(round(seconds / step)):
        service.advance(step)
        for fleet in survivors:
            fleet.tick()


def journals(store: Store) -> dict[str, list[str]]:
    """Each task's journal, as its triggers, by its task_id (or key), checked for version gaps."""
    found = {}
    for row in store.rows(terminal=True):
        entries = store.journal(row.key)
        assert [entry.version for entry in entries] == list(range(1, row.version + 1)), row.key
        found[row.task_id or row.key] = [entry.trigger for entry in entries]
    return found


def dead_process_leaves(
    tmp_path: Path, clock: ManualClock
) -> tuple[SimulatedService, Router, list[Fleet], dict[str, str]]:
    """Three Fleets; the first leaves one task of each kind behind as it dies. Returns the service,
    the survivors, and the dead one's task_ids by what it left them as."""
    service = SimulatedService(clock=clock)
    router = Router()
    service.on_callback(router)
    dying, *survivors = fleets(tmp_path, clock, service, 3)
    router.anyone = survivors[-1]  # (it adopts the stream of the start whose answer was lost)
    left = {name: start(dying, router) for name in ("silent", "acknowledged", "failed")}
    service.lose_next_start_answer()
    uncertain = dying.start("audio", audio_url=URL, provider="assemblyai")
    assert uncertain.state is TaskState.UNCERTAIN
    left["uncertain"] = uncertain.key or ""
    settle(service, [dying, *survivors], 10)  # segments flow, to the one that started them
    transport = dying.transport
    assert isinstance(transport, FailingStops)
    transport.failing.add(left["failed"])
    assert dying.stop(left["failed"]).state is TaskState.STOPPING  # failed; its retry armed in memory
    router.dead.add(id(dying))  # from here its callbacks are lost: the status-14 one too
    assert dying.stop(left["acknowledged"]).stop_acknowledged
    return service, router, survivors, left  # and it dies: never called again


def test_the_survivors_settle_every_task_a_dead_process_left_within_the_policys_bounds(
    tmp_path: Path, clock: ManualClock
) -> None:
    service, _, survivors, left = dead_process_leaves(tmp_path, clock)
    settle(service, survivors, BOUND)
    store = survivors[0].store
    assert list(store.rows()) == []  # every task settled
    assert service.billing() == []
    found = journals(store)
    silent, acknowledged, failed = found[left["silent"]], found[left["acknowledged"]], found[left["failed"]]
    assert silent.count("silence") == 1
    assert silent[-1] == "final_deadline"  # (its stop's status 14 went to the dead process)
    assert acknowledged.count("final_deadline") == 1
    assert found[left["uncertain"]][-1] == "uncertain_deadline"
    assert failed.count("stop_error") == 1  # the dead process's failure; then the survivor's stop
    assert failed[-1] == "final_deadline"
    stops = Counter(request.task_id for request in service.stop_log)
    # The silent stream's stop is a survivor's, after its silence; the acknowledged one's is the
    # dead process's; the failed one's is the survivor's (the dead one's never reached the
    # service); and the stream of the lost start answer is reaped as an orphan, once.
    assert (stops[left["silent"]], stops[left["acknowledged"]], stops[left["failed"]]) == (1, 1, 1)
    assert sorted(stops.values()) == [1, 1, 1, 1]


def an_orphan_heard_by_the_first(
    tmp_path: Path, clock: ManualClock
) -> tuple[SimulatedService, Router, list[Fleet], str]:
    """Two Fleets, and a stream started outside either (an orphan to both), whose callbacks go to
    the first only: the service, the router, the Fleets, and the stream's task_id."""
    service = SimulatedService(clock=clock)
    router = Router()
    service.on_callback(router)
    both = fleets(tmp_path, clock, service, 2)
    orphan = (
        SimTransport(service).start(StreamKind.AUDIO, {"audio_url": URL, "provider": "assemblyai"}).task_id
    )
    router.owner[orphan] = both[0]
    return service, router, both, orphan


def test_a_survivor_adopts_and_stops_the_stream_whose_callbacks_a_dead_process_parked(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A stream no start of ours named: its callbacks reached one process only, which parked them
    and died before their parking TTL ran out. A survivor takes them from the store once they are
    left past it, adopts the stream, and stops it."""
    service, router, (dying, survivor), orphan = an_orphan_heard_by_the_first(tmp_path, clock)
    settle(service, [dying, survivor], 6)  # its first segment, parked by the one that hears it
    assert (dying.stats().parked, survivor.stats().parked) == (1, 0)
    router.dead.add(id(dying))  # and it dies: its lot with it, and the stream's later callbacks

    settle(service, [survivor], POLICY.park_ttl + POLICY.takeover_after * 1.25 + POLICY.stop_timeout)
    assert service.billing() == []
    store = survivor.store
    (adopted,) = [row for row in store.rows(terminal=True) if row.task_id == orphan]
    assert [entry.trigger for entry in store.journal(adopted.key)][:2] == ["adopt", "segment"]
    assert store.parked() == []
    settle(service, [survivor], POLICY.final_callback_wait + POLICY.stop_timeout)
    assert list(store.rows()) == []  # settled: its status 14 went to the dead process
    assert Counter(request.task_id for request in service.stop_log) == {orphan: 1}


def test_a_live_process_adopts_the_stream_whose_callbacks_it_parked_and_the_others_leave_them(
    tmp_path: Path, clock: ManualClock
) -> None:
    """The process that parked an orphan's callbacks lives, and ticks late (every 4 s, within the
    grace): it adopts the stream, a little after its parking TTL. Another that ticks every half
    second takes none of them: none is left past the grace."""
    service, _, (parker, other), _ = an_orphan_heard_by_the_first(tmp_path, clock)
    assert POLICY.takeover_after > 4
    for step in range(round((5 + POLICY.park_ttl + POLICY.takeover_after * 2) / 0.5)):
        service.advance(0.5)
        other.tick()
        if step % 8 == 7:
            parker.tick()
    assert (parker.stats().orphans, other.stats().orphans) == (1, 0)
    assert service.billing() == []
    assert parker.store.parked() == []


def test_a_process_that_lives_keeps_its_tasks_and_nobody_takes_them_over(
    tmp_path: Path, clock: ManualClock
) -> None:
    """The same tasks, but the process that holds them goes on ticking: it fires its own deadlines
    before the grace runs out, and the other processes never take one over."""
    service = SimulatedService(clock=clock)
    router = Router()
    service.on_callback(router)
    holder, *others = fleets(tmp_path, clock, service, 3)
    task_ids = [start(holder, router) for _ in range(3)]
    settle(service, [holder, *others], 10)
    router.dead.add(id(holder))  # its streams' callbacks are lost, but it lives
    holder.stop(task_ids[0])
    settle(service, [holder, *others], BOUND)
    assert list(holder.store.rows()) == []
    assert service.billing() == []
    assert all(fleet.tasks() == [] for fleet in others)  # never held, never taken over
    assert Counter(request.task_id for request in service.stop_log) == dict.fromkeys(task_ids, 1)


@settings(max_examples=25)
@given(
    order=st.permutations(range(2)),
    steps=st.lists(st.sampled_from([0.25, 0.5, 1.0, 2.5]), min_size=1, max_size=4),
    survivors_count=st.integers(min_value=1, max_value=2),
)
def test_however_the_survivors_tick_each_deadline_of_a_dead_process_fires_once(
    tmp_path_factory: pytest.TempPathFactory, order: list[int], steps: list[float], survivors_count: int
) -> None:
    """Invariants, whoever ticks first and however often: every task settles within the bound,
    nothing bills, every journal is whole, each deadline fires once, and a stop goes out at most
    once per survivor beyond the dead process's own."""
    clock = ManualClock(1_700_000_000.0)
    service, router, survivors, left = dead_process_leaves(tmp_path_factory.mktemp("takeover"), clock)
    survivors = [survivors[n] for n in order][:survivors_count]
    router.anyone = survivors[0]
    elapsed, turn = 0.0, 0
    while elapsed < BOUND:
        step = steps[turn % len(steps)]
        service.advance(step)
        for fleet in survivors[turn % len(survivors) :] + survivors[: turn % len(survivors)]:
            fleet.tick()
        elapsed, turn = elapsed + step, turn + 1
    store = survivors[0].store
    assert list(store.rows()) == []
    assert service.billing() == []
    for triggers in journals(store).values():
        deadlines = Counter(t for t in triggers if t in ("silence", "final_deadline", "uncertain_deadline"))
        assert all(count == 1 for count in deadlines.values()), triggers
    stops = Counter(request.task_id for request in service.stop_log)
    assert stops[left["silent"]] == 1
    assert stops[left["acknowledged"]] == 1
    assert 1 <= stops[left["failed"]] <= len(survivors)
