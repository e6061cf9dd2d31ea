"""A process that holds a SqliteStore's turn at the write lock, for tests that stop or kill it.

    python -m tests.store.turn_holder PATH KEY [--fork-child] [--wait-first]

It opens the store at PATH (then prints ``open``), enters a ``lock(KEY)`` block, writes the task's
next version (the transaction is then mid-way), prints ``holding``, and waits for a line on stdin:
then it leaves the block (the write commits), prints ``done`` and exits.

``--fork-child``: once in the block, it forks a child that sleeps (and prints ``child PID`` first).
``--wait-first``: once open, it waits for a line on stdin (the test then holds the turn), then waits
for its turn in a thread, forks the child while it waits, and prints ``waiting``; once the test
lets the turn go, the thread takes it and goes on as above.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from streamlife.store.base import JournalEntry
from streamlife.store.sqlite import SqliteStore

CHILD_SLEEP = 600.0  # seconds: longer than any test waits


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.store.turn_holder")
    parser.add_argument("path")
    parser.add_argument("key")
    parser.add_argument("--fork-child", action="store_true")
    parser.add_argument("--wait-first", action="store_true")
    args = parser.parse_args()
    store = SqliteStore(args.path)
    say("open")
    if not args.wait_first:
        hold(store, args.key, fork=args.fork_child)
        return
    sys.stdin.readline()  # (once the test holds the turn)
    holder = threading.Thread(target=hold, args=(store, args.key), kwargs={"fork": False})
    holder.start()
    while not store._turns._blocked:  # (until the thread waits in flock for its turn)
        time.sleep(0.001)
    if args.fork_child:
        fork_child()
    say("waiting")
    holder.join()


def hold(store: SqliteStore, key: str, *, fork: bool) -> None:
    with store.lock(key) as txn:
        txn.write([JournalEntry(txn.version + 1, 2000.0, "segment", "running", "running", None)], None)
        if fork:
            fork_child()
        say("holding")
        sys.stdin.readline()
    say("done")


def fork_child() -> None:
    pid = os.fork()
    if pid == 0:  # the child: sleeps, holding whatever it was given
        time.sleep(CHILD_SLEEP)
        os._exit(0)
    say(f"child {pid}")


def say(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    main()
