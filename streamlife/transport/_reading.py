"""Read an answer's body within a size limit that holds after decompression.

The body is read in pieces and inflated here, with zlib's ``max_length``, so memory stays near
the limit whatever the server sends: an endless body, or a small gzip that inflates without end.
"""

from __future__ import annotations

import zlib
from typing import Final, Protocol

CHUNK: Final = 64 * 1024  # bytes read off the connection at a time
ACCEPT_ENCODING: Final = "gzip, deflate"  # what the transport asks for; anything else is refused
_WBITS: Final = {  # zlib's window bits per Content-Encoding
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": zlib.MAX_WBITS,  # RFC 9110: "deflate" is the zlib format
}


class UnreadableBody(Exception):
    """The body could not be read whole within the limit; ``str()`` says why, in a few words."""


class RawBody(Protocol):
    """urllib3's response, as read here: the bytes as sent, not decoded."""

    def read(self, amt: int | None = None, decode_content: bool | None = None) -> bytes: ...


def read_body(raw: RawBody, content_encoding: str | None, limit: int) -> bytes:
    """The decoded body, at most ``limit`` bytes; raises ``UnreadableBody`` past it, for an
    encoding not asked for, or for corrupt compression."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return _read_plain(raw, limit)
    if encoding not in _WBITS:
        raise UnreadableBody(f"an answer in an encoding that was not asked for ({encoding[:40]!r})")
    return _read_compressed(raw, zlib.decompressobj(_WBITS[encoding]), limit)


def _read_plain(raw: RawBody, limit: int) -> bytes:
    body = bytearray()
    while piece := raw.read(CHUNK, decode_content=False):
        body += piece
        _check_size(len(body), limit)
    return bytes(body)


def _read_compressed(raw: RawBody, inflater: zlib._Decompress, limit: int) -> bytes:
    body = bytearray()
    try:
        while piece := raw.read(CHUNK, decode_content=False):
            if inflater.eof:
                raise UnreadableBody("data after the end of the compressed answer")
            while piece:
                # One byte over the room left is enough to know the limit is passed.
                body += inflater.decompress(piece, limit - len(body) + 1)
                _check_size(len(body), limit)
                piece = inflater.unconsumed_tail
        body += inflater.flush()
    except zlib.error as exc:
        raise UnreadableBody("corrupt compression in the answer") from exc
    _check_size(len(body), limit)
    if not inflater.eof or inflater.unused_data:
        raise UnreadableBody("a compressed answer cut short, or with data after its end")
    return bytes(body)


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise UnreadableBody(f"an answer larger than max_answer ({limit} bytes)")
