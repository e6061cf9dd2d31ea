"""``diagram`` and ``walk``: the lifecycle table drawn, and walked through."""

from __future__ import annotations

import argparse
import sys

from streamlife import _diagram as diagram
from streamlife import _walk as walk

from .exits import EXIT_OK, EXIT_PROBLEM


def run_diagram(args: argparse.Namespace) -> int:
    if args.check:
        stale = diagram.drifted(args.out)
        for path in stale:
            print(f"{path} is out of date: run `python -m streamlife diagram`", file=sys.stderr)
        return EXIT_PROBLEM if stale else EXIT_OK
    for path in diagram.write(args.out):
        print(f"wrote {path}")
    return EXIT_OK


def run_walk(args: argparse.Namespace) -> int:
    print(walk.timeline())
    return EXIT_OK
