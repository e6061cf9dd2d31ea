"""What a callback's status means: the table a user can extend, and the statuses the docs confirm.

Kept out of the callback parser's module, which is compiled in a compiled build (pyproject.toml):
a table is made once and read with one lookup, so it gains nothing there, and compiled code would
take a status of True as 1 before this module's check could refuse it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Final

from .events import StatusMeaning
from .protocol import CAPACITY_REACHED, STOPPED_BY_USER

PROVIDER_ENDED: Final = -1000
"""The status given to a provider's own end-of-session message (AssemblyAI ``Termination``).

It has no memories.ai status, and StatusCallback.status is an int, so it gets this synthetic one,
far from every real value seen (-1, 0, 14, 16, 1001, 2001, 5000). Being a status, it goes through
the table like any other: PROVIDER_ENDED by default, which the lifecycle reads as our stop's echo
while the task is stopping (once the stop was acknowledged), and as an inferred end while it runs.
"""


class StatusTable(Mapping[int, StatusMeaning]):
    """Callback status -> meaning. Immutable: ``with_status`` returns an extended copy.

    ``table.meaning(status)`` is UNKNOWN for a status the table does not list.
    """

    __slots__ = ("_meanings",)

    def __init__(self, meanings: Mapping[int, StatusMeaning | str] | None = None) -> None:
        checked: dict[int, StatusMeaning] = {}
        for status, meaning in (meanings or {}).items():
            if not isinstance(status, int) or isinstance(status, bool):  # bool is an int to Python
                raise TypeError(f"a status is an int, not {type(status).__name__}")
            checked[status] = StatusMeaning(meaning)
            if checked[status] is StatusMeaning.STOPPED and status != STOPPED_BY_USER:
                # A task is terminal only on an end the service confirmed: 14 is the one status the
                # docs give as "stopped". Any other end is inferred, and a stop confirms it.
                raise ValueError(
                    f"only status {STOPPED_BY_USER} means stopped; declare status {status} 'ended', an end"
                    " the Fleet confirms with a stop"
                )
        self._meanings: Mapping[int, StatusMeaning] = MappingProxyType(checked)

    def with_status(self, status: int, meaning: StatusMeaning | str) -> StatusTable:
        """A copy of this table in which ``status`` means ``meaning`` (added, or replacing the old one)."""
        return StatusTable({**self._meanings, status: meaning})

    def meaning(self, status: int) -> StatusMeaning:
        return self._meanings.get(status, StatusMeaning.UNKNOWN)

    def __getitem__(self, status: int) -> StatusMeaning:
        return self._meanings[status]

    def __iter__(self) -> Iterator[int]:
        return iter(self._meanings)

    def __len__(self) -> int:
        return len(self._meanings)

    def __hash__(self) -> int:  # immutable, so it may sit in frozen values (a Policy)
        return hash(frozenset(self._meanings.items()))

    def __repr__(self) -> str:
        return f"StatusTable({dict(self._meanings)!r})"


# Only what the docs confirm: 14 (stopped by user) and 16 (capacity reached). 0 is the status Live
# Video Understanding documents as "OK", and the one segment results carry (the docs are silent on
# a segment's status; we assume 0, as every example has it). A status-0 callback with no result (no
# transcript, a null ``data.data``) is a silent segment: the stream was heard and nothing ended, so
# it is ONGOING. 12, 15 and the rest are unknown until a user says otherwise, and an unknown status
# is an end the Fleet confirms with a stop, never one it takes on trust.
DEFAULT_STATUSES: Final = StatusTable(
    {
        0: StatusMeaning.ONGOING,
        STOPPED_BY_USER: StatusMeaning.STOPPED,
        CAPACITY_REACHED: StatusMeaning.CAPACITY,
        PROVIDER_ENDED: StatusMeaning.PROVIDER_ENDED,
    }
)
