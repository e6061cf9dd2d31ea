"""A Flask application that starts and stops memories.ai streams and takes their webhooks.

It mounts streamlife's WSGI webhook receiver at ``/memories/<token>`` (the URL to give the
memories.ai console, behind a TLS proxy), beside a small API of its own:

    POST /streams                  {"kind": "audio", "url": "rtmp://...", "provider": "assemblyai"}
                                   or {"kind": "video", "url": "rtmp://...", "options": {"fps": 2}}
    GET  /streams                  every stream, as below
    GET  /streams/<task_id>        {"task_id", "kind", "state", "segments", "text", "unsafe", "error"}
    POST /streams/<task_id>/stop   stops it; answers once it is stopped (or within 10 s)

The Fleet journals every task to ``STREAMLIFE_STORE`` (``sqlite:streamlife.db``) and takes them
back when the application starts again (``recover()``), so a restart loses no stream.

Against the simulator of memories.ai, with no key: Flask's development server on ``PORT`` (5000),
and the simulator on another loopback port, posting its webhooks to this application::

    python examples/flask_app.py
    curl -X POST localhost:5000/streams -H 'Content-Type: application/json' \\
         -d '{"kind": "audio", "url": "rtmp://example.invalid/live", "provider": "assemblyai"}'

Or run the simulator in a terminal of its own (``streamlife sim serve --webhook
http://127.0.0.1:5000/memories/$STREAMLIFE_WEBHOOK_TOKEN``) and give this application its URL in
``MEMORIES_BASE_URL`` (``http://127.0.0.1:8790/serve/api/v2``) and its key, ``sk-mai-simulated``.

Against memories.ai: set ``MEMORIES_API_KEY`` and ``STREAMLIFE_WEBHOOK_TOKEN`` (16 characters or
more), then ``python examples/flask_app.py`` again, or run it in any WSGI server: Flask finds
``create_app`` by itself (``flask --app examples/flask_app.py run``; with gunicorn:
``gunicorn --chdir examples 'flask_app:create_app()'``). ``MEMORIES_BASE_URL`` points it at
another base URL.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import signal
import time
from collections.abc import Mapping
from contextlib import ExitStack
from typing import Any

from flask import Flask, abort, request
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from streamlife import Fleet, ManualClock, StreamKind, StreamTask, UnknownTaskError
from streamlife.protocol import URL_FIELD
from streamlife.sim import RealTime, SimulatedService, serve_http
from streamlife.store import MemoryStore, open_store
from streamlife.transport import DEFAULT_BASE_URL, HttpTransport
from streamlife.webhook import WebhookReceiver


def create_app(env: Mapping[str, str] = os.environ) -> Flask:
    """The application, configured from ``env``: ``MEMORIES_API_KEY``, ``STREAMLIFE_WEBHOOK_TOKEN``,
    and optionally ``MEMORIES_BASE_URL`` and ``STREAMLIFE_STORE``."""
    transport = HttpTransport(
        env["MEMORIES_API_KEY"], base_url=env.get("MEMORIES_BASE_URL", DEFAULT_BASE_URL)
    )
    store = open_store(env.get("STREAMLIFE_STORE", "sqlite:streamlife.db"))
    fleet = Fleet(transport, store=store)
    fleet.recover()  # before the receiver takes a callback: the tasks a previous run left live

    app = Flask(__name__)
    token = env["STREAMLIFE_WEBHOOK_TOKEN"]
    receiver = WebhookReceiver(fleet, token=token)
    # The token is the webhook path's last segment: keep it out of the access log.
    logging.getLogger("werkzeug").addFilter(hiding(token))
    # The receiver is a WSGI application: it reads the raw body and answers without Flask.
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/memories": receiver})  # type: ignore[method-assign]

    # The Fleet's timers (stop retries, waits for final callbacks, orphans) tick on a thread.
    # Flask has no shutdown hook: the thread stops at exit, or when the server that runs the
    # application calls app.extensions["streamlife"].close().
    resources = ExitStack()
    resources.callback(store.close)
    resources.callback(transport.close)
    resources.callback(fleet.close)  # (last in, first out: the Fleet, then the transport, the store)
    resources.enter_context(fleet.run_timers())
    if isinstance(store, MemoryStore):  # it remembers nothing: stop what is live on the way out
        resources.callback(fleet.stop_all)
    atexit.register(resources.close)
    app.extensions["streamlife"] = fleet
    app.extensions["streamlife.close"] = resources.close

    @app.post("/streams")
    def start() -> tuple[dict[str, Any], int]:
        body = request.get_json(force=True)
        try:
            kind = StreamKind(body["kind"])
            params = {URL_FIELD[kind]: body["url"], **body.get("options", {})}
            if "provider" in body:
                params["provider"] = body["provider"]
            task = fleet.start(kind, **params)  # blocks for the start request only
        except (KeyError, TypeError, ValueError) as error:
            abort(400, description=f"not a start: {error}")
        # 201 once memories.ai named the stream; 202 for a start refused for now (pending) or
        # whose answer was lost (uncertain): the Fleet goes on with it, GET /streams shows it.
        return view(task), 201 if task.task_id else 202

    @app.get("/streams")
    def streams() -> dict[str, Any]:
        return {"streams": [view(task) for task in fleet.tasks()]}

    @app.get("/streams/<task_id>")
    def stream(task_id: str) -> dict[str, Any]:
        task = fleet.get(task_id)
        if task is None:
            abort(404)
        return view(task)

    @app.post("/streams/<task_id>/stop")
    def stop(task_id: str) -> dict[str, Any]:
        try:
            return view(fleet.stop(task_id, wait=10))  # safe to repeat, whatever state it is in
        except UnknownTaskError:
            abort(404)

    return app


def view(task: StreamTask) -> dict[str, Any]:
    """What the API shows of a task (never its start body: a stream URL may hold a stream key)."""
    segments = list(task.transcript)
    unsafe = [s.index for s in segments if (m := s.moderation) is not None and m.has_unsafe_content]
    return {
        "task_id": task.task_id,
        "kind": task.kind.value,
        "state": task.state.value,
        "segments": len(segments),
        "text": task.transcript_text() if task.kind is StreamKind.AUDIO else None,
        "unsafe": unsafe if task.kind is StreamKind.VIDEO else None,
        "final_callback_missing": task.final_callback_missing,
        "error": task.last_error,
    }


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
    port = int(os.environ.get("PORT", "5000"))
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
        app.run(host="127.0.0.1", port=port, threaded=True)  # until Ctrl-C
        app.extensions["streamlife.close"]()
        if simulator is not None:
            print("still billing:", simulator.billing(), flush=True)


if __name__ == "__main__":
    main()
