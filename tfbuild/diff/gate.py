"""`--fail-on` rules: which changes between two locks fail a CI step (`tfbuild diff`, exit 1).

A rule names a figure and the direction in which it may not move by more than a tolerance,
absolute or relative to the old figure:

    size:+5%                 a target grows by more than 5 %
    size:+4096               ... by more than 4096 bytes
    top1_agreement:-0.005    top-1 agreement (any output's) falls by more than 0.005
    accuracy_drop:+0.002     the accuracy lost to conversion grows by more than 0.002
    float_ops:+0             any op more left in float in an integer target
    verdict                  a verdict that was `passed` is no longer
    removed                  a target disappears from the lock

Only rebuilt targets are judged on figures (an unchanged target has the same key, so the same
file: it never fires), and only figures both sides measured. Rules are parsed strictly: a rule
that names no figure, has no sign or no number is a user error, not a gate that never fires.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from tfbuild.errors import UserError
from tfbuild.diff.compare import PASSED, TARGET_FIGURES, Figure, TargetChange, shown
from tfbuild.lock_summary import OUTPUT_FIGURES

FIGURES = ("size", *OUTPUT_FIGURES, *TARGET_FIGURES)
EVENTS = ("verdict", "removed")
TOLERANCE = re.compile(r"(?P<sign>[+-])(?P<amount>\d+(?:\.\d*)?|\.\d+)(?P<percent>%?)")
SYNTAX = "FIGURE:+N, FIGURE:-N, FIGURE:+N% or FIGURE:-N% (FIGURE one of " + ", ".join(FIGURES) + \
         "), or one of: " + ", ".join(EVENTS)


@dataclass(frozen=True)
class Rule:
    text: str
    metric: str  # a FIGURES name, or one of EVENTS
    direction: int = 0  # +1: growing is bad, -1: falling is bad
    tolerance: float = 0.0  # how far it may move in that direction (a fraction when relative)
    relative: bool = False

    def fired(self, change: TargetChange) -> list[str]:
        """Why this rule fails on one target's change (empty: it holds)."""
        if self.metric == "removed":
            return ["removed"] if change.status == "removed" else []
        if change.status != "rebuilt":
            return []
        if self.metric == "verdict":
            fell = change.old_verdict == PASSED and change.new_verdict not in (None, PASSED)
            return [f"verdict {change.old_verdict} -> {change.new_verdict}"] if fell else []
        return [f"{figure.label} {shown(figure.old)} -> {shown(figure.new)}, {figure.change}"
                for figure in change.figures if figure.metric == self.metric and self._exceeds(figure)]

    def _exceeds(self, figure: Figure) -> bool:
        moved = figure.relative if self.relative else figure.delta
        return moved is not None and not math.isnan(moved) and self.direction * moved > self.tolerance


@dataclass(frozen=True)
class Firing:
    rule: Rule
    target: str
    why: str

    def __str__(self) -> str:
        return f"{self.rule.text}: {self.target}: {self.why}"


def parse_rule(text: str) -> Rule:
    """A rule from its command-line text; anything else is a user error naming the syntax."""
    name, colon, tolerance = text.partition(":")
    if text in EVENTS:
        return Rule(text, text)
    found = TOLERANCE.fullmatch(tolerance)
    if name in EVENTS:
        problem = f"{name} takes no tolerance"
    elif name not in FIGURES:
        problem = f"unknown figure {name}" if name else "not a rule"
    elif found is None:
        problem = f"{name} needs a signed tolerance (+N, -N, +N% or -N%)" + (f", not {tolerance}" if colon else "")
    else:
        relative = bool(found["percent"])
        amount = float(found["amount"]) / (100 if relative else 1)
        return Rule(text, name, 1 if found["sign"] == "+" else -1, amount, relative)
    raise UserError(f"--fail-on {text}: {problem}", expected=SYNTAX)


def check(rules: list[Rule], changes: list[TargetChange]) -> list[Firing]:
    """Every rule that fires, on every target it fires on, rules in the order given."""
    return [Firing(rule, change.target, why) for rule in rules for change in changes for why in rule.fired(change)]
