"""The results, three ways: rich tables on the terminal, ``results.json``, and ``RESULTS.md``."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from .common import Figure, Goal, Section

RATIO_NOTE = (
    "A ratio is streamlife's cost divided by the reference's (for a rate: the reference's rate "
    "divided by streamlife's), so above 1 means slower or bigger than the reference."
)


def number(value: float | None) -> str:
    if value is None or value != value:  # None or NaN
        return "—"
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def ratio(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}x" if value >= 10 else f"{value:.2f}x"


def verdict(goal: Goal) -> str:
    return {True: "holds", False: "MISSED", None: "not measured"}[goal.passed]


def _figure_cells(section: Section, figure: Figure) -> list[str]:
    cells = [figure.label, figure.unit, number(figure.value)]
    cells += [number(figure.refs.get(key)) for key, _ in section.refs]
    cells += [ratio(figure.ratio(key)) for key, _ in section.refs]
    return cells


def _columns(section: Section) -> list[str]:
    return [
        "measure",
        "unit",
        "streamlife",
        *(title for _, title in section.refs),
        *(f"x {title}" for _, title in section.refs),
    ]


# -- the terminal ------------------------------------------------------------------------------------
def show_section(console: Console, section: Section) -> None:
    if section.figures:
        table = RichTable(title=f"{section.title}  ({section.seconds:,.0f} s)", title_justify="left")
        for n, column in enumerate(_columns(section)):
            table.add_column(column, justify="left" if n < 2 else "right", overflow="fold")
        for figure in section.figures:
            table.add_row(*_figure_cells(section, figure))
        console.print(table)
    else:
        console.print(f"[bold]{section.title}[/]  ({section.seconds:,.0f} s)")
    for extra in section.tables:
        table = RichTable(title=extra.title, title_justify="left")
        for n, column in enumerate(extra.columns):
            table.add_column(column, justify="left" if n == 0 else "right", overflow="fold")
        for row in extra.rows:
            table.add_row(*row)
        console.print(table)
    for note in section.notes:
        console.print(f"  [dim]- {note}[/]")
    console.print()


def show_goals(console: Console, goals: Sequence[Goal]) -> None:
    if not goals:
        return
    table = RichTable(title="Goals", title_justify="left")
    table.add_column("goal", overflow="fold")
    table.add_column("measured", overflow="fold")
    table.add_column("verdict")
    styles = {True: "green", False: "bold red", None: "yellow"}
    for goal in goals:
        table.add_row(goal.target, goal.measured, f"[{styles[goal.passed]}]{verdict(goal)}[/]")
    console.print(table)


# -- results.json ------------------------------------------------------------------------------------
def to_json(meta: dict[str, Any], sections: Sequence[Section]) -> dict[str, Any]:
    out_sections = []
    for section in sections:
        figures = []
        for figure in section.figures:
            record = dataclasses.asdict(figure)
            record["ratios"] = {key: figure.ratio(key) for key in figure.refs}
            figures.append(record)
        out_sections.append(
            {
                "name": section.name,
                "title": section.title,
                "about": section.about,
                "seconds": section.seconds,
                "references": dict(section.refs),
                "figures": figures,
                "goals": [dataclasses.asdict(goal) for goal in section.goals],
                "notes": section.notes,
                "tables": [dataclasses.asdict(table) for table in section.tables],
                "details": section.extra,
            }
        )
    goals = [dataclasses.asdict(goal) for section in sections for goal in section.goals]
    return {
        **meta,
        "ratio_convention": RATIO_NOTE,
        "goals": goals,
        "all_goals_hold": all(goal["passed"] for goal in goals) if goals else None,
        "sections": out_sections,
    }


# -- RESULTS.md --------------------------------------------------------------------------------------
def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[str]], right_from: int) -> list[str]:
    align = ["---" if n < right_from else "---:" for n in range(len(columns))]
    return [_md_row(columns), _md_row(align), *(_md_row(row) for row in rows)]


def to_markdown(meta: dict[str, Any], sections: Sequence[Section]) -> str:
    lines = [
        "# streamlife benchmarks",
        "",
        "<!-- Generated by `make bench` (python -m bench.run): edit bench/, not this file. -->",
        "",
        f"Run {meta['date']} ({meta['mode']} mode, {meta['seconds']:,.0f} s) on {meta['platform']}, "
        f"{meta['cpus']} CPUs, Python {meta['python']}, streamlife {meta['streamlife']}"
        + (f" at {meta['git_commit'][:10]}" if meta.get("git_commit") else "")
        + f". Load average before and after: {meta['load_average']['before']} / "
        f"{meta['load_average']['after']} (above about 1, something else shared the machine). "
        "Every figure is measured in the same run as its references, taking turns with them; timings "
        "are the best of a few repeats after a warm-up, but for ingest rates, which are the mean over "
        "every round (see that section). " + RATIO_NOTE,
        "",
        "## Goals",
        "",
    ]
    goals = [goal for section in sections for goal in section.goals]
    lines += _md_table(
        ["goal", "measured", "verdict"],
        [[goal.target, goal.measured, f"**{verdict(goal)}**"] for goal in goals],
        right_from=3,
    )
    for section in sections:
        lines += ["", f"## {section.title}", "", section.about, ""]
        if section.figures:
            lines += _md_table(
                _columns(section), [_figure_cells(section, figure) for figure in section.figures], 2
            )
            noted = [figure for figure in section.figures if figure.note]
            if noted:
                lines.append("")
                lines += [f"- *{figure.label}*: {figure.note}" for figure in noted]
        for extra in section.tables:
            lines += ["", f"**{extra.title}**", ""]
            lines += _md_table(extra.columns, extra.rows, 1)
        if section.notes:
            lines.append("")
            lines += [f"- {note}" for note in section.notes]
    return "\n".join(lines) + "\n"


def write_atomically(path: str, text: str) -> None:
    """Write ``path`` whole or not at all: a run that dies leaves the last results as they were."""
    temporary = f"{path}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write(meta: dict[str, Any], sections: Sequence[Section], json_path: str, markdown_path: str) -> None:
    write_atomically(json_path, json.dumps(to_json(meta, sections), indent=2, ensure_ascii=False) + "\n")
    write_atomically(markdown_path, to_markdown(meta, sections))
