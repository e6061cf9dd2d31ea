"""A FastAPI application that starts and stops memories.ai streams and takes their webhooks.

It mounts streamlife's ASGI webhook receiver (``WebhookReceiver(fleet, token=...).asgi``) at
``/memories/<token>`` (the URL to give the memories.ai console, behind a TLS proxy), beside a
small API of its own:

    POST /streams                  {"kind": "audio", "url": "rtmp://...", "provider": "assemblyai"}
                                   or {"kind": "video", "url": "rtmp://...", "options": {"fps": 2}}
    GET  /streams                  every stream, as below
    GET  /streams/{task_id}        {"task_id", "kind", "state", "segments", "text", "unsafe", ...}
    POST /streams/{task_id}/stop   stops it; answers once it is stopped (or within 10 s)

The Fleet is an ``AsyncFleet``: the endpoints await it, and what may block (a request to
memories.ai, the store) runs in its threads, never on the event loop; the receiver awaits it for
each callback. The application's lifespan takes back the tasks a previous run left (``recover()``,
from the journal in ``STREAMLIFE_STORE``, ``sqlite:streamlife.db``) and runs the Fleet's timers.

Against the simulator of memories.ai, with no key: uvicorn on ``PORT`` (8000), and the simulator
on another loopback port, posting its webhooks to this application::

    python examples/fastapi_app.py
    curl -X POST localhost:8000/streams -H 'Content-Type: application/json' \\
         -d '{"kind": "video", "url": "rtmp://example.invalid/cam", "options": {"fps": 2}}'

Or run the simulator in a terminal of its own (``streamlife sim serve --webhook
http://127.0.0.1:8000/memories/$STREAMLIFE_WEBHOOK_TOKEN``) and give this application its URL in
``MEMORIES_BASE_URL`` (``http://127.0.0.1:8790/serve/api/v2``) and its key, ``sk-mai-simulated``.

Against memories.ai: set ``MEMORIES_API_KEY`` and ``STREAMLIFE_WEBHOOK_TOKEN`` (16 characters or
more), then ``python examples/fastapi_app.py`` again, or
``uvicorn --factory --app-dir examples fastapi_app:create_app``. ``MEMORIES_BASE_URL`` points it
at another base URL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import ExitStack, asynccontextmanager, suppress
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from streamlife import AsyncFleet, ManualClock, StreamKind, StreamTask, UnknownTaskError
from streamlife.protocol import URL_FIELD
from streamlife.sim import RealTime, SimulatedService, serve_http
from streamlife.store import MemoryStore, open_store
from streamlife.transport import DEFAULT_BASE_URL, HttpTransport
from streamlife.webhook import WebhookReceiver


class Start(BaseModel):
    kind: Literal["audio", "video"]
    url: str
    provider: Literal["assemblyai", "elevenlabs"] | None = None  # audio only
    options: dict[str, Any] = {}  # the rest of the start body: language_code, fps, max_logos...


class Stream(BaseModel):
    """What the API shows of a task (never its start body: a stream URL may hold a stream key)."""

    task_id: str | None
    kind: str
    state: str
    segments: int
    text: str | None  # audio: the final transcript
    unsafe: list[int | None] | None  # video: the segments found unsafe
    final_callback_missing: bool
    error: str | None

    @classmethod
    async def of(cls, task: StreamTask) -> Stream:
        # A long stream's older segments are read back from the store: off the event loop.
        return await asyncio.to_thread(cls._read, task)

    @classmethod
    def _read(cls, task: StreamTask) -> Stream:
        segments = list(task.transcript)
        unsafe = [s.index for s in segments if (m := s.moderation) is not None and m.has_unsafe_content]
        return cls(
            task_id=task.task_id,
            kind=task.kind.value,
            state=task.state.value,
            segments=len(segments),
            text=task.transcript_text() if task.kind is StreamKind.AUDIO else None,
            unsafe=unsafe if task.kind is StreamKind.VIDEO else None,
            final_callback_missing=task.final_callback_missing,
            error=task.last_error,
        )


def create_app(env: Mapping[str, str] = os.environ) -> FastAPI:
    """The application, configured from ``env``: ``MEMORIES_API_KEY``, ``STREAMLIFE_WEBHOOK_TOKEN``,
    and optionally ``MEMORIES_BASE_URL`` and ``STREAMLIFE_STORE``."""
    transport = HttpTransport(
        env["MEMORIES_API_KEY"], base_url=env.get("MEMORIES_BASE_URL", DEFAULT_BASE_URL)
    )
    store = open_store(env.get("STREAMLIFE_STORE", "sqlite:streamlife.db"))
    fleet = AsyncFleet(transport, store=store)
    token = env["STREAMLIFE_WEBHOOK_TOKEN"]
    receiver = WebhookReceiver(fleet, token=token)
    # The token is the webhook path's last segment: keep it out of uvicorn's access log.
    logging.getLogger("uvicorn.access").addFilter(hiding(token))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with ExitStack() as given:  # the transport and the store are ours to close, after the Fleet
            given.callback(store.close)
            given.callback(transport.close)
            async with fleet:
                await fleet.recover()  # before the receiver takes a callback: a previous run's tasks
                async with fleet.run_timers():  # stop retries, final-callback waits, orphans
                    yield
                    if isinstance(store, MemoryStore):  # it remembers nothing: stop what is live
                        await fleet.stop_all()

    app = FastAPI(title="streams", lifespan=lifespan)
    app.mount("/memories", receiver.asgi)  # memories.ai posts to /memories/<token>

    @app.post("/streams", status_code=201)
    async def start(body: Start) -> Stream:
        kind = StreamKind(body.kind)
        params = {URL_FIELD[kind]: body.url, **body.options}
        if body.provider is not None:
            params["provider"] = body.provider
        try:
            task = await fleet.start(kind, **params)  # awaits the start request only
        except ValueError as error:
            raise HTTPException(400, f"not a start: {error}") from None
        # A start refused for now (pending) or whose answer was lost (uncertain) has no task_id
        # yet: the Fleet goes on with it, and GET /streams shows it.
        return await Stream.of(task)

    @app.get("/streams")
    async def streams() -> dict[str, list[Stream]]:
        return {"streams": [await Stream.of(task) for task in fleet.tasks()]}

    @app.get("/streams/{task_id}")
    async def stream(task_id: str) -> Stream:
        task = await fleet.get(task_id)
        if task is None:
            raise HTTPException(404, "no such stream")
        return await Stream.of(task)

    @app.post("/streams/{task_id}/stop")
    async def stop(task_id: str) -> Stream:
        try:
            task = await fleet.stop(task_id, wait=10)  # safe to repeat, whatever its state
        except UnknownTaskError:
            raise HTTPException(404, "no such stream") from None
        return await Stream.of(task)

    return app


def hiding(secret: str) -> logging.Filter:
    """A log filter that shows ``secret`` as ``***`` in every record it passes."""

    class Hide(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if isinstance(record.args, tuple):  # the formatter may read them: keep them, masked
                record.args = tuple(hide(arg) for arg in record.args)
            record.msg = hide(record.msg)
            return True

    def hide(value: object) -> object:
        return value.replace(secret, "***") if isinstance(value, str) else value

    return Hide()


def main() -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a supervisor's stop, as Ctrl-C
    port = int(os.environ.get("PORT", "8000"))
    env = dict(os.environ)
    with ExitStack() as stack:
        simulator = None
        if not env.get("MEMORIES_API_KEY"):  # memories.ai's simulator stands in, on loopback
            token = env.setdefault("STREAMLIFE_WEBHOOK_TOKEN", secrets.token_urlsafe(24))
            simulator = SimulatedService(clock=ManualClock(time.time()))
            webhook = f"http://127.0.0.1:{port}/memories/{token}"
            face = stack.enter_context(serve_http(simulator, webhook_url=webhook))
            stack.enter_context(RealTime(simulator, speed=float(env.get("SIMULATOR_SPEED", "1"))))
            env.update(MEMORIES_API_KEY="sk-mai-simulated", MEMORIES_BASE_URL=face.base_url)  # its key
            env.setdefault("STREAMLIFE_STORE", "memory:")  # the simulated streams end with this process
            print(f"simulated memories.ai at {face.base_url}, posting to /memories/<token>", flush=True)
        app = create_app(env)
        with suppress(KeyboardInterrupt):  # uvicorn stops gracefully, then raises the signal again
            uvicorn.run(app, host="127.0.0.1", port=port)  # until Ctrl-C
        if simulator is not None:
            print("still billing:", simulator.billing(), flush=True)


if __name__ == "__main__":
    main()
