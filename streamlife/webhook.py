"""The webhook receiver: memories.ai's callbacks in, a fast answer out.

``WebhookReceiver(fleet, token=...)`` is framework-agnostic at its core, ``handle(body, headers,
path)``, and a WSGI application when called (mount it in Flask, Django or any WSGI server). Its
``asgi`` is an ASGI 3 application that never blocks its event loop: given an ``AsyncFleet``, it
awaits it; given a ``Fleet``, it applies callbacks in threads of its own. The answer never waits
on the network: parse, apply, answer.
``serve_webhook`` runs it in a server of its own (``streamlife._webhook_server``).

    401  the token is missing or wrong (checked before the body is read)
    405  not a POST                      411  no Content-Length (WSGI, serve_webhook)
    400  a Content-Length that is not 1 to 18 ASCII digits (WSGI, serve_webhook): the body's
         framing cannot be trusted (RFC 9112, 6.3), so it is refused before the token is checked
    413  the body is over ``max_body``   415  a Content-Type that is not JSON
    400  not a callback: {"error": ..., "field": ...}; nothing changed (the Fleet keeps it as a
         dead letter, unless it came by a task's own URL: a replay would deliver it by task_id)
    200  {"outcome": "applied" | "duplicate" | "late" | "parked" | "foreign" | "rejected"}
    503  {"error": ...} with ``Retry-After: 1`` (``retry_after``): the sink cannot take the callback
         now (its journal store failed: ``StoreError``; no room to park it: ``ParkingFullError``);
         nothing was taken, deliver it again. The error text is fixed: a store's may quote a DSN.
    500  anything else the sink raised: the WSGI or ASGI server's own answer (and its log);
         ``serve_webhook`` answers {"error": ...} and logs ``streamlife.webhook_failed``

``serve_webhook`` answers four more itself: 408 when a request does not arrive whole within
``request_timeout``, 431 for a head over 16 KiB, 400 for a head that is not HTTP/1.x, and 503 with
``Retry-After: 1`` to a callback still waiting for a worker when the server shuts down.

memories.ai documents no signature on its webhooks, so a secret token authenticates them: the last
segment of the URL path (``https://you.example/memories/<token>``: the form the memories.ai console
can be given), or the ``X-Streamlife-Token`` header, or ``Authorization: Bearer <token>`` (for a
proxy in front). It is compared in constant time. The receiver fails closed: without a token it
refuses to exist unless told ``allow_unauthenticated=True``. The token never appears in a repr.

Rotating the token: ``previous_tokens`` are taken as the token is, task URLs signed with them too,
until they are dropped. A Live Video Understanding stream keeps the callback URL it was started
with, signed with the token of that day: drop a previous token only once every stream started under
it has ended, or its results are refused (401).

A task's own callback URL (``CallbackUrls``: a path ending ``/task/<key>/<sig>``, given to
memories.ai in a Live Video Understanding start) is authenticated by its signature instead,
computed again from the token and compared in constant time. It opens that one task and nothing
else: its callback goes to the sink with the task's key (``handle_callback(payload, key=key)``),
which applies it to that task, naming the stream if the start answer has not (or was lost), and
never parks it. One that names another stream is refused with 403 and changes nothing. A sink
whose ``handle_callback`` takes no ``key`` cannot be told the task, so its receiver takes no task
URL (401). Access logs mask the path's last segment, the token or the signature alike.
"""

from __future__ import annotations

import hmac
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeGuard, cast

from streamlife._logging import get_logger

from ._events import Outcome, OutcomeKind
from ._handoff import Handoff
from ._task_urls import MIN_TOKEN_LENGTH, CallbackUrls, verified_key
from ._webhook_server import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_WORKERS,
    JSON_TYPE,
    Response,
    WebhookServer,
    json_response,
    parse_content_length,
)
from .errors import CallbackError, MisroutedCallbackError, ParkingFullError, StoreError
from .store.base import DEAD_LETTER_MAX_BODY

__all__ = [
    "ASGI_THREADS",
    "DEFAULT_MAX_BODY",
    "DEFAULT_RETRY_AFTER",
    "MAX_PREVIOUS_TOKENS",
    "MIN_TOKEN_LENGTH",
    "TOKEN_HEADER",
    "AsgiApplication",
    "AsyncCallbackSink",
    "CallbackSink",
    "Response",
    "RunningReceiver",
    "WebhookReceiver",
    "serve_webhook",
]

# A callback is a few hundred bytes; a provider message a few KiB. A body let through is kept whole
# as a dead letter if the parser refuses it: the two limits are one.
DEFAULT_MAX_BODY: Final = DEAD_LETTER_MAX_BODY
TOKEN_HEADER: Final = "x-streamlife-token"
# Callbacks the ASGI face applies at once, as serve_webhook's workers: the sink serializes callbacks
# per task, so more threads buy little.
ASGI_THREADS: Final = DEFAULT_WORKERS
DEFAULT_RETRY_AFTER: Final = 1  # seconds: a store blip or a full parking lot clears quickly, or not at all
# Tokens taken besides the current one while it is rotated, at most: each costs every request a
# comparison, and rotations that overlap more than this are a mistake.
MAX_PREVIOUS_TOKENS: Final = 4

_log = get_logger()
_same: Final = hmac.compare_digest  # (read once: it is called three times for every request)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
AsgiMessage = MutableMapping[str, Any]


class CallbackSink(Protocol):
    """What the receiver hands callbacks to: a ``Fleet``, or anything that takes them as one does.

    A sink that takes a ``key`` keyword (``handle_callback(payload, *, key=None)``, as a ``Fleet``
    does) is given the task key of a verified task callback URL; one that does not is never given
    such a callback (the receiver refuses task URLs for it)."""

    def handle_callback(self, payload: bytes) -> Outcome: ...


class AsyncCallbackSink(Protocol):
    """What the ASGI face awaits instead: an ``AsyncFleet``. Its ``fleet`` takes callbacks for the
    receiver's blocking faces (WSGI, ``handle``, ``serve_webhook``), on their threads. A ``key``
    keyword, as for ``CallbackSink``."""

    async def handle_callback(self, payload: bytes) -> Outcome: ...

    @property
    def fleet(self) -> CallbackSink: ...


_UNAUTHORIZED: Final = json_response(401, error="a valid token is required")
_NOT_POST: Final = json_response(405, (*JSON_TYPE, ("Allow", "POST")), error="callbacks are POSTed")
_NO_LENGTH: Final = json_response(411, error="a Content-Length is required")
_NOT_JSON: Final = json_response(415, error="callbacks are JSON: Content-Type must be application/json")
# 400, not 411: a length was given, and it is malformed. RFC 9112 (6.3) asks for a 400 when the
# framing is invalid, and serve_webhook answers the same.
_BAD_LENGTH: Final = json_response(400, error="the Content-Length is not a whole number of bytes")
# Fixed texts, never the exception's: a store error may quote its connection string, password and all.
_STORE_DOWN: Final = "the journal store cannot take the callback now; deliver it again"
_PARKING_FULL: Final = "no room to park a callback for an unknown task_id now; deliver it again"
# Routed requests and apply_many's: (body, headers) or (body, headers, path).
Request = tuple[bytes, Mapping[str, str]] | tuple[bytes, Mapping[str, str], str | None]


class WebhookReceiver:
    """memories.ai's callbacks in, an answer out: the core ``handle``, WSGI when called, ``asgi``.

    ``fleet`` takes the callbacks: a ``Fleet`` (or any ``CallbackSink``), or an ``AsyncFleet`` (any
    ``AsyncCallbackSink``), which ``asgi`` awaits on its loop, and whose ``fleet`` the blocking
    faces call on their threads. ``token`` is the secret
    every request must carry (see the module's docstring); ``allow_unauthenticated=True`` runs
    without one, deliberately. ``previous_tokens`` (at most ``MAX_PREVIOUS_TOKENS``) are taken as
    well while the token is rotated. A body over ``max_body`` bytes is refused unread (413). When the sink
    cannot take a callback now (its store failed, or there is no room to park it) the answer is 503
    with ``Retry-After: <retry_after>`` seconds.
    """

    def __init__(
        self,
        fleet: CallbackSink | AsyncCallbackSink,
        *,
        token: str | None = None,
        previous_tokens: Iterable[str] = (),
        allow_unauthenticated: bool = False,
        max_body: int = DEFAULT_MAX_BODY,
        retry_after: int = DEFAULT_RETRY_AFTER,
    ) -> None:
        if token is None and not allow_unauthenticated:
            raise ValueError(
                "a webhook receiver needs a token: memories.ai signs nothing, so the token is what"
                " keeps strangers out (or pass allow_unauthenticated=True, deliberately)"
            )
        if token is not None and (not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH):
            raise ValueError(f"the webhook token must be a string of {MIN_TOKEN_LENGTH} characters or more")
        previous = _previous_tokens(token, previous_tokens)
        if not isinstance(max_body, int) or max_body < 1:
            raise ValueError(f"max_body must be a positive number of bytes, got {max_body!r}")
        if not isinstance(retry_after, int) or isinstance(retry_after, bool) or retry_after < 0:
            raise ValueError(f"retry_after must be a whole number of seconds, 0 or more, got {retry_after!r}")
        self.fleet = fleet
        # The sink the blocking faces call; ``asgi`` awaits an async one itself.
        self.sink = fleet.fleet if is_async_sink(fleet) else cast(CallbackSink, fleet)
        self.max_body = max_body
        self.retry_after = retry_after
        self._token = None if token is None else token.encode()
        self._previous: Final = previous
        _check_callback_urls(self.sink, token)
        # Task URLs are taken only with a token to verify them, by sinks that can be told the task.
        takes_key = _takes_key(self.sink.handle_callback) and _takes_key(fleet.handle_callback)
        self._routes: Final = self._token is not None and takes_key
        # Whether the sink's batch form takes keys too (``Fleet.handle_callbacks``).
        self._many_keys: Final = _takes_key(getattr(self.sink, "handle_callbacks", None), "keys")
        self.asgi: Final = AsgiApplication(self)

    def __repr__(self) -> str:
        guard = "token=<redacted>" if self._token is not None else "unauthenticated"
        if self._previous:
            guard += f", previous_tokens=<{len(self._previous)} redacted>"
        return f"WebhookReceiver({guard}, max_body={self.max_body}, fleet={self.fleet!r})"

    # -- the framework-agnostic core --------------------------------------------------------------
    def handle(self, body: bytes, headers: Mapping[str, str], path: str = "/") -> Response:
        """Answer one POST: ``body`` as received, its ``headers`` (any case), the request ``path``."""
        lowered = {name.lower(): value for name, value in headers.items()}
        refusal = self.screen("POST", path, lowered, len(body))
        if refusal is not None:
            return refusal
        return self.apply(body, lowered, path)

    def screen(
        self, method: str, path: str, headers: Mapping[str, str], content_length: int | None
    ) -> Response | None:
        """The answer to a request refused on its head alone, before a byte of its body is read:
        405, 401, 411 (``content_length`` is None: none was given) or 413; None when the body is
        worth reading. ``headers`` are lower-cased."""
        refusal = self.screen_head(method, path, headers)
        if refusal is not None:
            return refusal
        if content_length is None:
            return _NO_LENGTH
        if content_length > self.max_body:
            return _too_large(self.max_body)
        return None

    def screen_head(self, method: str, path: str, headers: Mapping[str, str]) -> Response | None:
        """``screen`` for a request whose length may be unknown until its body is read (ASGI):
        405 or 401, None when the body is worth reading. ``headers`` are lower-cased."""
        if method != "POST":
            return _NOT_POST
        if not self.authorized(path, headers):
            return _UNAUTHORIZED
        return None

    def route(self, path: str | None) -> str | None:
        """The key of the task whose own callback URL ``path`` is, its signature verified; None
        for any other path (or a wrong signature)."""
        if not self._routes or path is None or self._token is None:
            return None
        for token in (self._token, *self._previous):  # (a URL signed before a rotation too)
            key = verified_key(token, path)
            if key is not None:
                return key
        return None

    def authorized(self, path: str, headers: Mapping[str, str]) -> bool:
        """Whether the request carries the token (path, header or bearer), or comes by a task's
        own callback URL with its signature right (``route``); ``headers`` lower-cased."""
        if self._token is None:
            return True
        sent = headers.get(TOKEN_HEADER, "").encode()
        return self._admit(path, sent, headers.get("authorization", "").encode()) is not None

    def _admit(self, path: str, sent: bytes, authorization: bytes) -> str | None:
        """``authorized`` and ``route`` at once, from the ``X-Streamlife-Token`` (``sent``) and
        ``Authorization`` values, their text as UTF-8 (``b""`` when absent): the key of the task
        whose verified callback URL ``path`` is; ``""`` for a request that carries the token (or
        any request, without one); None for a request to refuse (401)."""
        token = self._token
        if token is None:
            return ""
        if "/task/" in path:  # (no task URL without it: the usual path is not one)
            key = self.route(path)
            if key is not None:
                return key
        bearer = authorization[7:] if authorization and authorization[:7].lower() == b"bearer " else b""
        last = path.rstrip("/").rpartition("/")[2].encode()
        # Every candidate is compared (``|``, not ``or``), so the time taken says nothing about which
        # one came close.
        matched = _same(last, token) | _same(sent, token) | _same(bearer, token)
        for previous in self._previous:  # (none, unless the token is being rotated)
            matched |= _same(last, previous) | _same(sent, previous) | _same(bearer, previous)
        return "" if matched else None

    def _unavailable(self, error: str) -> Response:
        return json_response(503, (*JSON_TYPE, ("Retry-After", str(self.retry_after))), error=error)

    def apply(self, body: bytes, headers: Mapping[str, str], path: str | None = None) -> Response:
        """Answer a request that ``screen`` let through, its ``body`` read whole: 415 unless its
        Content-Type is JSON, else what the sink makes of the callback. ``headers`` lower-cased;
        ``path``, the request's: a task's own callback URL sends the callback to that task."""
        refusal = _refuse_type(headers)
        if refusal is not None:
            return refusal
        key = self.route(path)
        # memories.ai documents no retry policy for its webhooks: whether, and when, it delivers a
        # callback again after an error is not ours to know. A 503 with Retry-After is the answer
        # that lets a sender retry; a 200 would tell it the callback was taken.
        try:
            if key is None:
                outcome = self.sink.handle_callback(body)
            else:
                outcome = self.sink.handle_callback(body, key=key)  # type: ignore[call-arg]
        except (CallbackError, StoreError, ParkingFullError) as error:
            return self.refusal(error)
        return _answer(outcome)

    def refusal(self, error: CallbackError | StoreError | ParkingFullError) -> Response:
        """The answer to a callback the sink refused: 400 for a payload that is no callback, 503
        when it cannot be taken now."""
        if isinstance(error, CallbackError):
            return _answer(error)
        _log.warning("streamlife.webhook_unavailable", error=type(error).__name__)
        return self._unavailable(_STORE_DOWN if isinstance(error, StoreError) else _PARKING_FULL)

    def apply_many(self, requests: Sequence[Request]) -> list[Response]:
        """``apply`` for several requests at once, each answered as ``apply`` would answer it alone:
        each a ``(body, headers)`` or a ``(body, headers, path)``.

        A sink with ``handle_callbacks`` (a ``Fleet``) takes their callbacks with one store commit
        (ASGI, under load: ``_handoff``). If that raises (the store failed; no room to park), each
        callback is applied alone instead, for its own answer: nothing of a failed batch was kept,
        and what a batch kept before it failed answers as a duplicate."""
        many = getattr(self.sink, "handle_callbacks", None)
        keys = [self.route(request[2] if len(request) > 2 else None) for request in requests]
        routed = any(key is not None for key in keys)
        if many is None or len(requests) < 2 or (routed and not self._many_keys):
            return [self.apply(*request) for request in requests]
        answers: list[Response | None] = [_refuse_type(request[1]) for request in requests]
        taken = [n for n, answer in enumerate(answers) if answer is None]
        try:
            bodies = [requests[n][0] for n in taken]
            results = many(bodies, keys=[keys[n] for n in taken]) if routed else many(bodies)
        except (StoreError, ParkingFullError):
            results = [self.apply(*requests[n]) for n in taken]
        for n, result in zip(taken, results, strict=True):
            answers[n] = result if isinstance(result, Response) else _answer(result)
        return [answer for answer in answers if answer is not None]

    # -- WSGI ------------------------------------------------------------------------------------
    def __call__(self, environ: Mapping[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        response = self._wsgi(environ)
        start_response(response.status_line, [*response.headers, ("Content-Length", str(len(response.body)))])
        return [response.body]

    def _wsgi(self, environ: Mapping[str, Any]) -> Response:
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        path = f"{environ.get('SCRIPT_NAME', '')}{environ.get('PATH_INFO', '')}"
        try:
            # PEP 3333: CONTENT_LENGTH "may be empty or absent" when there is none.
            length = parse_content_length(environ.get("CONTENT_LENGTH") or None)
        except ValueError:
            return _BAD_LENGTH  # checked first, as serve_webhook does on parsing the head
        refusal = self.screen(str(environ.get("REQUEST_METHOD")), path, headers, length)
        if refusal is not None:  # before a byte of the body is read
            return refusal
        assert length is not None  # screen refused a request without one
        # Only for a positive length: read() of a negative one, or of none, reads until the client
        # closes, without bound.
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        return self.apply(body, headers, path)


class AsgiApplication:
    """The receiver as an ASGI 3 application (HTTP only): ``receiver.asgi``, to mount or to hand to an
    ASGI server (``uvicorn module:receiver.asgi``).

    An object with an ``async def __call__``, not a method: ASGI servers that inspect an application
    to tell ASGI 3 from ASGI 2 (uvicorn) see a coroutine function in it, where a bound method shows
    them none. A receiver of an ``AsyncFleet`` awaits it (which batches callbacks the same way, on
    threads of its own; on the loop only when they cannot block it: see ``streamlife.aio``). A
    receiver of a ``Fleet`` applies each callback in one of ``ASGI_THREADS`` threads, never on the
    event loop: the sink's store may block (a PostgreSQL round trip, SQLite waiting for its lock),
    and the loop serves every other request meanwhile. Under load, callbacks that queue up together
    are applied together (``WebhookReceiver.apply_many``: one store commit, each answered as it
    would be alone), in the context (``contextvars``) of the first of them.
    """

    def __init__(self, receiver: WebhookReceiver) -> None:
        self.receiver = receiver
        fleet = receiver.fleet
        self._async = fleet if is_async_sink(fleet) else None
        # Its own threads, not the event loop's default executor: the bound is the receiver's, and
        # blocking callbacks cannot starve what else the application runs there. None start
        # until the first callback. Their answers come back in batches under load (_handoff).
        self._threads = Handoff(ASGI_THREADS, "streamlife-asgi")
        # Callbacks queued together share a store commit, with a sink that takes them so (a Fleet).
        self._many = self._apply_many if callable(getattr(receiver.sink, "handle_callbacks", None)) else None
        # A receiver that screens requests its own way (a subclass) is asked through its methods;
        # the usual one is answered without decoding every header for them.
        self._screens_own = any(
            getattr(type(receiver), name) is not getattr(WebhookReceiver, name)
            for name in ("screen_head", "authorized")
        )

    def __repr__(self) -> str:
        return f"AsgiApplication({self.receiver!r})"

    async def __call__(
        self,
        scope: Mapping[str, Any],
        receive: Callable[[], Awaitable[AsgiMessage]],
        send: Callable[[AsgiMessage], Awaitable[None]],
    ) -> None:
        await self.answer(scope, receive, send)

    async def answer(
        self,
        scope: Mapping[str, Any],
        receive: Callable[[], Awaitable[AsgiMessage]],
        send: Callable[[AsgiMessage], Awaitable[None]],
    ) -> int:
        """The application's work, returning the status it answered: for an application in front
        (``serve``'s) that counts answers by status, without a wrapper around ``send`` for each
        request."""
        if scope.get("type") != "http":
            raise ValueError(f"the webhook receiver serves HTTP, not {scope.get('type')!r}")
        receiver = self.receiver
        path = scope.get("root_path", "") + scope.get("path", "")
        headers: dict[str, str] | None = None  # every header, decoded: read only where needed
        content_type: str | bytes | None
        key: str | None  # the task whose own URL ``path`` is; "" for none
        head: tuple[tuple[bytes, bytes], ...] | None = None  # the answer's ASGI headers, if known yet
        if self._screens_own:
            headers = _decoded_headers(scope)
            response = receiver.screen_head(str(scope.get("method")), path, headers)
            key = receiver.route(path) or ""
            content_type = headers.get("content-type")
        else:
            # Only the three headers the receiver reads, their values as sent: the rest are
            # skipped undecoded.
            wanted = _WANTED_HEADERS
            found: dict[str, bytes] = {}
            for name, value in scope["headers"]:
                known = wanted.get(name)
                if known is None:
                    if name.islower():  # (as ASGI servers give them: no other case to try)
                        continue
                    known = wanted.get(name.lower())
                    if known is None:
                        continue
                found[known] = value
            content_type = found.get("content-type")
            if scope.get("method") != "POST":
                response = _NOT_POST
            elif (
                key := receiver._admit(
                    path, _as_text(found.get(TOKEN_HEADER)), _as_text(found.get("authorization"))
                )
            ) is None:
                response = _UNAUTHORIZED
            else:
                response = None
        if response is None:
            # A callback's body comes in one message: read here, without a coroutine of its own.
            message = await receive()
            body = message.get("body", b"")
            if message.get("more_body", False):
                body = await _read_rest(receive, body, receiver.max_body)
            elif len(body) > receiver.max_body:
                body = None
            if body is None:
                response = _too_large(receiver.max_body)
            elif (refusal := _type_refusal(content_type)) is not None:
                response = refusal
            elif (sink := self._async) is not None:
                try:
                    if key:
                        outcome = await sink.handle_callback(body, key=key)  # type: ignore[call-arg]
                    else:
                        outcome = await sink.handle_callback(body)
                except (CallbackError, StoreError, ParkingFullError) as error:
                    response = receiver.refusal(error)
                else:
                    plain = _PLAIN_ANSWERS.get(id(outcome))
                    if plain is not None and plain[0] is outcome:
                        _, response, head = plain
                    else:
                        response = _answer(outcome)
            else:
                headers = _decoded_headers(scope) if headers is None else headers
                response = await self._apply_in_thread(body, headers, path)
        if head is None:
            usual = _USUAL_HEADS.get(id(response))
            head = usual[1] if usual is not None and usual[0] is response else _asgi_head(response)
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                # With its length, the answer goes out whole, not chunked.
                # A copy: middleware may add to a response's headers in place.
                "headers": list(head),
            }
        )
        await send({"type": "http.response.body", "body": response.body})
        return response.status

    def _apply_many(self, requests: list[Request]) -> list[Response]:
        return self.receiver.apply_many(requests)

    async def _apply_in_thread(self, body: bytes, headers: Mapping[str, str], path: str) -> Response:
        # In the caller's context, as asyncio.to_thread does, so that what a caller bound to
        # structlog's contextvars (a request id) is in the log lines of the callback it sent.
        return await self._threads.call(self.receiver.apply, body, headers, path, many=self._many)


def hide_token(path: str, mask: str) -> str:
    """``path`` as it may be shown: its last segment, where the token rides (``authorized``), as
    ``mask``."""
    head, slash, last = path.rstrip("/").rpartition("/")
    return f"{head}{slash}{mask}" if last else path


def _previous_tokens(token: str | None, given: Iterable[str]) -> tuple[bytes, ...]:
    """``previous_tokens`` as the receiver compares them: each a token as good as ``token`` must be;
    one equal to ``token`` left out."""
    if isinstance(given, (str, bytes)):  # (a token would be taken as its characters)
        raise TypeError("previous_tokens is a list of tokens, not one token")
    tokens = list(given)
    if tokens and token is None:
        raise ValueError("previous_tokens need a token: they are taken beside it while it is rotated")
    if len(tokens) > MAX_PREVIOUS_TOKENS:
        raise ValueError(f"at most {MAX_PREVIOUS_TOKENS} previous tokens, got {len(tokens)}")
    for previous in tokens:
        if not isinstance(previous, str) or len(previous) < MIN_TOKEN_LENGTH:
            raise ValueError(f"a previous token must be a string of {MIN_TOKEN_LENGTH} characters or more")
    return tuple(dict.fromkeys(previous.encode() for previous in tokens if previous != token))


def _takes_key(method: object, name: str = "key") -> bool:
    """Whether ``method`` takes a keyword ``name`` (a sink that can be told a callback's task)."""
    if not callable(method):
        return False
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    taken = parameters.get(name)
    return taken is not None and taken.kind in (taken.KEYWORD_ONLY, taken.POSITIONAL_OR_KEYWORD)


def _check_callback_urls(sink: object, token: str | None) -> None:
    """Refuse a receiver that cannot verify the task URLs its sink's Fleet gives memories.ai: every
    result of theirs would be refused (401)."""
    urls = getattr(sink, "callback_urls", None)
    if not isinstance(urls, CallbackUrls):
        return
    if token is None or not urls.signs_with(token):
        raise ValueError(
            "the Fleet's callback_urls are signed with another token than this receiver's: give both"
            " the same token, or the receiver refuses every task URL"
        )


def is_async_sink(sink: object) -> TypeGuard[AsyncCallbackSink]:
    """Whether ``sink`` is awaited (an ``AsyncFleet``), not called (a ``Fleet``)."""
    return inspect.iscoroutinefunction(getattr(sink, "handle_callback", None))


async def _read_rest(
    receive: Callable[[], Awaitable[AsgiMessage]], first: bytes, max_body: int
) -> bytes | None:
    """The rest of a body whose ``first`` chunk said more follows; None once it is over
    ``max_body``."""
    chunks, size, more = [first], len(first), True
    while more and size <= max_body:
        message = await receive()
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
    return None if size > max_body else b"".join(chunks)


def _decoded_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    """An ASGI request's headers as the receiver's methods take them: names lower-cased, values
    decoded as WSGI decodes them (latin-1)."""
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}


def _as_text(value: bytes | None) -> bytes:
    """A header's bytes (None: it was not sent) as ``authorized`` compares them on every face:
    decoded as latin-1 (as WSGI does), then written as UTF-8, as the token is."""
    if value is None:
        return b""
    return value if value.isascii() else value.decode("latin-1").encode()


def _refuse_type(headers: Mapping[str, str]) -> Response | None:
    return _type_refusal(headers.get("content-type"))


def _type_refusal(content_type: str | bytes | None) -> Response | None:
    """415 for a Content-Type (decoded, or as ASGI gives it) that is not JSON; None for one that
    is, or for none. Worked out once for each of the few a sender uses."""
    if content_type is None:
        return None
    # (A cache each: a str and a bytes key of the same text hash alike, and comparing them warns.)
    kept: dict[Any, bool] = _JSON_TYPES_SENT if isinstance(content_type, bytes) else _JSON_TYPES
    json = kept.get(content_type)
    if json is None:
        json = _is_json(content_type.decode("latin-1") if isinstance(content_type, bytes) else content_type)
        if len(kept) < _JSON_TYPES_KEPT:
            kept[content_type] = json
    return None if json else _NOT_JSON


# What the receiver looks up for every request instead of working it out again, bounded: a client
# choosing the strings must not grow it without end.
_JSON_TYPES: Final[dict[str, bool]] = {}  # a Content-Type -> whether it is JSON
_JSON_TYPES_SENT: Final[dict[bytes, bool]] = {}  # the same, as ASGI gives it
_JSON_TYPES_KEPT: Final = 64
# The headers the ASGI face reads, by their lower-cased names as ASGI gives them.
_WANTED_HEADERS: Final = {name.encode(): name for name in ("content-type", TOKEN_HEADER, "authorization")}


def _answer(result: Outcome | CallbackError) -> Response:
    """The answer to what the sink made of a callback: 400 for a payload that is no callback, 403
    for one a task's own URL does not open."""
    if isinstance(result, MisroutedCallbackError):
        return json_response(403, error=str(result), field=result.field)
    if isinstance(result, CallbackError):
        return json_response(400, error=str(result), field=result.field)
    if result.reason is None:
        return _PLAIN_OUTCOMES[result.kind]  # most answers: made once
    return json_response(200, outcome=result.kind.value, reason=result.reason)


_PLAIN_OUTCOMES: Final = {kind: json_response(200, outcome=kind.value) for kind in OutcomeKind}


def _asgi_head(response: Response) -> tuple[tuple[bytes, bytes], ...]:
    """An answer's headers as ASGI sends them, with its length."""
    return (
        *((name.lower().encode(), value.encode()) for name, value in response.headers),
        (b"content-length", str(len(response.body)).encode()),
    )


# The usual answers' ASGI headers, made once: by identity (the answer is kept beside them, so its
# id is not reused), which costs less than hashing an answer for every request.
_USUAL_HEADS: Final = {
    id(response): (response, _asgi_head(response))
    for response in (*_PLAIN_OUTCOMES.values(), _UNAUTHORIZED, _NOT_POST, _NOT_JSON)
}
# The shared outcomes' answers and their ASGI headers, by identity (each kept beside them, so its
# id is not reused): what the ASGI face looks up for most callbacks, one lookup for both.
_PLAIN_ANSWERS: Final = {
    id(outcome): (outcome, answer, _USUAL_HEADS[id(answer)][1])
    for outcome in (Outcome.APPLIED, Outcome.DUPLICATE, Outcome.LATE, Outcome.PARKED, Outcome.FOREIGN)
    for answer in (_PLAIN_OUTCOMES[outcome.kind],)
}


def _too_large(max_body: int) -> Response:
    return json_response(413, error=f"the body is over {max_body} bytes")


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


# -- a server to run it in ---------------------------------------------------------------------------
@dataclass
class RunningReceiver:
    """What ``serve_webhook`` yields: its ``server`` (``server_address``, the limits in force), the
    ``thread`` it runs in, and its ``url``."""

    server: WebhookServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        host, port = self.server.server_address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextmanager
def serve_webhook(
    receiver: WebhookReceiver,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    workers: int = DEFAULT_WORKERS,
) -> Iterator[RunningReceiver]:
    """Run ``receiver`` in a server of its own on ``host:port`` until the block ends.

    Each request must arrive whole within ``request_timeout`` seconds of its connection (else 408);
    at most ``max_connections`` are open (and no more than half the process's descriptor limit),
    the oldest incomplete one evicted for a newcomer; ``workers`` threads apply the callbacks.
    When the block ends the server stops accepting, answers 503 to the callbacks still waiting for
    a worker, and gives those a worker holds ``request_timeout`` to finish: after it returns, no
    callback reaches ``receiver`` (only a sink call that outlasts ``request_timeout`` may still run).
    How and why: ``streamlife._webhook_server``. It speaks plain HTTP: in production, put a reverse
    proxy in front for TLS (and its own limits); a busy endpoint can instead mount the receiver in
    the WSGI or ASGI server it already runs.
    """
    server = WebhookServer(
        receiver,
        host,
        port,
        request_timeout=request_timeout,
        max_connections=max_connections,
        workers=workers,
    )
    thread = threading.Thread(target=server.serve_forever, name="streamlife-webhook", daemon=True)
    thread.start()
    try:
        yield RunningReceiver(server, thread)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
