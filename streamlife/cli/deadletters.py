"""``deadletter list | show | replay | purge``: the webhook payloads the parser refused."""

from __future__ import annotations

import argparse
import json
from base64 import b64encode
from collections.abc import Iterable, Mapping
from typing import Any

from streamlife._events import Outcome, StartResult, StopResult, StreamKind
from streamlife._policy import Policy
from streamlife.deadletter import kept_letters, replay_dead_letters
from streamlife.errors import CallbackError, NotSentError
from streamlife.fleet import Fleet
from streamlife.store import DeadLetter, Store, mask_store_url

from .exits import EXIT_OK, Problem, Usage
from .render import hexdump, iso_utc, letters_table, plural, preview, print_fields, print_table, printable
from .stores import opened


def run_deadletter(args: argparse.Namespace) -> int:
    if args.action == "purge" and bool(args.ids) == args.all:
        raise Usage("purge takes the IDs of the letters to forget, or --all (not both)")
    shown = mask_store_url(args.store)
    with opened(args.store, existing=True) as store:
        if args.action == "list":
            return _list_letters(store, shown, args)
        if args.action == "show":
            return _show_letter(store, shown, args)
        if args.action == "replay":
            return _replay_letters(store, shown, args)
        return _purge_letters(store, shown, args)


def _list_letters(store: Store, shown: str, args: argparse.Namespace) -> int:
    # Without their bodies: a page of letters at a time is all that is held.
    listed = [_letter_json(letter) for letter in kept_letters(store, after=args.after, limit=args.limit)]
    if args.json:
        print(json.dumps(listed, indent=2))
        return EXIT_OK
    if not listed:
        print(f"no dead letters in {shown}")
        return EXIT_OK
    print_table(letters_table(listed, f"{plural(len(listed), 'dead letter')} in {shown}"))
    return EXIT_OK


def _letter_json(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "at": iso_utc(letter.at, "milliseconds"),
        "at_unix": letter.at,
        "reason": letter.reason,
        "field": letter.field,
        "size": letter.size,
        "kept": len(letter.body),
        "truncated": letter.truncated,
        "preview": preview(letter.body),
    }


def _show_letter(store: Store, shown: str, args: argparse.Namespace) -> int:
    letter = store.dead_letter_by_id(args.id)
    if letter is None:
        raise Problem(_not_kept(shown, [args.id]))
    try:
        text: str | None = letter.body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if args.json:
        shown_json = {key: value for key, value in _letter_json(letter).items() if key != "preview"}
        if text is None:
            body = {"body": b64encode(letter.body).decode("ascii"), "body_encoding": "base64"}
        else:
            body = {"body": text, "body_encoding": "utf-8"}
        print(json.dumps({**shown_json, **body}, indent=2))  # (JSON escapes every control character)
        return EXIT_OK
    size = f"{letter.size:,} bytes"
    if letter.truncated:
        size += f", the first {len(letter.body):,} kept (cut: it is never replayed)"
    form = "not UTF-8; as hex:" if text is None else "UTF-8 text (control characters shown escaped):"
    print_fields(
        [
            ("id", str(letter.id)),
            ("time", iso_utc(letter.at, "milliseconds")),
            ("field", letter.field or "-"),
            ("reason", letter.reason),
            ("size", size),
            ("body", form),
        ]
    )
    print(hexdump(letter.body) if text is None else printable(text, lines=True))
    return EXIT_OK


def _replay_letters(store: Store, shown: str, args: argparse.Namespace) -> int:
    # No recover(): the Fleet finds each task in the store as its callback comes, and recovering would
    # take over every unfinished task (a start in flight in another process filed as uncertain).
    # No request leaves from here, and this Fleet's timers never run. An end a replayed callback lets
    # the task infer calls for a confirming stop, which fails here and is journaled as failed: the
    # process that serves the store retries it when it next touches the task.
    with Fleet(_NoRequests(), store=store, policy=Policy(stop_concurrency=0)) as fleet:
        results = replay_dead_letters(fleet, args.ids or None)
    found = {letter_id for letter_id, _ in results}
    missing = [letter_id for letter_id in dict.fromkeys(args.ids) if letter_id not in found]
    refused = [letter_id for letter_id, result in results if isinstance(result, CallbackError)]
    if args.json:
        report = [_replay_json(letter_id, result) for letter_id, result in results]
        report += [{"id": letter_id, "result": "not kept", "purged": False} for letter_id in missing]
        print(json.dumps(report, indent=2))
    elif not results and not missing:
        print(f"no dead letters in {shown}")
    else:
        for letter_id, result in results:
            if isinstance(result, CallbackError):
                print(f"dead letter {letter_id}: still refused, kept: {printable(str(result))}")
            else:
                print(f"dead letter {letter_id}: {printable(str(result))}, purged")
    problems = []
    if refused:
        problems.append(f"{plural(len(refused), 'dead letter')} still refused, and kept")
    if missing:
        problems.append(_not_kept(shown, missing))
    if problems:
        raise Problem("; ".join(problems))
    return EXIT_OK


def _replay_json(letter_id: int, result: Outcome | CallbackError) -> dict[str, Any]:
    if isinstance(result, CallbackError):
        return {
            "id": letter_id,
            "result": "refused",
            "error": str(result),
            "field": result.field,
            "purged": False,
        }
    return {"id": letter_id, "result": result.kind.value, "reason": result.reason, "purged": True}


def _purge_letters(store: Store, shown: str, args: argparse.Namespace) -> int:
    if args.all:
        missing: list[int] = []
        purged = store.purge_dead_letters()
    else:
        wanted = list(dict.fromkeys(args.ids))
        missing = [letter_id for letter_id in wanted if store.dead_letter_by_id(letter_id) is None]
        purged = store.purge_dead_letters(wanted)
    if args.json:
        print(json.dumps({"purged": purged, "not_kept": missing, "store": shown}, indent=2))
    else:
        print(f"purged {plural(purged, 'dead letter')} from {shown}")
    if missing:
        raise Problem(_not_kept(shown, missing))
    return EXIT_OK


def _not_kept(shown: str, ids: Iterable[int]) -> str:
    return f"the store {shown} keeps no dead letter {', '.join(map(str, ids))}"


class _NoRequests:
    """The transport of a Fleet that must send memories.ai nothing (``deadletter replay``): every
    request is refused as never sent, which no caller takes for an answer."""

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        raise NotSentError("this command sends no requests", operation=f"{kind.value}.start")

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        raise NotSentError("this command sends no requests", operation=f"{kind.value}.stop")

    def close(self) -> None:
        pass
