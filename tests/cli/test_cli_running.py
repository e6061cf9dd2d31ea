"""A long-running command's wait for SIGTERM: the signal sets the Event the command waits on, even
when it lands while the main thread holds that Event's lock, as it does for a moment in every turn
of ``while not stopping.wait(0.5)``."""

from __future__ import annotations

import _thread
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from streamlife.cli import running

# The main thread holds the Event's lock when SIGTERM comes, as inside ``stopping.wait()``; then it
# lets go and waits. A signal's handler runs on the main thread, between two of its bytecodes.
CHILD = textwrap.dedent(
    """
    import sys, threading, time
    from streamlife.cli.running import until_signalled

    stopping = threading.Event()
    with until_signalled(stopping):
        with stopping._cond:
            print("holding", flush=True)
            time.sleep(1.0)  # SIGTERM comes meanwhile: its handler runs here, the lock held
        sys.exit(0 if stopping.wait(10) else 3)
    """
)


def test_sigterm_while_the_main_thread_holds_the_event_s_lock_still_stops(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "holding"
        os.kill(child.pid, signal.SIGTERM)
        assert child.wait(timeout=20) == 0  # before: the handler waited for the lock for ever
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_sigterm_sets_the_event_where_no_thread_can_be_started(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*_: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(_thread, "start_new_thread", refused)
    stopping = threading.Event()
    with running.until_signalled(stopping):
        os.kill(os.getpid(), signal.SIGTERM)  # handled on this thread, before the next line
        assert stopping.is_set()
