"""``start``, ``stop`` and ``status``: one stream started or stopped, and the tasks in the store."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Final
from urllib.parse import urlsplit

from streamlife._events import StreamKind
from streamlife._policy import Policy
from streamlife._task_urls import MIN_TOKEN_LENGTH, CallbackUrls
from streamlife.errors import StreamlifeError
from streamlife.fleet import Fleet
from streamlife.lifecycle import TaskState
from streamlife.protocol import PROVIDERS, URL_FIELD
from streamlife.store import Store, TaskRow, mask_store_url
from streamlife.transport.http import HttpTransport, RetryPolicy

from .api import check_understand_reachable, transport_for
from .environment import PUBLIC_URL_ENV, PublicUrl, webhook_token
from .exits import EXIT_OK, Problem, Usage
from .render import plural, print_fields, print_table, print_task, tasks_table
from .serve import TOKEN_ENV
from .simulator import mask_webhook
from .stores import check_store_url, find_task, opened, row_json

STOP_POLL: Final = 0.05  # real seconds between two looks at the store while `stop` waits


def run_status(args: argparse.Namespace) -> int:
    shown = mask_store_url(args.store)
    with opened(args.store, existing=True) as store:
        if args.task is not None:
            row = find_task(store, args.task, shown)
            if args.json:
                print(json.dumps(row_json(row), indent=2))
            else:
                print_task(row)
            return EXIT_OK
        rows = list(store.rows(terminal=args.all))
    if args.json:
        print(json.dumps([row_json(row) for row in rows], indent=2))
        return EXIT_OK
    which = "task" if args.all else "unfinished task"
    if not rows:
        print(f"no {which}s in {shown}" + ("" if args.all else " (--all shows the terminal ones too)"))
        return EXIT_OK
    print_table(tasks_table(rows, f"{plural(len(rows), which)} in {shown}"))
    return EXIT_OK


def _task_json(row: TaskRow | None, task_state: str, key: str, store: str) -> dict[str, Any]:
    shown = {"store": store}
    if row is None:
        return {"key": key, "state": task_state, **shown}
    return {**row_json(row), **shown}


def run_start(args: argparse.Namespace) -> int:
    kind = StreamKind(args.kind)
    url = _stream_url(args)
    params = {**dict(args.param), URL_FIELD[kind]: url}
    if args.provider is not None:
        if kind is StreamKind.UNDERSTAND:
            raise Usage("--provider: an audio stream's; an understand stream has none")
        params["provider"] = args.provider
    if kind is StreamKind.AUDIO and params.get("provider") not in PROVIDERS:
        raise Usage(f"an audio stream needs --provider ({' or '.join(PROVIDERS)})")
    if kind is StreamKind.UNDERSTAND:
        params |= _understand_fields(args, params)
    else:
        given = [flag for flag, value in _understand_options(args) if value]
        if given:
            raise Usage(f"{', '.join(given)}: only for an understand stream")
    check_understand_reachable(args, kind)
    # Without --callback, the task's own URL under the receiver's public URL (refused before).
    urls = _task_urls(args) if kind is StreamKind.UNDERSTAND and "callback" not in params else None
    shown = mask_store_url(args.store)
    check_store_url(args.store)
    transport = transport_for(args)  # before the store: a missing key must not leave a new file behind
    try:
        # No retries of a start refused for now: this process is gone before a retry would be due.
        once = Policy(start_retry_window=0)
        with (
            opened(args.store) as store,
            Fleet(transport, store=store, policy=once, callback_urls=urls) as fleet,
        ):
            try:
                task = fleet.start(kind, **params)
            except ValueError as error:  # a start body the Fleet refuses before sending it
                raise Usage(str(error)) from None
            row = store.row(task.key or "")
    finally:
        transport.close()
    if args.json:
        print(json.dumps(_task_json(row, task.state.value, task.key or "", shown), indent=2))
    else:
        print_fields(
            [
                ("key", task.key or "-"),
                ("kind", task.kind.value),
                ("task_id", task.task_id or "-"),
                ("state", task.state.value),
                ("last_error", task.last_error or "-"),
            ]
        )
    if task.state is TaskState.RUNNING:
        return EXIT_OK
    why = task.last_error
    if task.state is TaskState.UNCERTAIN:
        why = (
            f"{why}; a stream may exist all the same, unnamed: `streamlife serve` adopts and stops it as"
            " an orphan when its callbacks come"
        )
    raise Problem(f"the stream did not start ({task.state.value}): {why}")


def _stream_url(args: argparse.Namespace) -> str:
    """The stream's URL: the argument, or ``--url`` (one of them)."""
    if args.url is not None and args.url_option is not None:
        raise Usage("the stream's URL is given twice: as an argument and as --url; give one")
    url: str | None = args.url if args.url is not None else args.url_option
    if url is None:
        raise Usage("the stream's URL is missing: give it as an argument, or as --url URL")
    if not url:
        raise Usage("the stream's URL is empty")
    return url


def _understand_options(args: argparse.Namespace) -> list[tuple[str, object]]:
    return [
        ("--prompt", args.prompt is not None),
        ("--system-prompt", args.system_prompt is not None),
        ("--thinking", args.thinking),
        ("--callback", args.callback is not None),
    ]


def _understand_fields(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    """An understand stream's fields from its options (``--param`` may give them too)."""
    fields: dict[str, Any] = {}
    if args.prompt is not None:
        fields["user_prompt"] = args.prompt
    if args.system_prompt is not None:
        fields["system_prompt"] = args.system_prompt
    if args.thinking:
        fields["thinking"] = True
    if args.callback is not None:
        fields["callback"] = args.callback
    body = {**params, **fields}
    if not str(body.get("user_prompt") or "").strip():
        raise Usage(
            "an understand stream needs --prompt TEXT: the instruction memories.ai applies to each"
            " window of the stream"
        )
    callback = body.get("callback")
    if callback is None:
        if args.public_url is not None:
            return fields  # the Fleet gives the task its own URL (``_task_urls``)
        raise Usage(
            "an understand stream needs a URL memories.ai posts its results to: --public-url URL (or"
            f" {PUBLIC_URL_ENV}), the public base URL of `streamlife serve`, under which the task gets"
            " its own URL signed with the webhook token (--token or"
            f" {TOKEN_ENV}); or --callback URL, a public http(s) URL of your own, e.g. --callback"
            " https://your-host.example/understand"
        )
    parts = urlsplit(str(callback))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Usage(
            f"--callback must be a public http:// or https:// URL, got {mask_webhook(str(callback))!r}"
        )
    return fields


def _task_urls(args: argparse.Namespace) -> CallbackUrls:
    """The task URLs under the receiver's public URL (``--public-url``, or the variable), signed with
    its webhook token: the token never shows in a message, nor does the URL's last segment."""
    public_url: PublicUrl = args.public_url
    token = webhook_token(args.token)
    if not token:
        raise Usage(
            f"{public_url.source}: a task's own URL is signed with the webhook token `streamlife serve`"
            f" verifies it with: give the same token here, --token T or {TOKEN_ENV}"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise Usage(f"the webhook token must be {MIN_TOKEN_LENGTH} characters or more, got {len(token)}")
    if token in public_url:
        # Every task's URL is handed to memories.ai: the token in it would open every task.
        raise Usage(
            f"{public_url.source} must not carry the webhook token: give the receiver's base URL, under"
            " which each task's URL carries a signature instead"
        )
    try:
        return CallbackUrls(public_url, token=token)
    except ValueError as error:  # (the URL is checked already; the words never hold the token)
        raise Usage(f"{public_url.source}: {error}") from None


def run_stop(args: argparse.Namespace) -> int:
    shown = mask_store_url(args.store)
    check_store_url(args.store)
    # The request and its retries fit in the wait (a second at least, for --wait 0).
    transport = transport_for(args, RetryPolicy(deadline=max(args.wait, 1.0)))
    give_up_at = time.monotonic() + args.wait
    try:
        with opened(args.store, existing=True) as store:
            row = find_task(store, args.task, shown)
            if not row.terminal:
                check_understand_reachable(args, StreamKind(row.kind))
                row = _stop_and_wait(store, transport, row, give_up_at)
    finally:
        transport.close()
    if args.json:
        print(json.dumps(_task_json(row, row.state, row.key, shown), indent=2))
    else:
        print_task(row)
    if row.terminal:
        return EXIT_OK
    if row.facts.get("stop_acknowledged"):
        why = "memories.ai acknowledged the stop; its status-14 callback has not reached `streamlife serve`"
    else:
        why = (
            f"the stop was not acknowledged ({row.facts.get('stop_failures', 0)} failed): the stream may"
            " still bill, so run this again (a running `serve` does not retry it before it restarts)"
        )
    raise Problem(f"task {row.key} ({row.task_id}) is still {row.state} after {args.wait:g} s: {why}")


def _stop_and_wait(store: Store, transport: HttpTransport, row: TaskRow, give_up_at: float) -> TaskRow:
    """Stop the task, then watch the store until it is terminal (the status-14 callback goes to
    whoever serves the webhook, which journals it) or the wait is over. Retries due meanwhile go out
    from here, on this thread."""
    if row.task_id is None:
        raise Problem(
            f"task {row.key} is {row.state} with no task_id: there is nothing to stop at memories.ai yet"
            " (if its start made a stream, `streamlife serve` reaps it as an orphan)"
        )
    with Fleet(transport, store=store, policy=Policy(stop_concurrency=0)) as fleet:
        try:
            fleet.stop(row.task_id)
        except StreamlifeError as error:
            raise Problem(f"could not stop task {row.key}: {error}") from None
        while True:
            current = store.row(row.key) or row
            if current.terminal or time.monotonic() >= give_up_at:
                return current
            deadline = fleet.next_deadline()
            if deadline is not None and deadline <= fleet.clock.now():
                fleet.tick()
            time.sleep(STOP_POLL)
