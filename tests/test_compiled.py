"""The build under test is the one asked for: pure Python (``make test``), or the compiled build
of pyproject.toml's mypyc hook (``make test-compiled``, which sets STREAMLIFE_COMPILED=1)."""

from __future__ import annotations

import importlib
import tomllib
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from streamlife.cli import main
from streamlife.compiled import build_description, compiled_modules

from .conftest import COMPILED_RUN

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def modules_the_hook_compiles() -> tuple[str, ...]:
    wheel = tomllib.loads(PYPROJECT.read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    hook = wheel["hooks"]["mypyc"]
    return tuple(sorted(path.strip("/").removesuffix(".py").replace("/", ".") for path in hook["include"]))


def test_the_modules_compiled_are_the_hooks_in_a_compiled_run_and_none_otherwise() -> None:
    """Stale extensions left in a source tree would shadow its edited sources: caught here too."""
    assert compiled_modules() == (modules_the_hook_compiles() if COMPILED_RUN else ())
    assert len(modules_the_hook_compiles()) >= 8  # (so the comparison above compares something)
    for name in modules_the_hook_compiles():  # and what this run loaded is what it says
        loaded = importlib.import_module(name).__file__ or ""
        assert loaded.endswith(tuple(EXTENSION_SUFFIXES)) is COMPILED_RUN, loaded


def test_version_says_which_build_this_is(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())  # (argparse wraps it to the terminal's width)
    assert shown.startswith("streamlife ")
    assert shown.endswith(build_description())
    expected = "compiled (mypyc): callbacks, fleet," if COMPILED_RUN else "pure Python"
    assert expected in shown
