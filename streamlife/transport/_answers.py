"""What the memories.ai stream API's answers mean (its paths and fields: ``streamlife.protocol``).

An answer is the body of a success, or a typed error.

Shared by every transport (HTTP, and the simulator's in-process one), so both map an answer the
same way. The docs say the HTTP status equals the body's ``code``, but the code is typed as a
string and sent as an int, and legacy answers use ``"0429"``-style codes: both are read.
"""

from __future__ import annotations

import codecs
import email.utils
import json
import re
import time
from collections.abc import Collection, Mapping
from typing import Any, Final
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

import orjson

from streamlife._events import StartResult, StopResult, StreamKind
from streamlife.errors import (
    AuthError,
    CapacityError,
    MalformedAnswerError,
    OutcomeUnknownError,
    PaymentError,
    RateLimitedError,
    RejectedError,
    ServerError,
    ServiceError,
    TaskNotFoundError,
    cut,
)
from streamlife.protocol import (
    CAPACITY_REACHED,
    STOPPED_BY_USER,
    UNDERSTAND_CONCURRENCY,
    UNDERSTAND_CREDIT,
    UNDERSTAND_INVALID,
    UNDERSTAND_OK,
    UNDERSTAND_SERVER_ERROR,
    URL_FIELD,
)

# Re-exported, for the modules that import them from here (http.py, fleet.py, cli.py).

# The most characters of a server's message (or code) that an error keeps: errors are journaled,
# logged and shown, on every retry.
MAX_MESSAGE: Final = 1024
REDACTED: Final = "<redacted>"
# The shortest part of a stream URL scrubbed on its own (see stream_url_secrets).
MIN_SECRET_PART: Final = 8
_PERCENT_HEX: Final = re.compile(r"%[0-9A-F]{2}")
# delay-seconds, or a decimal fraction (see parse_retry_after). Few enough digits that float() of
# them is finite.
_DELAY_SECONDS: Final = re.compile(r"[0-9]{1,30}(?:\.[0-9]{1,9})?", re.ASCII)


def start_result(operation: str, body: Mapping[str, Any]) -> StartResult:
    task_id = task_id_of(body)
    if task_id is None:
        # Success without an id: a stream may exist that nobody can name. Never guess.
        raise OutcomeUnknownError("the service answered success without a task_id", operation=operation)
    return StartResult(task_id, outcome_message(body), body)


def stop_result(body: Mapping[str, Any], task_id: str) -> StopResult:
    # A status envelope's 14 says the stream stopped (Live Video Understanding's stop answer); the
    # other products' answers only acknowledge, and a status-14 callback follows.
    final = _scalar(body.get("status")) == STOPPED_BY_USER and "code" not in body
    return StopResult(task_id_of(body) or task_id, outcome_message(body), body, final=final)


def read_answer(
    operation: str, http: int, decoded: object, retry_after: str | None, *, secrets: Collection[str] = ()
) -> Mapping[str, Any]:
    """The body of a success, or the typed error for anything else.

    ``secrets`` (the API key; a start's stream URL, see ``start_secrets``) are scrubbed from the
    server's words before they reach an error: a server may echo them ("invalid api key: ...",
    "cannot pull rtmp://..."), and errors are journaled and logged.
    """
    body: Mapping[str, Any] = decoded if isinstance(decoded, Mapping) else {}
    if "code" not in body and _is_status(body.get("status")):
        return _read_status_answer(operation, http, body, retry_after, secrets)
    if operation.startswith(f"{StreamKind.UNDERSTAND.value}.") and "code" not in body and http < 300:
        # Live Video Understanding answers a status envelope, or (its older page) a code one:
        # a success in neither shape says nothing we can trust.
        raise MalformedAnswerError("an answer with no status and no code", operation=operation, status=http)
    code = _scalar(body.get("code"))
    code_text = None if code is None else str(code).strip()
    data = body.get("data")
    status_in_data = _scalar(data.get("status")) if isinstance(data, Mapping) else None

    def words() -> tuple[str, str | None]:
        """The server's message and code, scrubbed: made for an error only (a success shows neither)."""
        message = server_text(_message(body) or f"HTTP {http}", secrets)
        return message, None if code_text is None else server_text(code_text, secrets)

    def fail(kind: type[ServiceError]) -> ServiceError:
        message, shown_code = words()
        return kind(message, operation=operation, status=http, code=shown_code)

    if code_text == str(CAPACITY_REACHED) or str(status_in_data) == str(CAPACITY_REACHED):
        raise fail(CapacityError)
    if http == 429 or code_text in ("429", "0429"):
        message, shown_code = words()
        raise RateLimitedError(
            message,
            operation=operation,
            status=http,
            code=shown_code,
            retry_after=parse_retry_after(retry_after),
        )
    if http in (401, 403) or code_text in ("401", "403"):
        raise fail(AuthError)
    if http == 402 or code_text == "402":
        raise fail(PaymentError)
    if http >= 500 or (code_text is not None and code_text.startswith("5")):
        raise fail(ServerError)
    if http == 400 and operation.endswith(".stop"):
        raise fail(TaskNotFoundError)  # the documented meaning of 400 on stop
    if http >= 400 or (code_text is not None and code_text not in ("200", "0000")):
        raise fail(RejectedError)
    if not body:
        raise MalformedAnswerError(
            "a success whose body is not a JSON object", operation=operation, status=http
        )
    return body


def _read_status_answer(
    operation: str, http: int, body: Mapping[str, Any], retry_after: str | None, secrets: Collection[str]
) -> Mapping[str, Any]:
    """An answer in the ``{status, task_id, text}`` envelope (Live Video Understanding), read by
    its ``status`` whatever the HTTP status says: the docs give its codes in the body, and a
    ``{"status": -1}`` on HTTP 200 is a refusal, never a success. The HTTP status decides first
    only where it says more than the body can (429, 401/403, 402, 5xx)."""
    status = body["status"]
    text = _scalar(body.get("text"))
    message = server_text(str(text) if text not in (None, "") else f"status {status}", secrets)

    def fail(kind: type[ServiceError]) -> ServiceError:
        return kind(message, operation=operation, status=http, code=str(status))

    if http == 429:
        raise RateLimitedError(
            message,
            operation=operation,
            status=http,
            code=str(status),
            retry_after=parse_retry_after(retry_after),
        )
    if http in (401, 403):
        raise fail(AuthError)
    if http == 402 or status == UNDERSTAND_CREDIT:  # 2001: documented by a third party only
        raise fail(PaymentError)
    if http >= 500 or status == UNDERSTAND_SERVER_ERROR:
        raise fail(ServerError)
    if status == UNDERSTAND_CONCURRENCY:  # 1001, the cap of 4 per key: third party only
        raise fail(CapacityError)
    stopping = operation.endswith(".stop")
    if status == UNDERSTAND_INVALID:
        # "invalid request or task_id not found": a stop has no body and names the task in its
        # path, so on a stop the one thing that can be invalid is the task: not found, and so
        # not billing. On a start nothing was created.
        raise fail(TaskNotFoundError if stopping else RejectedError)
    if http >= 400:
        raise fail(RejectedError)
    if status == UNDERSTAND_OK or (stopping and status == STOPPED_BY_USER):
        return body
    # A status the docs give no meaning for: a start may have made a stream, a stop may not
    # have landed. Neither is guessed.
    raise OutcomeUnknownError(f"an answer with status {status} ({message})", operation=operation)


def _is_status(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def start_secrets(kind: StreamKind, params: Mapping[str, Any]) -> tuple[str, ...]:
    """What a start's answer must not show: its stream URL and the parts of it that may hold a key,
    and its callback URL (a task's own carries the signature that opens the task) and its parts."""
    found: tuple[str, ...] = ()
    for field in (URL_FIELD[kind], "callback"):
        url = params.get(field)
        if isinstance(url, str) and url:
            found += stream_url_secrets(url)
    return found


def stream_url_secrets(url: str) -> tuple[str, ...]:
    """The stream URL, and each part of it that may be a stream key on its own: the path's last
    segment, every query value and the password, each as written and percent-decoded.

    A server may quote only the part it could not use ("unknown stream key: ..."), so the whole
    URL is not enough. Only parts of at least ``MIN_SECRET_PART`` characters count: a stream key
    is long, and scrubbing short ones ("live", "1") everywhere would leave the message unreadable.
    The host, port, user name and the path's other segments name where the stream is, not who may
    publish to it, and stay readable.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL (an unclosed "[" host, a non-numeric port): only as a whole
        return (url,)
    candidates = [parts.path.rstrip("/").rpartition("/")[2], password or ""]
    candidates += [pair.partition("=")[2] for pair in parts.query.split("&")]
    found = {url}
    for candidate in candidates:
        found |= {candidate, unquote(candidate), unquote_plus(candidate)}
    return tuple(sorted(part for part in found if part == url or len(part) >= MIN_SECRET_PART))


def decode_json(raw: bytes) -> object:
    """The JSON in an answer's body, or None when there is none that can be read: not UTF-8, not
    JSON, or nested deeper than orjson's limit (1,024 levels; the stdlib parser would recurse
    until RecursionError instead). A UTF-8 byte order mark is ignored, as RFC 8259 allows."""
    try:
        return orjson.loads(raw.removeprefix(codecs.BOM_UTF8))
    except orjson.JSONDecodeError:
        return None


def server_text(text: str, secrets: Collection[str] = ()) -> str:
    """Words from the server, fit for an error's message: every form of each secret replaced by
    ``<redacted>``, then cut to ``MAX_MESSAGE`` characters, marked as cut. Control characters
    are kept (whoever displays the message escapes them). Scrubbed before cut, so a cut never
    leaves part of a secret behind."""
    for form in sorted(
        {form for secret in secrets if secret for form in _forms_of(secret)}, key=len, reverse=True
    ):
        text = text.replace(form, REDACTED)
    return cut(text, MAX_MESSAGE)


def _forms_of(secret: str) -> set[str]:
    """The ways a server may write a secret back: as it is, URL-encoded (upper- or lower-case
    hex, ``+`` or ``%20`` for a space), JSON-escaped (ASCII or not, ``/`` escaped or not)."""
    url_forms = {quote(secret, safe=""), quote(secret, safe="/"), quote_plus(secret)}
    url_forms |= {_PERCENT_HEX.sub(lambda hit: hit.group().lower(), form) for form in url_forms}
    json_forms = {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    json_forms |= {form.replace("/", "\\/") for form in json_forms}
    return {secret, *url_forms, *json_forms}


def _scalar(value: object) -> str | int | None:
    """A code or a status as the docs type them (a string, or an int as sent); anything else (a
    list, an object nested a thousand deep) is not a code at all, and the HTTP status decides."""
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds, or None when the header is absent or unreadable.

    RFC 9110 allows delay-seconds (ASCII digits) or an HTTP-date. A decimal fraction ("1.5") is
    read too: the simulator sends one, and a sender who writes it means it; waiting that long is
    harmless. Nothing else is: no sign, exponent, ``inf``, ``nan``, or non-ASCII digits, so the
    result is always finite and never negative. A huge valid value is returned as it is: callers
    cap it (the Fleet by its Policy; a transport never waits past its own deadline).
    """
    if value is None:
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when.timestamp() - time.time())


def task_id_of(body: Mapping[str, Any]) -> str | None:
    data = body.get("data")
    found = data.get("task_id") if isinstance(data, Mapping) else None
    found = found if found is not None else body.get("task_id")
    return found if isinstance(found, str) and found else None


def outcome_message(body: Mapping[str, Any]) -> str | None:
    """``data.message`` says what happened ("Audio stream stopped successfully"); the envelope's
    own message is only "success"."""
    data = body.get("data")
    found = data.get("message") if isinstance(data, Mapping) else None
    return found if isinstance(found, str) and found else _message(body)


def _message(body: Mapping[str, Any]) -> str | None:
    found = body.get("message") or body.get("msg")
    return found if isinstance(found, str) else None
