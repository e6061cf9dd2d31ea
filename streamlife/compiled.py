"""Which of streamlife's modules this installation runs compiled.

A wheel built with the mypyc hook (pyproject.toml) ships the callback's hot path as C extensions
beside the sources; a plain install is pure Python. The suite runs on both, so this is for figures
and bug reports: which build was measured, which one failed.
"""

from __future__ import annotations

import importlib.util
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def compiled_modules() -> tuple[str, ...]:
    """The dotted names of streamlife's modules that import from a compiled extension, sorted;
    empty for a pure-Python install. Asked of the import system, module by module, without
    importing any: an extension built for another Python is no extension here."""
    found = []
    for source in sorted(_PACKAGE.rglob("*.py")):
        parts = source.relative_to(_PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            continue
        spec = importlib.util.find_spec(".".join(parts))
        origin = "" if spec is None or spec.origin is None else spec.origin
        if origin.endswith(tuple(EXTENSION_SUFFIXES)):
            found.append(".".join(parts))
    return tuple(sorted(found))


def build_description() -> str:
    """One line: "pure Python", or "compiled (mypyc): callbacks, fleet, ..." without the package name."""
    names = [name.removeprefix("streamlife.") for name in compiled_modules()]
    return f"compiled (mypyc): {', '.join(names)}" if names else "pure Python"
