"""The ASGI application ``serve`` runs under uvicorn: the receiver, ``/healthz``, ``/metrics``, and
an access log that never shows the token.

``GET /healthz`` and ``GET /metrics`` (``HEAD`` too) are answered here; every other request goes to
the receiver's ASGI face (``WebhookReceiver.asgi``), which authenticates it. Neither endpoint asks
for the token: a load balancer's probe and a Prometheus scraper carry no secret, and giving them
the webhook's token would let them post callbacks. Neither says anything secret (``_health`` and
``_metrics`` say what each shows); keep them off the public side of the proxy all the same.

The token rides in the path (its last segment), and an access log prints paths: uvicorn's is off
(``access_log=False``), and this one logs ``streamlife.http_request`` at info with the path's last
segment masked, whatever it held (a wrong token may be an old right one), the method, the status
and the milliseconds taken; never the query string, never a header. Each callback's time also goes
to the latency histogram.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from streamlife._logging import enabled_for, get_logger

from ._health import Health
from ._metrics import INSTALL_HINT, Metrics
from ._webhook_server import JSON_TYPE, Response, json_response
from .webhook import AsgiApplication, AsgiMessage, hide_token

HEALTH_PATH: Final = "/healthz"
METRICS_PATH: Final = "/metrics"
MASK: Final = "***"
_INFO: Final = logging.INFO

_NO_METRICS: Final = json_response(404, error=f"metrics are not served: {INSTALL_HINT} for them")
_GET_ONLY: Final = json_response(405, (*JSON_TYPE, ("Allow", "GET, HEAD")), error="use GET")

Receive = Callable[[], Awaitable[AsgiMessage]]
Send = Callable[[AsgiMessage], Awaitable[None]]


def masked(path: str) -> str:
    """``path`` as it may be logged: its last segment (where a token rides) replaced by ``***``."""
    return path if path in (HEALTH_PATH, METRICS_PATH) else hide_token(path, MASK)


class OpsApplication:
    """``receiver`` (a ``WebhookReceiver.asgi``) with ``/healthz`` (``health``) and ``/metrics``
    (``metrics``; None: answered 404 with how to install them) beside it."""

    def __init__(self, receiver: AsgiApplication, health: Health, metrics: Metrics | None) -> None:
        self.receiver = receiver
        self.health = health
        self.metrics = metrics
        self._log = get_logger()
        self._scrapes = ThreadPoolExecutor(1, thread_name_prefix="streamlife-metrics")

    def close(self) -> None:
        self._scrapes.shutdown(wait=False, cancel_futures=True)
        self.health.close()

    async def __call__(self, scope: Mapping[str, Any], receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if path in (HEALTH_PATH, METRICS_PATH):
            await self._ops(scope, path, send)
            return
        started = time.perf_counter()
        status = 500  # the receiver raised: the server answers 500 (or closes, if it had answered)
        try:
            status = await self.receiver.answer(scope, receive, send)
        finally:
            seconds = time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.observe(seconds, status)
            if enabled_for(_INFO):
                self._access(scope, path, status, seconds)

    def _access(self, scope: Mapping[str, Any], path: str, status: int, seconds: float) -> None:
        client = scope.get("client")
        self._log.info(
            "streamlife.http_request",
            method=scope.get("method"),
            path=masked(path),
            status=status,
            ms=round(seconds * 1e3, 2),
            client=None if not client else str(client[0]),
        )

    async def _ops(self, scope: Mapping[str, Any], path: str, send: Send) -> None:
        method = scope.get("method")
        if method not in ("GET", "HEAD"):
            response = _GET_ONLY
        elif path == HEALTH_PATH:
            response = await self.health.answer()
        elif self.metrics is None:
            response = _NO_METRICS
        else:
            loop = asyncio.get_running_loop()
            body, content_type = await loop.run_in_executor(self._scrapes, self.metrics.render)
            response = Response(200, body, (("Content-Type", content_type),))
        await _send(send, response, head_only=method == "HEAD")
        if self._log.is_enabled_for(logging.DEBUG):  # probes come every few seconds: debug only
            self._log.debug("streamlife.http_request", method=method, path=path, status=response.status)


async def _send(send: Send, response: Response, *, head_only: bool = False) -> None:
    headers = [(name.lower().encode(), value.encode()) for name, value in response.headers]
    headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head_only else response.body})
