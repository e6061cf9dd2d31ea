"""HttpTransport: the memories.ai stream API over one ``requests.Session``.

* The raw key goes in ``Authorization`` (no ``Bearer``: the API wants the key as it is). It lives
  only in the session's headers: never in a repr, an exception message or a log line.
* Every request has (connect, read) timeouts, and a deadline for the whole request that a
  server dripping its answer cannot stretch (see ``deadline.py``).
* Redirects are never followed: a 3xx is a ``RedirectError``.
* An answer is read in pieces, within ``max_answer`` bytes once decompressed; the server's words
  reach an error cut to ``answers.MAX_MESSAGE`` characters, with the key scrubbed out, and for a
  start its stream URL and the parts of it that may be a stream key (``stream_url_secrets``).
* Errors are mapped to ``streamlife.errors`` at this boundary, ``from`` the original exception.
* ``stop`` is retried on connection failures, 429 and 5xx, with capped full-jitter exponential
  backoff that honours ``Retry-After``, within a per-operation deadline.
* ``start`` is retried only when the request provably never left (connect refused or timed out):
  a start is billed and not idempotent, so a timeout after sending is reported as unknown.
"""

from __future__ import annotations

import http.client
import math
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import requests
import urllib3.exceptions

from streamlife._events import StartResult, StopResult, StreamKind
from streamlife._logging import get_logger
from streamlife.errors import (
    MalformedAnswerError,
    NotSentError,
    OutcomeUnknownError,
    RateLimitedError,
    RedirectError,
    ServerError,
    TransportError,
)
from streamlife.protocol import MAVI_BASE_URL, PATHS, UNDERSTAND_BASE_URL, stop_request

from ._answers import decode_json, read_answer, start_result, start_secrets, stop_result
from ._deadline import Deadline, GuardedAdapter
from ._reading import ACCEPT_ENCODING, UnreadableBody, read_body

DEFAULT_BASE_URL: Final = MAVI_BASE_URL  # audio and video
DEFAULT_UNDERSTAND_URL: Final = UNDERSTAND_BASE_URL  # Live Video Understanding
DEFAULT_MAX_ANSWER: Final = 1024 * 1024  # bytes of an answer, once decompressed; the API's are small
DEFAULT_TOTAL_TIMEOUT: Final = 20.0  # seconds for one request, from sending to its answer's last byte
_log = get_logger()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard ``stop`` (and a never-sent ``start``) tries before giving up.

    The wait before retry n (0-based) is uniform in [0, min(cap, base * 2**n)] ("full jitter"),
    or the service's ``Retry-After`` if that is longer. No retry starts after ``deadline``
    seconds from the first attempt, and no request runs past it (the last one is cut to fit).
    """

    attempts: int = 6
    base: float = 0.25
    cap: float = 8.0
    deadline: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, got {self.attempts}")
        if min(self.base, self.cap, self.deadline) <= 0:
            raise ValueError("RetryPolicy.base, cap and deadline must be positive")

    def backoff(self, retry: int, draw: Callable[[], float]) -> float:
        return draw() * min(self.cap, self.base * 2.0**retry)


class HttpTransport:
    """The real transport.

    ``timeout`` is (connect, read) in seconds, per socket operation. ``total_timeout`` bounds
    one request as a whole, however slowly its answer comes, and ``retry`` bounds the operation
    with its retries: each request gets the smaller of ``total_timeout`` and the time left.
    ``max_answer`` is the most bytes an answer may have once decompressed; a larger one is a
    ``MalformedAnswerError``.

    Each product has its base URL: ``base_url`` for audio and video (MAVI v2), ``understand_url``
    for Live Video Understanding, which lives on a host of its own. The transport mounts its own
    adapter on the session for each (the one whose sockets the deadline can shut down); the
    session's other settings (``verify``, proxies) still apply.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        understand_url: str = DEFAULT_UNDERSTAND_URL,
        timeout: tuple[float, float] = (3.05, 15.0),
        total_timeout: float = DEFAULT_TOTAL_TIMEOUT,
        max_answer: int = DEFAULT_MAX_ANSWER,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError("HttpTransport needs a non-empty API key")
        if len(timeout) != 2 or min(timeout) <= 0:
            raise ValueError(f"timeout must be (connect, read) seconds, both positive; got {timeout!r}")
        if not isinstance(total_timeout, int | float) or not 0 < total_timeout < math.inf:
            raise ValueError(f"total_timeout must be positive finite seconds; got {total_timeout!r}")
        if type(max_answer) is not int or max_answer < 1:
            raise ValueError(f"max_answer must be a whole number of bytes, at least 1; got {max_answer!r}")
        self.base_url = base_url.rstrip("/")
        self.understand_url = understand_url.rstrip("/")
        self.base_urls: Final = {
            StreamKind.AUDIO: self.base_url,
            StreamKind.VIDEO: self.base_url,
            StreamKind.UNDERSTAND: self.understand_url,
        }
        self.timeout = (float(timeout[0]), float(timeout[1]))
        self.total_timeout = float(total_timeout)
        self.max_answer = max_answer
        self.retry = retry or RetryPolicy()
        self._session = session or requests.Session()
        for url in {*self.base_urls.values()}:
            self._session.mount(url + "/", GuardedAdapter())
        self._session.headers.update({"Authorization": api_key, "Content-Type": "application/json"})
        self._sleep, self._monotonic, self._jitter = sleep, monotonic, jitter

    def __repr__(self) -> str:
        return (
            f"HttpTransport(base_url={self.base_url!r}, understand_url={self.understand_url!r},"
            f" timeout={self.timeout!r}, key=<redacted>)"
        )

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        kind = StreamKind(kind)
        operation = f"{kind.value}.start"
        body = self._call(
            operation,
            self.base_urls[kind] + PATHS[kind][0],
            dict(params),
            retry_unless_not_sent=True,
            secrets=start_secrets(kind, params),  # a stream URL often carries a stream key
        )
        return start_result(operation, body)

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        kind = StreamKind(kind)
        path, payload = stop_request(kind, task_id)
        body = self._call(f"{kind.value}.stop", self.base_urls[kind] + path, payload, within=within)
        return stop_result(body, task_id)

    def close(self) -> None:
        self._session.close()

    # -- one operation, with its retries ---------------------------------------------------------
    def _call(
        self,
        operation: str,
        url: str,
        payload: dict[str, Any] | None,
        *,
        retry_unless_not_sent: bool = False,
        within: float | None = None,
        secrets: tuple[str, ...] = (),
    ) -> Mapping[str, Any]:
        """POST with retries. A start passes ``retry_unless_not_sent``: only NotSentError retries.
        ``secrets`` are scrubbed from the server's words, as the key is."""
        policy = self.retry
        if within is not None and within <= 0:
            raise ValueError(f"within must be positive seconds, got {within!r}")
        budget = policy.deadline if within is None else min(policy.deadline, within)
        give_up_at = self._monotonic() + budget
        for attempt in range(policy.attempts):
            try:
                return self._post_once(operation, url, payload, give_up_at, secrets)
            except TransportError as error:
                retryable = isinstance(
                    error,
                    NotSentError
                    if retry_unless_not_sent
                    else NotSentError | OutcomeUnknownError | RateLimitedError | ServerError,
                )
                wait = policy.backoff(attempt, self._jitter)
                if isinstance(error, RateLimitedError) and error.retry_after is not None:
                    wait = max(wait, error.retry_after)
                last_attempt = attempt + 1 >= policy.attempts
                if not retryable or last_attempt or self._monotonic() + wait >= give_up_at:
                    raise
                _log.info(
                    "streamlife.http_retry",
                    operation=operation,
                    attempt=attempt + 1,
                    wait=round(wait, 3),
                    error=type(error).__name__,
                )
                self._sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _post_once(
        self,
        operation: str,
        url: str,
        payload: dict[str, Any] | None,
        give_up_at: float,
        secrets: tuple[str, ...] = (),
    ) -> Mapping[str, Any]:
        left = max(0.001, give_up_at - self._monotonic())
        timeout = (min(self.timeout[0], left), min(self.timeout[1], left))
        with Deadline(min(self.total_timeout, left)) as deadline:
            try:
                status, headers, raw = self._exchange(operation, url, payload, timeout)
            except Exception as exc:
                if deadline.finish() and not isinstance(exc, NotSentError):
                    raise self._too_late(operation, deadline) from exc
                raise
            if deadline.finish():
                raise self._too_late(operation, deadline)
        decoded = decode_json(raw)
        return read_answer(
            operation, status, decoded, headers.get("Retry-After"), secrets=(*self._secrets(), *secrets)
        )

    def _exchange(
        self, operation: str, url: str, payload: dict[str, Any] | None, timeout: tuple[float, float]
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One POST: its status, headers and whole body, or the typed error. Never follows a
        redirect; reads the body in pieces, within ``max_answer`` once decompressed."""
        response = self._send(operation, url, payload, timeout)
        with response:
            status = response.status_code
            try:
                return status, response.headers, self._body(operation, response)
            except BaseException:
                # Never hand back to the pool a connection in a state nobody knows: the answer's
                # rest (or the real answer after an interim one) would be read by the next request.
                response.raw.close()
                raise

    def _body(self, operation: str, response: requests.Response) -> bytes:
        status = response.status_code
        if status < 200:  # an interim answer (103, say) that http.client took for the final one
            raise MalformedAnswerError(
                f"an interim answer (HTTP {status})", operation=operation, status=status
            )
        if 300 <= status < 400:
            raise RedirectError(operation=operation, status=status)
        try:
            return read_body(response.raw, response.headers.get("Content-Encoding"), self.max_answer)
        except UnreadableBody as exc:
            raise MalformedAnswerError(str(exc), operation=operation, status=status) from exc
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise OutcomeUnknownError("no answer within the read timeout", operation=operation) from exc
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            raise OutcomeUnknownError(f"connection lost ({type(exc).__name__})", operation=operation) from exc

    def _send(
        self, operation: str, url: str, payload: dict[str, Any] | None, timeout: tuple[float, float]
    ) -> requests.Response:
        """POST, and read the answer's status and headers (not its body)."""
        try:
            return self._session.post(
                url,
                json=payload,  # None: no body at all (Live Video Understanding's stop)
                timeout=timeout,
                allow_redirects=False,
                stream=True,
                headers={"Accept-Encoding": ACCEPT_ENCODING},
            )
        except requests.exceptions.ConnectTimeout as exc:
            raise NotSentError("connect timed out", operation=operation) from exc
        except requests.exceptions.ConnectionError as exc:
            if _never_sent(exc):
                raise NotSentError(f"could not connect ({_reason(exc)})", operation=operation) from exc
            raise OutcomeUnknownError(f"connection lost ({_reason(exc)})", operation=operation) from exc
        except requests.exceptions.Timeout as exc:
            raise OutcomeUnknownError("no answer within the read timeout", operation=operation) from exc
        except requests.exceptions.RequestException as exc:
            raise OutcomeUnknownError(f"request failed ({type(exc).__name__})", operation=operation) from exc

    @staticmethod
    def _too_late(operation: str, deadline: Deadline) -> OutcomeUnknownError:
        return OutcomeUnknownError(
            f"no whole answer within the request's deadline ({deadline.seconds:.3g} s)", operation=operation
        )

    def _secrets(self) -> tuple[str, ...]:
        """What to scrub from the server's words: the key, read where it lives (the session)."""
        key = self._session.headers.get("Authorization")
        return (key,) if isinstance(key, str) else ()


def _cause(exc: requests.exceptions.RequestException) -> object:
    """The urllib3 error under a requests error (unwrapping MaxRetryError), or None."""
    cause: object = exc.args[0] if exc.args else None
    return cause.reason if isinstance(cause, urllib3.exceptions.MaxRetryError) else cause


def _never_sent(exc: requests.exceptions.ConnectionError) -> bool:
    """True when urllib3 failed before a byte of the request was written: refused, DNS, or a
    certificate the client would not trust. Any other TLS error may come after the request went
    out (a corrupt record in the answer), so it does not count."""
    cause = _cause(exc)
    if isinstance(cause, urllib3.exceptions.SSLError):
        return any(
            isinstance(inner, ssl.SSLCertVerificationError) for inner in (*cause.args, cause.__cause__)
        )
    return isinstance(cause, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError)


def _reason(exc: requests.exceptions.RequestException) -> str:
    # Only the type's name: urllib3's messages would be safe (no headers), but they are long.
    cause = _cause(exc)
    return type(cause).__name__ if isinstance(cause, BaseException) else type(exc).__name__
