"""docs/ names only what the repository holds: every link and every path in it resolves."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted((REPO / "docs").glob("*.md"))
# A Markdown link to a file of this repository: [text](relative/path), an anchor allowed.
LINK = re.compile(r"\]\((?!https?:|mailto:|#)(?P<target>[^)#\s]+)(?:#[^)]*)?\)")
# A path written out in the text, from the repository's root.
PATH = re.compile(r"(?<![\w/.])(?P<path>(?:streamlife|tests|bench|diagrams|docs)/[\w/.-]*\w)")
# A module named in backticks, relative to streamlife/ (``lifecycle.py``, ``store/base.py``).
MODULE = re.compile(r"`(?P<module>[\w/]+\.py)`")


def test_there_is_an_architecture_page() -> None:
    assert REPO / "docs" / "architecture.md" in DOCS


def test_every_link_in_docs_resolves() -> None:
    broken = [
        f"{doc.name}: {match['target']}"
        for doc in DOCS
        for match in LINK.finditer(doc.read_text(encoding="utf-8"))
        if not (doc.parent / match["target"]).exists()
    ]
    assert broken == []


def test_every_path_and_module_named_in_docs_exists() -> None:
    missing = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        missing += [
            f"{doc.name}: {m['path']}" for m in PATH.finditer(text) if not (REPO / m["path"]).exists()
        ]
        missing += [
            f"{doc.name}: {m['module']}"
            for m in MODULE.finditer(text)
            if not (REPO / m["module"]).exists() and not (REPO / "streamlife" / m["module"]).exists()
        ]
    assert missing == []
