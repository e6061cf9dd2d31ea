"""The JSON dialect: what streamlife reads from a callback's body, and what it writes to a store.

The two halves are one policy: whatever a callback brings in, every store can keep, and all three
stores read it back equal. The dialect is RFC 8259 JSON, held to these rules:

- Numbers are finite. NaN and the infinities are not JSON: they are refused when read, and when
  written (PostgreSQL's JSON has none). So is a number beyond any float (``1e400``), which JSON's
  grammar allows and no journal can keep. Integers are exact at any size.
- Nesting stops at ``DEEP`` (300) levels. Real callbacks nest a handful; the limit is counted, not
  left to the stack, so a body is refused with a reason, whatever form it came in.
- Text is UTF-8. A byte order mark before a body is skipped, as RFC 8259 allows.
- A key given twice keeps its last value, as both parsers read it.
- A callback is an object. One handed over as objects is copied into JSON's own types (dicts with
  string keys, lists, strings, finite numbers, booleans and None), and anything else is refused.
- Text is written compact. A tuple is written as an array, and reads back as a list. An Enum
  member is written as its value, and a UUID as its text. Any other object JSON has no form for
  (a datetime, bytes, a set) is refused. (One exception, for a caller who means it: an
  ``orjson.Fragment``, text its maker vouches is JSON, is written as it is where orjson writes the
  value, and refused where the standard encoder does. The Fleet hands the stores none: a callback
  is copied into JSON's own types.)

A body that breaks a rule is a ``CallbackError`` that names where (``read_object``); a value that
cannot be written is a ``StoreError`` (``to_json``). A body refused is still kept, as the bytes
``dead_letter_body`` makes of it, whatever it holds.

The standard library decides what JSON is, and says why when a text is not. orjson, which is
faster, does the work where its result is sure to be the same: it reads a body of bytes
(``_fast_json``) and a store's text (``read_stored``), and writes a value with no ``null`` in it
(``to_json``). Property tests hold each pair to the same result; bench/RESULTS.md shows what each
costs a callback.
"""

from __future__ import annotations

import enum
import json
import math
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from .errors import CallbackError, StoreError

# Levels of nesting a callback may have. Real ones have a handful; the standard library's stack
# takes 300, and past 255 orjson cannot write a journal entry and the standard library must.
DEEP: Final = 300
_TOO_DEEP: Final = f"nested deeper than {DEEP} levels, as no callback is"
_BOM: Final = b"\xef\xbb\xbf"
_DIGITS_AS_ZERO: Final = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER: Final = b"0" * 19
_KINDS: Final = {type(None): "null", bool: "a boolean", str: "a string", list: "an array", dict: "an object"}


def kind_of(value: object) -> str:
    """What JSON calls a value's type ("a number", "an object"), for an error message; never the
    value itself, which may be huge."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return _KINDS.get(type(value), type(value).__name__)


def read_object(payload: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    """The JSON object in a callback's body (bytes or text), or one handed over as objects, copied;
    a CallbackError, and only that, for anything outside the dialect."""
    if isinstance(payload, bytes):
        fast = _fast_json(payload)
        if fast is not None:
            return fast
    return _standard_decode(payload)


def _standard_decode(payload: object) -> Mapping[str, Any]:
    """The payload decoded by the standard library: what every payload reads as, and the error
    that says why one is refused."""
    if isinstance(payload, bytes):
        try:
            # RFC 8259 lets a parser skip a byte order mark (cut here: "utf-8-sig" is slower).
            payload = payload[3:].decode() if payload.startswith(_BOM) else payload.decode()
        except UnicodeDecodeError as exc:
            raise CallbackError(None, f"not UTF-8: {exc.reason} at byte {exc.start}") from exc
    if isinstance(payload, str):
        payload_text = payload
        try:
            payload = _json(payload)
        except CallbackError:
            raise
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the stack
            raise CallbackError(None, f"not JSON: {str(exc)[:200]}") from exc
        if type(payload) is not dict and not isinstance(payload, Mapping):
            raise CallbackError(None, f"not an object: {kind_of(payload)}")
        if _could_nest(payload_text) and _deeper_than(payload, DEEP):
            raise CallbackError(None, _TOO_DEEP)
        return payload
    if not isinstance(payload, Mapping):
        raise CallbackError(None, f"not an object: {kind_of(payload)}")
    plain: dict[str, Any] = _plain(payload)
    return plain


def _fast_json(body: bytes) -> dict[str, Any] | None:
    """The body as orjson reads it, faster, when that is sure to be what the standard library
    reads; None otherwise, and the standard library reads it.

    Sure means: orjson took it, it is an object, it has no run of 19 digits, and it cannot nest 300
    deep (it is shorter than 600 bytes, or has fewer than 300 brackets). orjson refuses what the
    standard library takes (a byte order mark, an escaped lone surrogate), and then the standard
    library decides, refusal message included. But it reads an integer beyond 64 bits as a float,
    and the shortest such integer has 19 digits (-9223372036854775809); a run inside a string sends
    the body the slow way too, harmlessly. And it takes nesting 1,024 deep, where the standard
    library runs out of stack at about 1,000 (less on a deep stack): a body that could nest so deep
    goes the standard way. (Counting brackets would add much to orjson's reading of a
    callback, so a short body, which cannot nest so deep, is not counted: a level takes two bytes.)
    Property tests hold both readings to the same result.
    """
    if len(body) >= 2 * DEEP and body.count(b"[") + body.count(b"{") >= DEEP:
        return None
    if _long_number_in(body):
        return None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if type(value) is dict else None


def read_stored(text: str) -> Any:
    """JSON text a store kept (``to_json``'s, or ``standard_json``'s) read back as ``json.loads``
    reads it. orjson reads it, faster, unless it holds a run of 19 digits (see ``_fast_json``) or
    orjson refuses it (a lone surrogate, NaN: the standard library's writing). Catching up with
    another process's events reads every entry it journaled: this is on a shared store's hot
    path. (orjson also reads nesting deeper than the standard library's stack allows, which no
    stored text has: a callback nests at most ``DEEP`` levels.)"""
    try:
        body = text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return json.loads(text)
    if not _long_number_in(body):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def _long_number_in(body: bytes) -> bool:
    """Whether ``body`` has a run of 19 digits: the shortest integer beyond orjson's 64 bits. (Every
    digit mapped to 0, then ``find``: cheaper than a regular expression, and than ``in``, see _NULL.)"""
    return body.translate(_DIGITS_AS_ZERO).find(_LONG_NUMBER) != -1


def _json(text: str) -> Any:
    # ``raw_decode`` reads the value alone, without ``decode``'s two whitespace scans: a payload
    # with whitespace around it, or something after it, goes to ``decode``, which skips the one
    # and says what the other is.
    try:
        value, end = _JSON.raw_decode(text)
        if end == len(text):
            return value
    except ValueError:
        pass
    return _JSON.decode(text)


def _plain(value: object, path: str | None = None, depth: int = 1) -> Any:
    """A payload handed over as objects, copied into JSON's own shapes, as it would have been
    decoded from text: dicts with string keys, lists, strings, finite numbers, booleans and None.
    Every store can keep it (no mappingproxy, no tuple), and a caller who changes its object later
    changes no event and no journal. Anything else is a CallbackError naming where it is: no store
    could keep it (a NaN, a datetime), so a retry could never succeed, and text could not hold it.
    So is nesting deeper than ``DEEP``, counted here rather than left to the stack: the limit is
    the same as for text, and the refusal names where, whatever the caller's stack allows."""
    if isinstance(value, (Mapping, list, tuple)) and depth > DEEP:
        raise CallbackError(path, _TOO_DEEP)
    if isinstance(value, Mapping):
        copied: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CallbackError(path, f"not JSON: a non-string key ({type(key).__name__})")
            copied[key] = _plain(item, key if path is None else f"{path}.{key}", depth + 1)
        return copied
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{path or ''}[{n}]", depth + 1) for n, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise CallbackError(path, f"not JSON: {value} has no JSON form")
    if value is None or isinstance(value, (str, int, float)):  # (a bool is an int)
        return value
    raise CallbackError(path, f"not JSON: a {type(value).__name__} has no JSON form")


def _could_nest(text: str) -> bool:
    """Whether JSON text is long enough, with brackets enough, to nest ``DEEP`` deep."""
    return len(text) >= 2 * DEEP and text.count("[") + text.count("{") >= DEEP


def _deeper_than(value: object, levels: int) -> bool:
    """Whether the objects and arrays of decoded JSON nest more than ``levels`` deep."""
    if isinstance(value, dict):
        inside: Iterable[object] = value.values()
    elif isinstance(value, list):
        inside = value
    else:
        return False
    return levels == 0 or any(_deeper_than(item, levels - 1) for item in inside)


def _refuse_constant(name: str) -> Any:
    raise CallbackError(None, f"not JSON: {name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: JSON allows the digits, no journal can keep the value
        raise CallbackError(None, f"not JSON a journal can keep: {text[:40]} is beyond any float")
    return value


# One decoder for every payload: ``json.loads`` with an option builds a new one per call.
_JSON: Final = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite)


def to_json(value: Mapping[str, Any]) -> str:
    """``value`` as JSON text; StoreError for what JSON cannot hold. orjson writes it where its text
    is sure to be the standard encoder's (it took the value, and wrote no ``null``), the standard
    encoder otherwise.

    Text, not orjson's bytes: a bytes object orjson returns keeps the whole buffer it was written
    in, whatever its length, so a store that kept them would hold that buffer for every journaled
    event. The text decoded from them is its own length.
    """
    try:
        text = orjson.dumps(value, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:  # beyond 64 bits, a lone surrogate, a non-string key...
        return standard_json(value)
    if text.find(_NULL) != -1:  # a NaN or an infinity perhaps: orjson writes them as null
        return standard_json(value)
    return text.decode()


def dead_letter_body(payload: bytes | str | Mapping[str, Any]) -> bytes:
    """A payload, as ``Fleet.handle_callback`` takes it, as the bytes its dead letter keeps.

    Bytes are kept as they came. Text is kept as UTF-8, a lone surrogate written as the JSON escape
    that reads back as the same character (``\\ud800``). A mapping (a caller that parsed the JSON
    itself) is kept as JSON, and a value JSON has no form for (which may be why it was refused) as
    its ``repr``, so that the letter still shows what came.
    """
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8", "backslashreplace")
    try:
        text = json.dumps(payload, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):  # a non-string key, a cycle, nesting too deep
        text = repr(payload)
    return text.encode("utf-8", "backslashreplace")


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
# Sought in bytes with ``find``: ``in`` first tries the needle as an integer (``65 in b"A"``), and
# builds the TypeError it then drops, on every callback.
# orjson writes a datetime as ISO text and a dataclass as an object, which the standard encoder
# refuses, and a subclass as its storage holds it: passed through, they raise, and the standard
# encoder decides.
_ORJSON_OPTIONS: Final = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
)
# One encoder: ``json.dumps`` with options builds a new one per call.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_as_orjson_writes)
