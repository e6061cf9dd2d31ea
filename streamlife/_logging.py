"""Where streamlife's log events go: the application's logging, never a stream of its own.

A library's log lines belong to the application that embeds it. streamlife configures nothing:

* If the application configured structlog, each event goes through its pipeline, as structured as
  it was emitted (``structlog.get_logger("streamlife")``).
* If not, the event goes to the standard library's logger ``streamlife``, which has only a
  ``NullHandler``: nothing is printed until the application configures ``logging``, and then the
  events follow its levels and handlers (``logging.basicConfig()`` shows warnings on stderr). The
  event's name and keys ride on the record (``record.streamlife_event``, ``record.streamlife``),
  and the message reads ``event key=value ...``.

Without this, structlog's default prints every event, debug included, to stdout: an application
whose stdout is data, or a pytest run, would get a line per callback. The choice is made per
event, since an application may configure structlog after importing streamlife.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import structlog

NAME: Final = "streamlife"

_stdlib: Final = logging.getLogger(NAME)
_stdlib.addHandler(logging.NullHandler())  # (without one, logging's last resort prints warnings)
_structured: Final = structlog.get_logger(NAME)
# structlog's configuration object (not public: enabled_for falls back to get_config without it).
_structlog_config: Final = getattr(getattr(structlog, "_config", None), "_CONFIG", None)


class Logger:
    """streamlife's logger: ``debug``, ``info``, ``warning``, ``error`` and ``exception`` (an error
    with the traceback of the exception being handled), each an event name and its keys."""

    __slots__ = ("_context",)

    def __init__(self, context: dict[str, Any] | None = None) -> None:
        self._context = context or {}

    def is_enabled_for(self, level: int) -> bool:
        """Whether an event at ``level`` would be kept (``enabled_for``)."""
        return enabled_for(level)

    def bind(self, **context: Any) -> Logger:
        """A logger that adds ``context`` to every event."""
        return Logger({**self._context, **context})

    def debug(self, event: str, **keys: Any) -> None:
        self._log(logging.DEBUG, "debug", event, keys)

    def info(self, event: str, **keys: Any) -> None:
        self._log(logging.INFO, "info", event, keys)

    def warning(self, event: str, **keys: Any) -> None:
        self._log(logging.WARNING, "warning", event, keys)

    def error(self, event: str, **keys: Any) -> None:
        self._log(logging.ERROR, "error", event, keys)

    def exception(self, event: str, **keys: Any) -> None:
        self._log(logging.ERROR, "exception", event, keys)

    def _log(self, level: int, method: str, event: str, keys: dict[str, Any]) -> None:
        if self._context:
            keys = {**self._context, **keys}
        if structlog.is_configured():
            getattr(_structured, method)(event, **keys)
        elif _stdlib.isEnabledFor(level):
            message = " ".join([event, *(f"{key}={value!r}" for key, value in keys.items())])
            _stdlib.log(
                level,
                message,
                exc_info=method == "exception",
                extra={"streamlife_event": event, "streamlife": keys},
                stacklevel=3,  # (the caller of debug(), info(), ...)
            )


def get_logger() -> Logger:
    return Logger()


# Per level: (the wrapper class it was asked of, the answer).
_answers: dict[int, tuple[object, bool]] = {}
_NOT_ASKED: Final = (None, True)


def enabled_for(level: int) -> bool:
    """Whether an event at ``level`` would be kept, so that a hot path builds none that would
    not. With structlog configured: False only when the configured wrapper class says it filters
    the level out (structlog's filtering bound loggers, the usual production set-up); the answer
    is kept per wrapper class. Without: whether the ``streamlife`` logger takes the level."""
    # Read where structlog keeps them: is_configured() is a call, and get_config() would build a
    # dict of the whole configuration, and this is asked for each request and each segment.
    config = _structlog_config
    if not (config.is_configured if config is not None else structlog.is_configured()):
        return _stdlib.isEnabledFor(level)
    wrapper: Any = getattr(config, "default_wrapper_class", None)
    if wrapper is None:
        wrapper = structlog.get_config()["wrapper_class"]
    asked_of, answer = _answers.get(level, _NOT_ASKED)
    if wrapper is not asked_of:
        try:
            answer = bool(wrapper.is_enabled_for(None, level))  # a class-level level check
        except Exception:
            answer = True
        _answers[level] = (wrapper, answer)
    return answer


def debug_enabled() -> bool:
    """``enabled_for(logging.DEBUG)``: asked once for every segment."""
    return enabled_for(logging.DEBUG)
