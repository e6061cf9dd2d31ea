"""Reading a request's head: HTTP/1.x as this server accepts it, and nothing looser.

The rules are strict because a callback's framing must not be guessed. A head is a request line
and header lines, at most ``MAX_HEAD`` bytes through its blank line. The method and each header
name are tokens (RFC 9110). A bare CR or LF inside a line is refused: RFC 9112 refuses it, and it
can hide a header. Two different Content-Lengths are refused: which body is meant cannot be told.
A Content-Length is 1 to ``MAX_LENGTH_DIGITS`` ASCII digits, the one rule for this server and the
WSGI receiver. A Transfer-Encoding leaves the request without a length, and the receiver answers
411: callbacks carry a length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, urlsplit

MAX_HEAD: Final = 16 * 1024  # a callback's request line and headers are a few hundred bytes
# A Content-Length: ASCII digits only, and few enough for any body this side of an exabyte. int()
# alone would also take "-1", " 5", "+5", "1_0" and other scripts' digits.
MAX_LENGTH_DIGITS: Final = 18
HEAD_END: Final = b"\r\n\r\n"

_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a header name or a method (RFC 9110)
_DIGITS: Final = re.compile(f"[0-9]{{1,{MAX_LENGTH_DIGITS}}}")


class Malformed(ValueError):
    """The request's head is not HTTP/1.x as this server reads it."""


@dataclass(frozen=True, slots=True)
class Head:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    length: int | None  # None: no Content-Length (or a Transfer-Encoding, which this server refuses)
    size: int  # bytes from the request line through the blank line

    @property
    def expects_continue(self) -> bool:
        return self.headers.get("expect", "").lower() == "100-continue"


def parse_head(raw: bytes) -> Head:
    """The head in ``raw``: the bytes before its blank line. ``Malformed`` if it breaks a rule."""
    request_line, *lines = raw.decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise Malformed(request_line)
    method, target, _version = parts
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name) or "\r" in value or "\n" in value:
            raise Malformed(line)  # (a bare CR or LF: RFC 9112 refuses it, and it hides a header)
        key, value = name.lower(), value.strip(" \t")
        if key in headers and key == "content-length" and headers[key] != value:
            raise Malformed(line)  # two lengths: which body is meant cannot be told
        headers[key] = f"{headers[key]}, {value}" if key in headers and key != "content-length" else value
    return Head(method, _path(target), headers, _content_length(headers), len(raw) + len(HEAD_END))


def _path(target: str) -> str:
    if target.startswith(("http://", "https://")):
        try:
            target = urlsplit(target).path or "/"
        except ValueError:  # an absolute form with a host that is none ("http://[/...")
            raise Malformed(target) from None
    elif not target.startswith("/"):
        raise Malformed(target)
    return unquote(target.partition("?")[0], encoding="latin-1")


def _content_length(headers: dict[str, str]) -> int | None:
    if "transfer-encoding" in headers:
        return None  # a chunked body: refused with 411, as callbacks carry a length
    try:
        return parse_content_length(headers.get("content-length"))
    except ValueError as error:
        raise Malformed(str(error)) from None


def parse_content_length(value: str | None) -> int | None:
    """The byte count a Content-Length value gives, None for no value; ``ValueError`` unless it is
    1 to ``MAX_LENGTH_DIGITS`` ASCII digits. The one rule for this server and the WSGI receiver."""
    if value is None:
        return None
    if not _DIGITS.fullmatch(value):
        raise ValueError(f"not a Content-Length: {value[:40]!r}")
    return int(value)
