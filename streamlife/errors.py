"""The exceptions streamlife raises, all under one root so callers can catch them together.

    StreamlifeError
     ├── LocalTransitionError   a local call the lifecycle forbids (start twice); the task is untouched
     ├── CallbackError          a webhook payload that is not a valid callback (also a ValueError)
     │    └── MisroutedCallbackError  one a task's own callback URL does not open (another stream's)
     ├── UnknownTaskError       a task or task_id the Fleet does not hold (also a LookupError)
     ├── RecordedError          an error as a task recorded it (``task.last_error``), kept as text
     ├── StoreError             the journal store failed; what it was asked to write was not written
     │    └── StoreConflict         another writer took this version of the task first
     ├── JournalMismatch        replaying a journal did not give the stored row
     ├── LiveCapError           a start held back by ``Policy.max_live``: retried, then failed
     ├── ParkingFullError       no room to park a callback for an unknown task_id: deliver it again
     ├── StopAllError           ``stop_all`` could not journal some stops (it sent them all the same)
     └── TransportError         a request to memories.ai that did not succeed
          ├── NotSentError          provably never left (connect refused or timed out): safe to retry
          ├── OutcomeUnknownError   sent, but no usable answer (read timeout, dropped connection,
          │    │                    no whole answer within the request's deadline): a start may
          │    │                    have created a stream that bills
          │    ├── MalformedAnswerError  an answer that cannot be read: too large, cut short,
          │    │                         corrupt compression, or a success that is not a JSON object
          │    └── RedirectError         a 3xx: redirects are never followed; a start may exist
          └── ServiceError          the service answered with an error (``status``, ``code``)
               ├── AuthError            401 / 403: bad key, or the account lacks stream access
               ├── PaymentError         402: no credit; retrying will not help
               ├── TaskNotFoundError    400 on stop: the task is already gone (its end is confirmed)
               ├── RejectedError        any other 4xx: the request itself is wrong
               ├── RateLimitedError     429, with ``retry_after`` seconds if the service sent them
               ├── CapacityError        status 16: the account's concurrent-stream capacity is full
               └── ServerError          5xx: for a start, the stream may exist (treat as unknown)

Only a local call raises through the lifecycle. An impossible callback, transport result or
timer is recorded with outcome REJECTED and a reason (see ``streamlife.lifecycle``).

tests/core/test_errors.py holds the drawing to the classes below, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._task import StreamTask


# The most characters of an error's text that a task records. A server's message within it is
# already cut to 1,024 characters by the transport.
RECORDED_TEXT: Final = 2048


def cut(text: str, limit: int) -> str:
    """Return ``text`` cut to ``limit`` characters, with a note of how many were cut.

    Text that others wrote (a server's message, an error) must not grow an error, a journal or a
    log without bound.
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters cut]"


class StreamlifeError(Exception):
    """The root of every exception streamlife raises on purpose."""


class LocalTransitionError(StreamlifeError):
    """A local call (``start``, ``stop``) that the lifecycle table does not allow in the task's state.

    The task is left exactly as it was: same state, same history.
    """

    def __init__(self, *, task_ref: int, task_id: str | None, trigger: str, state: str) -> None:
        self.task_ref = task_ref
        self.task_id = task_id
        self.trigger = trigger
        self.state = state
        known_as = f"task {task_ref}" if task_id is None else f"task {task_ref} ({task_id})"
        super().__init__(f"cannot {trigger} {known_as}: it is {state}")


class CallbackError(StreamlifeError, ValueError):
    """A webhook payload that cannot be read as a memories.ai callback.

    ``field`` names the offending field as a dotted path (``data.segment_index``), or is None
    when the payload as a whole is unreadable (not JSON, not an object).
    """

    def __init__(self, field: str | None, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(problem if field is None else f"{field}: {problem}")


class MisroutedCallbackError(CallbackError):
    """A callback that came by a task's own callback URL (``CallbackUrls``) and that the task
    refuses: it names another stream than the task's, a stream another task holds, or a task this
    Fleet's store does not know. Nothing changed, and nothing was kept: a task's URL opens that
    task only. The receiver answers 403."""

    def __init__(self, problem: str) -> None:
        super().__init__("task_id", problem)


class UnknownTaskError(StreamlifeError, LookupError):
    """The Fleet was asked about a task, or a task_id, that it does not hold."""

    def __init__(self, what: str) -> None:
        super().__init__(f"this Fleet holds no task {what}")


class RecordedError(StreamlifeError):
    """An error as a task recorded it (``task.last_error``): the original's text, type name included.

    Replay reads it back from the journal, so a replayed task says what the live one said. The
    Fleet also makes one for a failure it describes itself (a start caught in flight by a restart).
    The error of a failed stop may carry ``not_before``: no stop may go out again before that time.
    It is the service's Retry-After, as the Fleet capped it, and it is journaled so that every
    process honours it.
    """

    def __init__(self, text: str, *, not_before: float | None = None) -> None:
        self.text = text
        self.not_before = not_before
        super().__init__(text)

    @staticmethod
    def text_of(error: BaseException) -> str:
        """The text a task records for ``error``: ``"TypeName: message"``, cut to ``RECORDED_TEXT``
        characters. Every failed stop journals its error, so the cut bounds the journal whatever a
        transport raises."""
        if isinstance(error, RecordedError):
            return error.text
        return cut(f"{type(error).__name__}: {error}", RECORDED_TEXT)


class StoreError(StreamlifeError):
    """The journal store could not do what it was asked; what it was asked to write was not written."""


class StoreConflict(StoreError):
    """Another writer claimed this version of the task (or made a task with this key) first."""


class ParkingFullError(StreamlifeError):
    """No room was left to park a callback for a task_id that no task holds yet.

    Nothing of the callback was kept. Deliver it again later: the webhook receiver answers 503 with
    ``Retry-After``, which lets a sender retry (a 200 would tell it the callback was taken).
    """

    def __init__(self, task_id: str, limit: str) -> None:
        self.task_id = task_id
        self.limit = limit
        super().__init__(f"no room to park a callback for an unknown task_id ({limit})")


class StopAllError(StreamlifeError):
    """``Fleet.stop_all`` could not journal the stop of some tasks.

    It still sent every stop it could, because a stream left running bills, and it raises this
    once they are sent.

    ``failures`` pairs each such task (or the task_id of a stream it could not adopt as an orphan)
    with the error the store raised; ``unsettled`` is what ``stop_all`` would have returned: every
    task not yet terminal.
    """

    def __init__(
        self,
        failures: Sequence[tuple[StreamTask | str, BaseException]],
        unsettled: Sequence[StreamTask],
    ) -> None:
        self.failures = tuple(failures)
        self.unsettled = tuple(unsettled)
        first = self.failures[0][1] if self.failures else None
        super().__init__(
            f"the stop of {len(self.failures)} task(s) could not be journaled"
            + ("" if first is None else f" (the first: {type(first).__name__}: {first})")
            + "; their stop requests were sent all the same"
        )


class JournalMismatch(StreamlifeError):
    """Replaying a task's journal did not give its stored row: the store is damaged or was edited."""


class LiveCapError(StreamlifeError):
    """A start was held back because it would pass a cap of ``Policy.max_live``.

    ``products`` are the products that cap counts together (one, for a product's own cap), and
    ``cap`` how many of their streams may be live at once. The request was never sent. The Fleet
    tries the start again after a backoff, within ``Policy.start_retry_window``; past the window,
    the task fails.
    """

    def __init__(self, cap: int, products: Sequence[str]) -> None:
        self.cap = cap
        self.products = tuple(products)
        if len(self.products) == 1:
            what = f"{self.products[0]} streams are"
        else:
            what = f"streams of {_and(self.products)} together are"
        super().__init__(f"{cap} {what} live already (Policy.max_live)")


def _and(names: Sequence[str]) -> str:
    """``audio``, ``audio and video``, ``audio, video and understand``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


class TransportError(StreamlifeError):
    """A request to memories.ai that did not succeed. Messages never contain the API key."""

    def __init__(self, message: str, *, operation: str) -> None:
        self.operation = operation  # e.g. "audio.start", "video.stop"
        super().__init__(f"{operation}: {message}")


class NotSentError(TransportError):
    """The request never reached the service, so nothing was created: even a start may be retried."""


class OutcomeUnknownError(TransportError):
    """The request was sent but no usable answer came back. A start may have created a stream."""


class MalformedAnswerError(OutcomeUnknownError):
    """An answer that cannot be read: larger than the transport's ``max_answer``, corrupt
    compression, cut short, or a success that is not a JSON object. Something read the request,
    so a start may have created a stream. A stop is retried. ``status`` is the HTTP status the
    answer began with."""

    def __init__(self, message: str, *, operation: str, status: int) -> None:
        self.status = status
        super().__init__(f"{message} (HTTP {status})", operation=operation)


class RedirectError(OutcomeUnknownError):
    """A 3xx answer. Redirects are never followed: one would send the request (a start's stream
    URL, its stream key) to a host nobody chose, or turn the POST into a GET.

    The memories.ai API documents no redirect, so the 3xx came from something that read the
    request: a proxy, or the service itself. A start MAY therefore have created a stream, and must
    not be sent again blindly. That is why this is an ``OutcomeUnknownError``: a ``ServiceError``
    would mean "refused, nothing created". A redirected stop did not land, and is retried.
    ``status`` is the HTTP status; the ``Location`` is not kept."""

    def __init__(self, *, operation: str, status: int) -> None:
        self.status = status
        super().__init__(f"redirected (HTTP {status}); redirects are not followed", operation=operation)


class ServiceError(TransportError):
    """The service answered, and the answer was an error."""

    def __init__(self, message: str, *, operation: str, status: int, code: str | None) -> None:
        self.status = status  # the HTTP status
        self.code = code  # the body's ``code`` as text: documented as a string, often sent as an int
        super().__init__(f"{message} (HTTP {status}, code {code})", operation=operation)


class AuthError(ServiceError):
    """401 or 403: the key is wrong or expired, or the account is not enabled for streams."""


class PaymentError(ServiceError):
    """402: the account has no credit left."""


class TaskNotFoundError(ServiceError):
    """400 on stop: "Invalid task_id or task not found". The task has already ended."""


class RejectedError(ServiceError):
    """Any other 4xx: the service refused the request as it was made."""


class RateLimitedError(ServiceError):
    """429: too many requests. ``retry_after`` is the wait the service asked for, if it said."""

    def __init__(
        self, message: str, *, operation: str, status: int, code: str | None, retry_after: float | None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, operation=operation, status=status, code=code)


class CapacityError(ServiceError):
    """Status 16: the account's concurrent-stream capacity is full. Retry later."""


class ServerError(ServiceError):
    """5xx: the service failed. A stop may be retried; a start may have created a stream."""
