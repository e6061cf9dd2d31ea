"""Which of streamlife's modules this installation runs compiled.

A wheel built with the mypyc hook (pyproject.toml) ships the callback's hot path as C extensions
beside the sources; a plain install is pure Python. The two behave alike (the test suite runs on
both), so this is for figures and bug reports: which build was measured, which one failed.
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def compiled_modules() -> tuple[str, ...]:
    """The dotted names of streamlife's modules that load from a compiled extension, sorted; empty
    for a pure-Python install. (An extension takes precedence over the source beside it.)"""
    found = []
    for path in _PACKAGE.rglob("*"):
        suffix = next((suffix for suffix in EXTENSION_SUFFIXES if path.name.endswith(suffix)), None)
        if suffix is not None and path.is_file():
            parts = path.relative_to(_PACKAGE.parent).parts
            found.append(".".join((*parts[:-1], path.name.removesuffix(suffix))))
    return tuple(sorted(found))


def build_description() -> str:
    """One line: "pure Python", or "compiled (mypyc): callbacks, fleet, ..." without the package name."""
    names = [name.removeprefix("streamlife.") for name in compiled_modules()]
    return f"compiled (mypyc): {', '.join(names)}" if names else "pure Python"
