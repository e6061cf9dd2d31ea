"""``prune``: let go of the store's old terminal tasks and dead letters."""

from __future__ import annotations

import argparse
import json
import time

from streamlife.store import mask_store_url

from .exits import EXIT_OK
from .render import iso_utc, plural
from .stores import opened


def run_prune(args: argparse.Namespace) -> int:
    shown = mask_store_url(args.store)
    before = time.time() - args.older_than
    with opened(args.store, existing=True) as store:
        result = store.prune(before, dry_run=args.dry_run)
    if args.json:
        report = {
            **result._asdict(),
            "before": iso_utc(before),
            "before_unix": before,
            "dry_run": args.dry_run,
            "store": shown,
        }
        print(json.dumps(report, indent=2))
        return EXIT_OK
    verb = "would prune" if args.dry_run else "pruned"
    entries = f"{result.entries} journal {'entry' if result.entries == 1 else 'entries'}"
    print(
        f"{verb} {plural(result.tasks, 'terminal task')} ({entries})"
        f" and {plural(result.dead_letters, 'dead letter')} last touched before {iso_utc(before)}"
        f" from {shown}"
    )
    return EXIT_OK
