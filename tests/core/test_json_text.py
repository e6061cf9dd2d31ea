"""The stores' JSON: orjson's writing and the standard encoder's read back the same, and refuse alike.

``to_json`` writes with orjson where that is sure to be what the standard encoder writes, and
hands the rest to the standard encoder (``standard_json``). Whatever the value, both must give text
that ``json.loads`` reads back to one value (compared by repr: type, -0.0 and key order included),
or both refuse it with StoreError. ``read_stored``, which reads it back faster where it can, reads
each text as ``json.loads`` does.
"""

from __future__ import annotations

import enum
import json
import math
import sys
import tracemalloc
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamlife._jsontext import read_stored, standard_json, to_json
from streamlife.store.base import StoreError


class Colour(enum.Enum):
    RED = "red"
    PAIR = (1, 2)
    NOT_A_NUMBER = math.nan


class Level(enum.IntEnum):
    HIGH = 3


class Word(enum.StrEnum):
    HELLO = "hello"


class Renamed(dict[str, Any]):
    """A dict whose items() the standard encoder asks, and orjson would not."""

    def items(self) -> Any:
        return [(f"renamed {key}", item) for key, item in super().items()]


def moved_to_end(ordered: OrderedDict[str, Any], key: str) -> OrderedDict[str, Any]:
    ordered.move_to_end(key)  # the dict's storage keeps its first order; items() gives the new one
    return ordered


class Shouting(str):
    """A string subclass (orjson would read its storage; the standard encoder too)."""


@dataclass(frozen=True)
class Point:  # orjson writes a dataclass as an object; the standard encoder has no form for it
    x: int


# What JSON holds, and near it: what orjson writes otherwise (NaN, tuples, Enums, UUIDs, datetimes,
# dataclasses) or refuses (beyond 64 bits, lone surrogates).
NEAR_JSON = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64) - 2, max_value=2**64 + 2)  # both sides of orjson's 64 bits
    | st.floats()  # NaN and infinities included
    | st.text()  # lone surrogates included
    | st.sampled_from([Colour.RED, Colour.PAIR, Colour.NOT_A_NUMBER, Level.HIGH, Word.HELLO])
    | st.uuids()
    | st.sampled_from([datetime(2026, 11, 25, tzinfo=UTC), date(2026, 11, 25), Point(1)])
)
# And what no JSON holds, with non-string keys (the standard encoder writes some as text).
ANYTHING = NEAR_JSON | st.integers() | st.sampled_from([b"bytes", {1.5}, object()])
ANY_KEY = st.text() | st.integers(min_value=-(2**63), max_value=2**63) | st.none() | st.booleans()


Objects = st.SearchStrategy[dict[Any, Any]]


def objects(scalars: st.SearchStrategy[Any], keys: st.SearchStrategy[Any]) -> Objects:
    values = st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.lists(inner, max_size=3).map(tuple)
            | st.dictionaries(keys, inner, max_size=4)
        ),
        max_leaves=12,
    )
    return st.dictionaries(keys, values, max_size=5)


OBJECTS = objects(NEAR_JSON, st.text()) | objects(ANYTHING, ANY_KEY)
# Values orjson writes itself (no null in its text, nothing it refuses): the property above sends
# most of its values the standard way, so this one holds orjson's own writing to the standard one.
ORJSON_WRITES = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"]))
    | st.sampled_from([Colour.RED, Colour.PAIR, Level.HIGH, Word.HELLO])
    | st.uuids()
)


def read_back(write: Any, value: dict[Any, Any]) -> str:
    try:
        text = write(value)
    except StoreError as error:
        return f"refused: {type(error).__name__}"
    return repr(json.loads(text))


@given(OBJECTS)
def test_orjson_and_the_standard_encoder_read_back_alike(value: dict[Any, Any]) -> None:
    assert read_back(to_json, value) == read_back(standard_json, value)


@given(objects(ORJSON_WRITES, st.text(st.characters(exclude_categories=["Cs"]))))
def test_what_orjson_writes_reads_back_as_the_standard_encoders_text(value: dict[Any, Any]) -> None:
    assert read_back(to_json, value) == read_back(standard_json, value)


@given(OBJECTS)
def test_a_stored_text_reads_back_as_json_loads_reads_it(value: dict[Any, Any]) -> None:
    for write in (to_json, standard_json):
        try:
            text = write(value)
        except StoreError:
            continue
        assert repr(read_stored(text)) == repr(json.loads(text))


@pytest.mark.parametrize(
    "text",
    [
        '{"big": 18446744073709551616}',  # beyond orjson's 64 bits: a float there
        '{"small": -9223372036854775809}',
        '{"lone": "\\ud800"}',  # an escaped lone surrogate, which orjson refuses
        '{"nan": NaN, "inf": -Infinity}',  # the standard library's own constants
        '{"deep": ' + "[" * 500 + "]" * 500 + "}",
    ],
)
def test_what_orjson_reads_otherwise_is_read_as_json_loads_reads_it(text: str) -> None:
    assert repr(read_stored(text)) == repr(json.loads(text))


@pytest.mark.parametrize(
    "value",
    [
        {"ordered": moved_to_end(OrderedDict([("a", 1), ("b", 2)]), "a")},
        {"subclass": Renamed({"a": 1})},
        {"text": Shouting("quiet")},
        {"word": Word.HELLO, Word.HELLO: "as a key"},
    ],
)
def test_a_subclass_is_written_as_the_standard_encoder_writes_it(value: dict[Any, Any]) -> None:
    assert to_json(value) == standard_json(value)


def test_a_text_holds_no_more_memory_than_its_length() -> None:
    # orjson's bytes keep the 4 KiB buffer they were written in: a store keeping them held 4.5 KiB
    # per journaled event, where the text is a few hundred bytes.
    value = {"segment": {"index": 3, "final": True, "text": "words"}, "raw": {"data": list(range(40))}}
    with tracemalloc_running():
        before = tracemalloc.get_traced_memory()[0]
        texts = [to_json(value) for _ in range(100)]
        held = (tracemalloc.get_traced_memory()[0] - before) / len(texts)
    assert held < 1.5 * sys.getsizeof(texts[0]) < 1024


@contextmanager
def tracemalloc_running() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("value", "read"),
    [
        ({"x": Colour.RED, "y": Level.HIGH, "z": Word.HELLO}, {"x": "red", "y": 3, "z": "hello"}),
        ({"x": uuid.UUID(int=1)}, {"x": "00000000-0000-0000-0000-000000000001"}),
        ({"x": (1, (2,))}, {"x": [1, [2]]}),
        ({"x": 2**64}, {"x": 2**64}),  # beyond orjson: the standard encoder writes it
        ({"x": None, "y": 0.1}, {"x": None, "y": 0.1}),  # a null: written again, the same
        ({2: "two"}, {"2": "two"}),
    ],
)
def test_what_json_has_no_form_for_is_written_as_orjson_writes_it(value: dict[Any, Any], read: Any) -> None:
    assert repr(json.loads(to_json(value))) == repr(read)


@pytest.mark.parametrize(
    "value",
    [
        {"x": math.nan},
        {"x": [None, -math.inf]},  # a null beside it does not let it through
        {"x": Colour.NOT_A_NUMBER},
        {"x": datetime(2026, 11, 25, tzinfo=UTC)},
        {"x": b"bytes"},
        {"x": {1.5}},
    ],
)
def test_what_json_cannot_hold_is_refused(value: dict[Any, Any]) -> None:
    with pytest.raises(StoreError, match="not storable as JSON"):
        to_json(value)
