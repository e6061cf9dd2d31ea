"""Policy: every timeout and switch of a Fleet, in one frozen value with documented defaults.

All durations are seconds on the Fleet's clock (virtual time under a ManualClock), except the
``wait`` of ``Fleet.stop``, which is real time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from ._billing import DEFAULT_RATES, Rates
from ._callbacks import DEFAULT_STATUSES, StatusTable
from ._events import StreamKind
from .protocol import SEGMENT_SECONDS, UNDERSTAND_MAX_TASKS

# A key of ``Policy.max_live`` as it is kept: one product, or the products a cap counts together.
LiveKey = StreamKind | tuple[StreamKind, ...]


def _live_key(given: object) -> LiveKey:
    """A key of ``Policy.max_live`` as kept: a product, or a tuple of two or more in order."""
    if isinstance(given, tuple):
        if not given:
            raise ValueError("Policy.max_live: a tuple key names no product")
        kinds = [_product(item) for item in given]
        if len(set(kinds)) < len(kinds):
            raise ValueError(f"Policy.max_live: the key {given!r} names a product twice")
        if len(kinds) == 1:
            return kinds[0]
        return tuple(kind for kind in StreamKind if kind in kinds)
    return _product(given)


def _product(given: object) -> StreamKind:
    if not isinstance(given, str):  # (a StreamKind is a str)
        raise TypeError(f"Policy.max_live: a key is a product or a tuple of products, got {given!r}")
    try:
        return StreamKind(given)
    except ValueError:
        known = ", ".join(kind.value for kind in StreamKind)
        raise ValueError(f"Policy.max_live: unknown product {given!r} (known: {known})") from None


def _kinds_of(key: LiveKey) -> tuple[StreamKind, ...]:
    return (key,) if isinstance(key, StreamKind) else key


def _plain(key: LiveKey) -> str | tuple[str, ...]:
    return key.value if isinstance(key, StreamKind) else tuple(kind.value for kind in key)


def _products(key: LiveKey) -> str:
    return " and ".join(kind.value for kind in _kinds_of(key))


class LiveCaps(Mapping[LiveKey, int]):
    """``Policy.max_live`` as a mapping, checked: each key a product or a tuple of two or more
    products (in ``StreamKind``'s order), each cap an int of at least 1. Immutable and hashable,
    so that it may sit in a Policy."""

    __slots__ = ("_caps",)

    def __init__(self, caps: Mapping[Any, int | None]) -> None:
        checked: dict[LiveKey, int] = {}
        for given, cap in caps.items():
            key = _live_key(given)
            if key in checked:
                raise ValueError(f"Policy.max_live names {_products(key)} twice")
            if cap is None:  # no cap of ours for it: as if it were left out
                continue
            if not isinstance(cap, int) or isinstance(cap, bool):
                raise TypeError(f"Policy.max_live[{given!r}] must be an int or None, got {cap!r}")
            if cap < 1:
                raise ValueError(f"Policy.max_live[{given!r}] must be at least 1, got {cap!r}")
            checked[key] = cap
        self._caps: Mapping[LiveKey, int] = MappingProxyType(checked)

    def groups(self) -> tuple[tuple[tuple[StreamKind, ...], int], ...]:
        """Each cap with the products it counts together, in ``StreamKind``'s order."""
        return tuple((_kinds_of(key), cap) for key, cap in self._caps.items())

    def __getitem__(self, key: LiveKey) -> int:
        return self._caps[key]

    def __iter__(self) -> Iterator[LiveKey]:
        return iter(self._caps)

    def __len__(self) -> int:
        return len(self._caps)

    def __hash__(self) -> int:
        return hash(frozenset(self._caps.items()))

    def __repr__(self) -> str:
        shown = {_plain(key): cap for key, cap in self._caps.items()}
        return f"LiveCaps({shown!r})"


DEFAULT_MAX_LIVE: Final = LiveCaps({StreamKind.UNDERSTAND: UNDERSTAND_MAX_TASKS})


@dataclass(frozen=True, slots=True)
class Policy:
    park_ttl: float = 60.0
    """How long a callback for an unknown task_id waits for its start answer before the stream is
    taken for an orphan. Keep it above the transport's read timeout (15 s for HttpTransport): a
    start answer can take that long, and its stream's first callbacks may come before it."""

    reap_orphans: bool = True
    """Stop every orphan as soon as it is adopted. Off: orphans are adopted, reported to the
    ``on_orphan`` hooks and left running for the caller to decide."""

    uncertain_ttl: float = 120.0
    """How long a start whose outcome is unknown stays ``uncertain`` before it is ``failed``. The
    stream it may have created is not lost meanwhile: its callbacks make it an orphan, and the
    reaper stops it."""

    final_callback_wait: float = 30.0
    """After the service acknowledged a stop, how long to wait for the status-14 callback before
    the task is ``stopped`` with ``final_callback_missing`` set."""

    silence_after: float = 6 * SEGMENT_SECONDS
    """A running task that hears nothing for this long is marked ``stalled`` (segments come every
    5 s, so the default is six missed segments)."""

    stop_when_stalled: bool = False
    """Stop a task once it is stalled: a stream that sends nothing may still bill. A product whose
    stream ends without a word (Live Video Understanding, ``lifecycle.KIND_RULES``) is stopped when
    stalled whatever this says: its silence is how its end shows, and the stop confirms it."""

    stop_retry_base: float = 1.0
    stop_retry_cap: float = 60.0
    """A failed stop is sent again after a jittered exponential backoff: about base * 2**n seconds
    after the n-th failure, never more than the cap, never less than the service's Retry-After.
    It is retried for as long as the task owes a stop (stopping, or ending): a stream left running
    bills. A start refused for now is retried with the same backoff."""

    max_retry_after: float = 300.0
    """The longest the service's Retry-After holds back a stop or a start. A longer one counts as
    this long: a wait of a year (or a malformed date) must not leave a stream billing, and no
    explicit ``stop`` waits longer than this either. The wait is journaled with the failed stop,
    so other processes and a restart honour it too."""

    stop_timeout: float = 10.0
    """The longest one stop request may take, the transport's own retries included (the transport's
    deadline applies too, if shorter). Past it the stop counts as failed and is retried with the
    backoff: a slow or stalling answer for some streams must not hold every stop worker while
    the stops of the others wait."""

    stop_concurrency: int = 8
    """Worker threads that send stop requests: ``stop_all``'s at once, a bounded ``stop``'s, and the
    retries and orphan stops of ``tick``. 0 keeps none: every request goes out on the calling
    thread, one by one (reproducible, for simulations; ``wait`` then bounds only the waiting,
    while the transport's own deadline bounds each request)."""

    start_retry_window: float = 60.0
    """How long a start is tried again, counted from the first try, when nothing was created: the
    service refused it for now (429, or capacity 16), or ``max_live`` held it back. The retries
    use the stop backoff (``stop_retry_base``, ``stop_retry_cap``, never sooner than Retry-After).
    The task waits in ``pending`` meanwhile, and ``stop`` cancels it without a request. It fails
    after the window, or when the process that holds it ends (the store does not keep start
    bodies). 0 never retries: such a start fails at once."""

    max_live: int | Mapping[Any, int | None] | None = DEFAULT_MAX_LIVE
    """The most streams this Fleet keeps live at once (every task whose stream may exist: starting,
    uncertain, running, stopping or ending), per product. A start past a cap waits in ``pending``,
    as for a 429, and fails with ``LiveCapError`` (which names the products and the cap) once
    ``start_retry_window`` is over; the request is never sent meanwhile.

    A mapping caps each key's products: a key is a product (``"understand"`` or
    ``StreamKind.UNDERSTAND``) or a tuple of products counted together, and a start must fit under
    every key that names its product. A product no key names (or whose cap is None) has no cap of
    ours. An int caps every product together. None: no cap at all. What you give replaces the
    default whole. The default, ``{"understand": 4}``, is memories.ai's documented cap of Live
    Video Understanding tasks per API key (``protocol.UNDERSTAND_MAX_TASKS``): a fifth start would
    only be refused (1001). Audio and video share a cap per account that memories.ai does not
    publish (it answers 16 when full): a tuple key says so once you know yours, e.g.
    ``{("audio", "video"): 20, "understand": 4}``. Tuples, not one flat int per product, because
    that is how memories.ai counts: audio and video together, understand apart.
    Each process counts the tasks its own Fleet holds."""

    max_parked: int = 10_000
    """Unknown task_ids parked at once. A callback for one more raises ``ParkingFullError`` and is
    not kept (the receiver answers 503, so the sender may deliver it again): nothing parked is
    ever dropped to make room."""

    max_parked_per_task: int = 256
    """Callbacks parked under one unknown task_id (a redelivered one counts once). Past it, as for
    ``max_parked``: refused with ``ParkingFullError``, never dropped."""

    history_limit: int | None = 100
    """Events each task keeps in ``task.history``: at least this many of the latest, older ones let
    go a batch at a time; None keeps them all. The store's journal keeps every applied event
    whatever this says (``Fleet.journal``), so this bounds only what a long-lived stream holds in
    memory. An hour of a stream is 720 segments or more, and 100,000 streams each keeping all of
    them would hold tens of GiB (bench/RESULTS.md has the bytes per task)."""

    max_duration: float | None = None
    """A cost ceiling for every stream: once one has run this many seconds since its start answer,
    the Fleet stops it (the stop's reason, ``max_duration``, is journaled). ``Fleet.start(...,
    max_duration=)`` sets one stream's own. None: no ceiling."""

    rates: Rates = DEFAULT_RATES
    """Dollars per hour by product, for ``Fleet.exposure``: memories.ai's published prices (dated)
    unless you give yours."""

    statuses: StatusTable = DEFAULT_STATUSES
    """What each callback status means: 14 stopped, 16 capacity, the rest the user's to declare."""

    seed: int | None = None
    """Seed for the backoff jitter, for reproducible runs; None draws it from the OS."""

    retention: float | None = None
    """How long the store keeps a terminal task (its row and journal), counted from its last event,
    and a dead letter, counted from its arrival. None keeps everything. ``streamlife serve
    --retention`` prunes the store with it every hour (``streamlife.store.pruning``); a Fleet alone
    prunes nothing. Keep it well above how late a callback may come: a callback for a pruned task
    is taken for an orphan's."""

    shared_poll: float = 0.25
    """With a store other processes share, how often (real seconds) ``stop(wait=)`` and
    ``stop_all(wait=)`` read it for what the others applied: the status-14 callback that settles a
    task may reach another process. Each read takes one row per task waited for (or, for many
    tasks, one scan of the unfinished ones)."""

    keep_terminal: float | None = 300.0
    """How long (seconds on the Fleet's clock, from its last event) a terminal task stays in this
    process's memory. Past it the Fleet lets the task go: ``tasks()``, ``stats()``, ``unsettled()``
    and ``stop_all()`` no longer walk it, and ``get``, ``journal``, ``stop`` or a late callback bring
    it back from the store (a late callback then costs a read of its journal). Five minutes by
    default: well past the final-callback wait and the stop retries that settle a task, so the late
    callbacks that do come find it held, while a process that runs for days holds only the tasks
    that ended in the last few minutes. None keeps every task in memory for as long as the Fleet
    lives."""

    transcript_limit: int | None = 32
    """Segments each task's transcript keeps in memory: those of at least this many of its highest
    indexes (up to twice as many: older ones are let go a batch at a time), with a compact record of
    the rest (runs of indexes, a few bytes for each unindexed commit), so that duplicates and
    conflicts are still told from it. ``task.transcript`` reads the rest back from the store's
    journal, which keeps every segment: reading it whole costs a journal read. None keeps every
    segment in memory for as long as the task is held."""

    takeover_after: float = 10.0
    """With a store other processes share: how long past one of a task's deadlines (its silence,
    its final callback's wait, its stop's answer or retry, an uncertain start's end, its start's
    answer) any process may take the task over, if the process that holds it has written nothing
    since. That process has gone, or is stuck: the one that claims the task first in the store
    fires the deadline, and settles the task, so a process that dies for good leaves no stream
    billing and nobody need recover it. Every Fleet looks for such tasks four times in this
    period, when it ticks. Keep it above a pause your processes may take (a long collection, a
    busy disk), and above how far apart their clocks may be (deadlines are times on the clock of
    the process that wrote them, read on the clock of the one that looks): a process taken over
    while alive costs a duplicate stop request, and a stream it hears may be taken for stalled.

    Callbacks another process parked are taken over in the same looks, this long past their
    ``park_ttl``, the looking process's own: give the processes that share a store the same
    ``park_ttl`` and ``takeover_after``, or those with a longer ``park_ttl`` have their orphans
    adopted by the others."""

    def __post_init__(self) -> None:
        for name in _DURATIONS:
            value = getattr(self, name)
            if not _is_number(value):
                raise TypeError(f"Policy.{name} must be seconds (a number), got {value!r}")
            if not value > 0:  # (NaN too)
                raise ValueError(f"Policy.{name} must be positive, got {value!r}")
        if self.max_retry_after == float("inf"):  # a cap that caps nothing
            raise ValueError("Policy.max_retry_after must be finite")
        for name in ("reap_orphans", "stop_when_stalled"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"Policy.{name} must be True or False, got {getattr(self, name)!r}")
        if not _is_number(self.start_retry_window):
            raise TypeError(
                f"Policy.start_retry_window must be seconds (a number), got {self.start_retry_window!r}"
            )
        if not self.start_retry_window >= 0:  # (NaN too)
            raise ValueError(
                f"Policy.start_retry_window must not be negative, got {self.start_retry_window!r}"
            )
        for name, least in (
            ("stop_concurrency", 0),
            ("max_parked", 1),
            ("max_parked_per_task", 1),
            ("history_limit", 1),
            ("transcript_limit", 1),
        ):
            value = getattr(self, name)
            if value is None and name in ("history_limit", "transcript_limit"):  # None: no limit
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Policy.{name} must be an int, got {value!r}")
            if value < least:
                raise ValueError(f"Policy.{name} must be at least {least}, got {value!r}")
        if isinstance(self.max_live, Mapping) and not isinstance(self.max_live, LiveCaps):
            object.__setattr__(self, "max_live", LiveCaps(self.max_live))  # checked, and frozen
        elif self.max_live is not None and not isinstance(self.max_live, LiveCaps):
            if not isinstance(self.max_live, int) or isinstance(self.max_live, bool):
                raise TypeError(
                    "Policy.max_live must be an int, a mapping of products to ints, or None,"
                    f" got {self.max_live!r}"
                )
            if self.max_live < 1:
                raise ValueError(f"Policy.max_live must be at least 1, got {self.max_live!r}")
        if self.stop_retry_cap < self.stop_retry_base:
            raise ValueError("Policy.stop_retry_cap must not be below stop_retry_base")
        if self.max_duration is not None:
            check_max_duration(self.max_duration, "Policy.max_duration")
        if self.retention is not None:
            if not _is_number(self.retention):
                raise TypeError(
                    f"Policy.retention must be seconds (a number) or None, got {self.retention!r}"
                )
            if not 0 < self.retention < float("inf"):  # (NaN too)
                raise ValueError(f"Policy.retention must be positive, finite seconds, got {self.retention!r}")
        if self.keep_terminal is not None:
            if not _is_number(self.keep_terminal):
                raise TypeError(
                    f"Policy.keep_terminal must be seconds (a number) or None, got {self.keep_terminal!r}"
                )
            if not 0 <= self.keep_terminal < float("inf"):  # (NaN too)
                raise ValueError(
                    f"Policy.keep_terminal must be finite seconds >= 0, got {self.keep_terminal!r}"
                )
        if not isinstance(self.rates, Rates):
            raise TypeError(f"Policy.rates must be a Rates, got {type(self.rates).__name__}")
        if not isinstance(self.statuses, StatusTable):
            raise TypeError(f"Policy.statuses must be a StatusTable, got {type(self.statuses).__name__}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise TypeError(f"Policy.seed must be an int or None, got {self.seed!r}")


_DURATIONS: Final = (
    "park_ttl",
    "uncertain_ttl",
    "final_callback_wait",
    "silence_after",
    "stop_retry_base",
    "stop_retry_cap",
    "max_retry_after",
    "stop_timeout",
    "shared_poll",
    "takeover_after",
)


def check_max_duration(value: object, name: str = "max_duration") -> float:
    """A cost ceiling as seconds (a float), or the error that says why it is none: it must be a
    positive, finite number (``name`` says whose)."""
    if not _is_number(value):
        raise TypeError(f"{name} must be seconds (a number), got {value!r}")
    try:
        seconds = float(value)  # type: ignore[arg-type]  # (a number, checked above)
    except OverflowError:  # an int beyond any float
        seconds = float("inf")
    if not 0 < seconds < float("inf"):  # (NaN fails too)
        raise ValueError(f"{name} must be positive, finite seconds, got {value!r}")
    return seconds


def live_groups(
    max_live: int | Mapping[Any, int | None] | None,
) -> tuple[tuple[tuple[StreamKind, ...], int], ...]:
    """A checked ``Policy.max_live`` as caps, each with the products it counts together (in
    ``StreamKind``'s order)."""
    if max_live is None:
        return ()
    if isinstance(max_live, LiveCaps):
        return max_live.groups()
    if isinstance(max_live, int):
        return ((tuple(StreamKind), max_live),)
    return LiveCaps(max_live).groups()


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
