"""`tfbuild diff` for people and machines: a terminal table, a pull-request comment, JSON.

All three show the same rows: per target that changed, its change (added, removed, rebuilt)
and each figure that differs, old -> new with the change absolute and relative; a verdict that
flips gets a row of its own, marked. Unchanged targets are counted, not listed (JSON lists
them). The rules of a gate that fired follow the table, so the comment says why CI failed.
"""

from __future__ import annotations

import json
import math
import re

from tfbuild.diff.compare import STATUSES, Figure, TargetChange, shown

FORMATS = ("table", "markdown", "json")
COLUMNS = ("target", "status", "figure", "old", "new", "change")
HEADLINE = ("size", "top1_agreement", "accuracy", "float_ops")  # what an added or removed target shows
FLIP = "verdict flipped"


def rows(changes: list[TargetChange]) -> list[list[str]]:
    """The table's rows: the target named on its first row only."""
    found = []
    for change in changes:
        if change.status == "unchanged":
            continue
        lines = _lines(change)
        for index, line in enumerate(lines):
            found.append([change.target if index == 0 else "", change.status if index == 0 else "", *line])
    return found


def _lines(change: TargetChange) -> list[list[str]]:
    lines: list[list[str]] = []
    if change.flipped:
        lines.append(["verdict", change.old_verdict or "-", change.new_verdict or "-", FLIP])
    figures = change.changed_figures if change.status == "rebuilt" else [
        f for f in change.figures if f.metric in HEADLINE]
    lines += [[f.label, shown(f.old), shown(f.new), f.change if change.status == "rebuilt" else ""] for f in figures]
    old_layers, new_layers = change.float_layers
    if change.status == "rebuilt" and old_layers is not None and new_layers is not None and old_layers != new_layers:
        lines.append(["layers kept in float", ", ".join(old_layers) or "none", ", ".join(new_layers) or "none", ""])
    if change.note:
        lines.append([change.note, "", "", ""])
    elif change.status == "rebuilt" and not lines:
        lines.append(["same figures", "", "", ""])
    return lines or [["no figures recorded", "", "", ""]]


def counts(changes: list[TargetChange]) -> str:
    number = {status: sum(c.status == status for c in changes) for status in STATUSES}
    return ", ".join(f"{number[s]} {s}" for s in STATUSES)


def table(changes: list[TargetChange], heading: str, fired: list[str], console) -> None:
    from rich.table import Table

    console.print(f"{heading}: {counts(changes)}", markup=False, highlight=False)
    found = rows(changes)
    if found:
        grid = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
        for column in COLUMNS:
            grid.add_column(column, overflow="fold")
        for row in found:
            style = "red" if row[-1] == FLIP or row[1] == "removed" else "green" if row[1] == "added" else ""
            grid.add_row(*row, style=style)
        console.print(grid)
    for line in _gate_lines(fired):
        console.print(line, markup=False, highlight=False)


def markdown(changes: list[TargetChange], heading: str, fired: list[str]) -> str:
    """A pull-request comment: a heading, the counts, the table, and the gate's verdict."""
    lines = [f"### {_escape(heading)}", "", counts(changes), ""]
    found = rows(changes)
    if found:
        lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for row in found:
            cells = [_escape(cell) for cell in row]
            if row[-1] == FLIP:
                cells[-1] = f"**{cells[-1]}**"
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if fired:
        lines += [f"**Gate failed**: {len(fired)} rule(s) fired", ""] + [f"- {_escape(line)}" for line in fired]
    return "\n".join(lines).rstrip() + "\n"


def as_json(changes: list[TargetChange], revision: dict, fired: list[dict]) -> str:
    document = {
        "revision": revision,
        "counts": {s: sum(c.status == s for c in changes) for s in STATUSES},
        "targets": [_target(change) for change in changes],
        "fired": fired,
    }
    return json.dumps(document, indent=2) + "\n"


def _target(change: TargetChange) -> dict:
    old_layers, new_layers = change.float_layers
    return {"target": change.target, "status": change.status, "old_verdict": change.old_verdict,
            "new_verdict": change.new_verdict, "verdict_flipped": change.flipped,
            "float_layers": {"old": old_layers, "new": new_layers}, "note": change.note,
            "figures": [_figure(f) for f in change.figures]}


def _figure(figure: Figure) -> dict:
    return {"figure": figure.metric, "output": figure.output, "old": _finite(figure.old),
            "new": _finite(figure.new), "change": _finite(figure.delta), "relative": _finite(figure.relative)}


def _finite(value: float | None):
    """JSON numbers are finite: others as the lock writes them ("inf", "-inf", "nan")."""
    return value if value is None or math.isfinite(value) else str(value)


def _gate_lines(fired: list[str]) -> list[str]:
    return [f"gate failed: {len(fired)} rule(s) fired"] + [f"  {line}" for line in fired] if fired else []


MARKDOWN_SPECIAL = re.compile(r"([\\`*_|<\[\]#])")


def _escape(text: str) -> str:
    """Cell text as itself in GitHub markdown: tensor names may hold `|`, `*` or `_`."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", text)
