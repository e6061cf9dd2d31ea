"""JSON text as every store keeps it: compact, and only what JSON can hold.

One dialect for the three stores, so a value the memory store keeps in a test, SQLite and PostgreSQL
keep in production, and all three read it back equal:

- NaN and infinities are refused (they are not JSON, and PostgreSQL's JSON has none), as is any
  object JSON has no form for (a datetime, bytes, a set), and nesting deeper than the stack;
- a tuple is written as an array, and reads back as a list;
- an Enum member is written as its value, and a UUID as its text (orjson writes them so, and the
  standard encoder is made to agree).

(One exception, for a caller who means it: an ``orjson.Fragment``, text its maker vouches is JSON,
is written as it is where orjson writes the value, and refused where the standard encoder does,
which cannot read one. The Fleet hands the stores none: a callback is copied into JSON's own types.)

orjson writes it where that is sure to be what the standard encoder writes: a value with no
``null`` in it, in a third of the standard encoder's time (an event's entry, most of the time).
Otherwise the standard encoder writes it: where orjson refuses what the standard encoder takes
(integers beyond 64 bits, lone surrogates, keys that are not strings), where a subclass of a dict,
list, string or number is met (orjson reads their storage, not their overridden methods), and
wherever orjson's text holds a ``null``, which may be a NaN or an infinity orjson wrote so (a
task's row, whose facts hold None, is written so: a little slower than the standard encoder
alone). A property test holds the two writings to the same value read back, and the same
refusals. Read it back with ``json.loads``, which reads both writings exactly.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Mapping
from typing import Any, Final

import orjson

from .errors import StoreError


def to_json(value: Mapping[str, Any]) -> str:
    """``value`` as JSON text; StoreError for what JSON cannot hold.

    Text, not orjson's bytes: a bytes object orjson returns keeps the 4 KiB buffer it was written
    in, whatever its length, so a store that kept them held 4.5 KiB per journaled event. The text
    decoded from them is its own length.
    """
    text = _by_orjson(value)
    return standard_json(value) if text is None else text.decode()


def _by_orjson(value: Mapping[str, Any]) -> bytes | None:
    """orjson's text for ``value``; None where it is not sure to be the standard encoder's."""
    try:
        text = orjson.dumps(value, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:  # beyond 64 bits, a lone surrogate, a key that is no string...
        return None
    return None if _NULL in text else text  # (a NaN or an infinity perhaps: orjson writes them as null)


def standard_json(value: Mapping[str, Any]) -> str:
    """``value`` as the standard library's encoder writes it, in the same dialect as ``to_json``."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: nested beyond the stack
        raise StoreError(f"not storable as JSON: {exc}") from exc


def _as_orjson_writes(value: object) -> Any:
    """What orjson writes for an object the standard encoder has no form for: an Enum's value, a
    UUID's text. Anything else is refused."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_NULL: Final = b"null"
# orjson writes a datetime as ISO text and a dataclass as an object, which the standard encoder
# refuses, and a subclass as its storage holds it: passed through, they raise, and the standard
# encoder decides.
_ORJSON_OPTIONS: Final = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
)
# One encoder: ``json.dumps`` with options builds a new one per call.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_as_orjson_writes)
