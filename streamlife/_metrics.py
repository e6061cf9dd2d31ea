"""``/metrics``: what a serving process has done, in Prometheus's text format (the ``metrics`` extra).

Two kinds of figure, read two ways:

* **what this process did** (counters and the latency histogram): callbacks by outcome, malformed
  payloads, stops sent and failed, orphans adopted, timer firings, answers by status, and how long
  each callback took from its request's arrival to its answer. The Fleet keeps the counts
  (``Fleet.stats()``); ``sync`` adds what they grew by since it last looked to prometheus_client's
  counters, once a second from a thread and before each scrape. The Fleet knows nothing of
  Prometheus.
* **what the store holds** (gauges, read at each scrape with one pass over the unfinished tasks):
  tasks not yet terminal by state, and the seconds their streams have been billed so far, by the
  5-second rule (``_billing.billed_seconds``). Every process sharing a store reads the same rows,
  so these are right whichever process is scraped: a Fleet's own view holds only the tasks it has
  met, and several processes' views overlap.

With several worker processes behind one socket a scrape reaches any one of them, so the counters
live in prometheus_client's multiprocess mode: each process writes its own to files in the
directory ``PROMETHEUS_MULTIPROC_DIR`` names, set before prometheus_client is imported (``serve
--workers`` makes one and sets it), and a scrape adds up every process's files, those of processes
that have ended included: a counter never goes down.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from ._billing import billed_seconds
from .lifecycle import TERMINAL, TaskState
from .store.base import TaskRow

INSTALL_HINT: Final = "pip install 'streamlife[metrics]'"
MULTIPROCESS_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
SYNC_EVERY: Final = 1.0  # seconds between two syncs of the counters from the Fleet's
# Seconds: a callback takes tens of microseconds in memory, a few milliseconds on PostgreSQL, and a
# store in trouble, up to its timeouts.
LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# The Fleet's counters, by the name each gets here.
_STATS_COUNTERS: Final = {
    "stops_sent": ("streamlife_stops_sent", "stop requests sent to memories.ai"),
    "stop_failures": ("streamlife_stop_failures", "stop requests that failed (each is retried)"),
    "orphans": ("streamlife_orphans", "streams nobody here started, adopted (and stopped, by default)"),
    "timers_fired": ("streamlife_timer_firings", "deadlines the timers fired"),
}


def available() -> bool:
    """Whether prometheus_client is installed (the ``metrics`` extra)."""
    return importlib.util.find_spec("prometheus_client") is not None


class Stats(Protocol):
    """What ``Fleet.stats()`` returns, as far as the counters read it."""

    @property
    def callbacks(self) -> Mapping[str, int]: ...
    @property
    def malformed(self) -> int: ...
    @property
    def orphans(self) -> int: ...
    @property
    def stops_sent(self) -> int: ...
    @property
    def stop_failures(self) -> int: ...
    @property
    def timers_fired(self) -> int: ...


@dataclass(frozen=True)
class Source:
    """Where the figures come from: ``stats`` (a Fleet's), ``rows`` (its store's unfinished tasks),
    ``now`` (its clock's, on which the rows' times are)."""

    stats: Callable[[], Stats]
    rows: Callable[[], Iterable[TaskRow]]
    now: Callable[[], float]


class Metrics:
    """The figures of one serving process. ``observe`` a callback's latency and its answer's status
    on the event loop; ``render()`` the text for a scrape (it reads the store: call it off the loop).
    Needs prometheus_client: check ``available()`` first.

    ``observe`` only counts, in plain integers that one thread (the loop's) alone adds to;
    ``sync`` hands what they grew by to prometheus_client, as it does the Fleet's counts.
    prometheus_client's own ``observe`` and ``inc`` take a lock and walk the buckets for each
    request, which costs a callback more than the rest of its metrics together."""

    def __init__(self, source: Source) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.source = source
        self.multiprocess = MULTIPROCESS_ENV in os.environ
        # A registry of our own, never prometheus_client's global one: the application embedding us
        # owns that. In multiprocess mode the values go to files and the scrape reads those instead.
        self._registry = CollectorRegistry(auto_describe=True)
        own = None if self.multiprocess else self._registry
        self._callbacks = Counter(
            "streamlife_callbacks", "callbacks taken, by what each met on arrival", ["outcome"], registry=own
        )
        self._counters = {
            field: Counter(name, about, registry=own) for field, (name, about) in _STATS_COUNTERS.items()
        }
        self._answers = Counter(
            "streamlife_http_responses", "webhook requests answered, by status", ["status"], registry=own
        )
        self._latency = Histogram(
            "streamlife_ingest_seconds",
            "seconds from a webhook request's arrival to its answer",
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self._by_status: dict[int, Any] = {}
        # What observe counted (the loop's thread alone writes them) and what sync has handed on.
        self._answered: dict[int, int] = {}  # status -> answers
        self._latencies = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket, the last one +Inf's
        self._latency_sum = 0.0
        self._answered_seen: dict[int, int] = {}
        self._latencies_seen = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum_seen = 0.0
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._store = _StoreFigures(source)
        if not self.multiprocess:
            self._registry.register(self._store)

    def observe(self, seconds: float, status: int) -> None:
        """Count one answer: its status, and the seconds it took. From one thread only (the loop's)."""
        self._latencies[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # (a bucket holds its bound)
        self._latency_sum += seconds
        answered = self._answered
        answered[status] = answered.get(status, 0) + 1

    def sync(self) -> None:
        """Add to the counters what the Fleet's, and ``observe``'s, grew by since the last sync."""
        with self._lock:
            self._sync_observed()
        stats = self.source.stats()
        grown: list[tuple[str, int]] = [(f"callbacks.{kind}", n) for kind, n in stats.callbacks.items()]
        grown.append(("callbacks.malformed", stats.malformed))
        grown += [(field, getattr(stats, field)) for field in _STATS_COUNTERS]
        with self._lock:
            for name, total in grown:
                delta = total - self._seen.get(name, 0)
                if delta <= 0:
                    continue
                self._seen[name] = total
                if name.startswith("callbacks."):
                    self._callbacks.labels(name.partition(".")[2]).inc(delta)
                else:
                    self._counters[name].inc(delta)

    def _sync_observed(self) -> None:
        """Hand on what ``observe`` counted since the last sync. Each figure is read once: what the
        loop adds meanwhile is handed on next time."""
        for status, total in list(self._answered.items()):  # (a copy: the loop may add a status)
            grown = total - self._answered_seen.get(status, 0)
            if grown > 0:
                self._answered_seen[status] = total
                answered = self._by_status.get(status)
                if answered is None:  # (labels() costs more than the rest of this: each status once)
                    answered = self._by_status[status] = self._answers.labels(str(status))
                answered.inc(grown)
        total_seconds = self._latency_sum
        # prometheus_client has no public way to add many observations at once: its histogram
        # keeps one value per bucket (not cumulative) and one for the sum, which are added to here.
        buckets = self._latency._buckets
        for n, (total, seen) in enumerate(zip(list(self._latencies), self._latencies_seen, strict=True)):
            if total > seen:
                buckets[n].inc(total - seen)
                self._latencies_seen[n] = total
        if total_seconds > self._latency_sum_seen:
            self._latency._sum.inc(total_seconds - self._latency_sum_seen)
            self._latency_sum_seen = total_seconds

    def render(self) -> tuple[bytes, str]:
        """The scrape's body and its Content-Type."""
        from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        self.sync()
        if not self.multiprocess:
            return generate_latest(self._registry), CONTENT_TYPE_PLAIN_0_0_4
        registry = CollectorRegistry(auto_describe=True)
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(self._store)
        return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4


class _StoreFigures:
    """The gauges read from the store at each scrape (a prometheus_client collector)."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def describe(self) -> Iterator[Any]:
        return iter(())  # (so that registering does not read the store)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        by_state = dict.fromkeys((state.value for state in TaskState if state not in TERMINAL), 0)
        billed = 0.0
        now = self.source.now()
        for row in self.source.rows():
            by_state[row.state] = by_state.get(row.state, 0) + 1
            started, ended = _seconds(row.facts.get("started_at")), _seconds(row.facts.get("ended_at"))
            if started is not None:
                billed += billed_seconds(started, now if ended is None else ended)
        tasks = GaugeMetricFamily(
            "streamlife_tasks", "tasks not yet terminal in the store, by state", labels=["state"]
        )
        for state, count in sorted(by_state.items()):
            tasks.add_metric([state], count)
        yield tasks
        yield GaugeMetricFamily(
            "streamlife_billed_seconds_exposed",
            "seconds billed so far, by the 5-second rule, by the streams in the store whose end is not"
            " confirmed: what they cost while nobody stops them",
            value=billed,
        )


def _seconds(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
