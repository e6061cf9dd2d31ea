"""The command line's option values: read from text, refused with a message argparse shows."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from typing import Any, Final, TypeVar

from streamlife._events import StreamKind

Number = TypeVar("Number", int, float)


def _read(text: str, convert: Callable[[str], Number], what: str) -> Number:
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def positive_int(text: str) -> int:
    value = _read(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _read(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    value = _read(text, float, "a number")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def seconds(text: str) -> float:
    value = _read(text, float, "a number")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be seconds, 0 or more, got {text}")
    return value


# A duration's units, in seconds: 30d, 12h, 90m, 3600s.
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The longest duration: a cutoff so far back is still a date that can be shown (years from 1).
_MOST_YEARS: Final = 1000
_MOST_SECONDS: Final = _MOST_YEARS * 365.25 * 86400


def duration(text: str) -> float:
    """A span of time, as a number with its unit (``30d``, ``12h``, ``90m``, ``3600s``), in seconds."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if found is None:
        raise argparse.ArgumentTypeError(f"want a duration such as 30d, 12h, 90m or 3600s, got {text!r}")
    value = float(found[1]) * _UNITS[found[2]]
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a duration above 0, got {text!r}")
    if value > _MOST_SECONDS:
        raise argparse.ArgumentTypeError(f"must be a duration of {_MOST_YEARS} years at most, got {text!r}")
    return value


def port(text: str) -> int:
    value = _read(text, int, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {value}")
    return value


def letter_id(text: str) -> int:
    value = _read(text, int, "a dead letter's id")
    if not 1 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"a dead letter's id is a whole number from 1, got {text}")
    return value


def letter_id_or_zero(text: str) -> int:
    return 0 if text.strip() == "0" else letter_id(text)


def param(text: str) -> tuple[str, Any]:
    name, equals, raw = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"want KEY=VALUE, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return name.strip(), value


def stream_kinds(text: str) -> tuple[StreamKind, ...]:
    """``audio,video,understand``: stream kinds, each once, in the order given."""
    names = [name.strip() for name in text.split(",")]
    known = {kind.value: kind for kind in StreamKind}
    unknown = [name for name in names if name not in known]
    if not text.strip() or unknown:
        raise argparse.ArgumentTypeError(
            f"not stream kinds: {text!r} (each of {', '.join(known)}, separated by commas)"
        )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"each kind once: {text!r}")
    return tuple(known[name] for name in names)
