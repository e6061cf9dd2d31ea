"""The exception tree drawn in streamlife.errors' docstring is the real class hierarchy."""

from __future__ import annotations

import inspect
import re

import streamlife.errors as errors_module
from streamlife.errors import StreamlifeError

INDENT = 5  # columns per level of the drawing
# A drawn class: its tree glyphs, its name, then its description.
NAMED = re.compile(r"^(?P<glyphs>[ │├└─]*)(?P<name>[A-Z][A-Za-z]+)(?:\s|$)")


def drawing() -> list[str]:
    """The drawing's lines: from the root's to the first blank line after it."""
    lines = (errors_module.__doc__ or "").splitlines()
    first = next(number for number, line in enumerate(lines) if line.strip() == "StreamlifeError")
    end = next(number for number in range(first, len(lines)) if not lines[number].strip())
    return lines[first:end]


def drawn_tree() -> list[tuple[int, str, str]]:
    """(depth, name, glyphs) of each drawn class, in the drawing's order; continuation lines, as
    (depth, "", glyphs), under the class they continue."""
    rows: list[tuple[int, str, str]] = []
    for line in drawing():
        match = NAMED.match(line)
        glyphs = line[: len(line) - len(line.lstrip(" │├└─"))]
        if match is None or not ("├" in glyphs or "└" in glyphs or not rows):
            rows.append((rows[-1][0], "", glyphs.rstrip()))
            continue
        connector = max(glyphs.rfind("├"), glyphs.rfind("└"))
        depth = 0 if connector < 0 else (connector - INDENT) // INDENT + 1
        rows.append((depth, match["name"], match["glyphs"]))
    return rows


def real_parents() -> dict[str, str | None]:
    """Each exception class of streamlife.errors, and the class it descends from in the tree (its
    first base that is a StreamlifeError: ``CallbackError`` is a ``ValueError`` as well)."""
    parents: dict[str, str | None] = {}
    for name, cls in inspect.getmembers(errors_module, inspect.isclass):
        if cls.__module__ != errors_module.__name__ or not issubclass(cls, StreamlifeError):
            continue
        bases = [base for base in cls.__bases__ if issubclass(base, StreamlifeError)]
        parents[name] = bases[0].__name__ if bases else None
    return parents


def drawn_parents(rows: list[tuple[int, str, str]]) -> dict[str, str | None]:
    parents: dict[str, str | None] = {}
    path: list[str] = []
    for depth, name, _ in rows:
        if not name:
            continue
        del path[depth:]
        parents[name] = path[-1] if path else None
        path.append(name)
    return parents


def expected_glyphs(rows: list[tuple[int, str, str]]) -> list[str]:
    """The glyphs each row needs for the tree the rows describe: ├ for a class with a sibling
    below it, └ for the last, and │ wherever a line passes a level still to be continued."""
    named = [(number, depth) for number, (depth, name, _) in enumerate(rows) if name]

    def has_next_sibling(position: int) -> bool:
        _, depth = named[position]
        for _, later in named[position + 1 :]:
            if later < depth:
                return False
            if later == depth:
                return True
        return False

    def has_children(position: int) -> bool:
        return position + 1 < len(named) and named[position + 1][1] > named[position][1]

    glyphs: list[str] = []
    open_levels: list[bool] = []  # per depth 1.., whether the class drawn there has a sibling below
    position = -1
    for depth, name, _ in rows:
        if name:
            position += 1
            if depth == 0:
                glyphs.append(" " * (INDENT - 1))
                continue
            del open_levels[depth - 1 :]
            bars = "".join("│    " if is_open else "     " for is_open in open_levels)
            following = has_next_sibling(position)
            glyphs.append(" " * INDENT + bars + ("├── " if following else "└── "))
            open_levels.append(following)
            continue
        bars = "".join("│    " if is_open else "     " for is_open in open_levels)
        glyphs.append((" " * INDENT + bars + ("│" if has_children(position) else "")).rstrip())
    return glyphs


def test_the_drawing_names_every_exception_under_its_real_parent() -> None:
    assert drawn_parents(drawn_tree()) == real_parents()


def test_the_drawing_draws_its_tree_with_the_right_lines() -> None:
    rows = drawn_tree()
    drawn = [glyphs if name else glyphs.rstrip() for _, name, glyphs in rows]
    assert drawn == expected_glyphs(rows)
