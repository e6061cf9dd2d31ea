"""Callbacks applied together with one store commit, each answered as it would be alone: what the
AsyncFleet's callbacks lane and the relay's owner (``serve --workers N``) apply with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._events import Outcome
from .errors import ParkingFullError, StoreError
from .fleet import Fleet

Payload = bytes | str | Mapping[str, Any]


def apply_one(fleet: Fleet, payload: Payload, key: str | None = None) -> Outcome | BaseException:
    """One callback, its error returned: a batch's calls each get their own answer."""
    try:
        return fleet.handle_callback(payload, key=key)
    except Exception as error:
        return error


def apply_together(
    fleet: Fleet, payloads: Sequence[Payload], keys: Sequence[str | None]
) -> list[Outcome | BaseException]:
    """Callbacks that came together, with one store commit; if the batch cannot be kept, each alone,
    for its own answer (what the batch kept before it failed answers as a duplicate)."""
    try:
        # (Without keys when none is set: the Fleet then reads no key for each callback.)
        routed = keys.count(None) != len(keys)
        return list(fleet.handle_callbacks(payloads, keys=keys if routed else None))
    except (StoreError, ParkingFullError):
        return [apply_one(fleet, payload, key) for payload, key in zip(payloads, keys, strict=True)]
