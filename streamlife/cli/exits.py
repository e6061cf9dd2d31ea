"""How a command ends: its exit codes, and the two exceptions that end it with a message."""

from __future__ import annotations

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # as shells report a command ended by SIGINT


class Usage(Exception):
    """Bad usage found after parsing: exit 2 with the message."""


class Problem(Exception):
    """The command ran and found a problem: exit 1 with the message."""
