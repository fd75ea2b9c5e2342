"""Two locks compared target by target: what a change did to every model (`tfbuild diff`).

A target is `added` or `removed` when only one lock has it, `unchanged` when both have it with
the same key (the same inputs built the same file: its figures are not compared, so an
unchanged target can never fail a gate), and `rebuilt` when the keys differ. A rebuilt target
is compared figure by figure from the summaries the locks keep (tfbuild/lock_summary.py): the
size, each output's metrics, accuracy, the ops left in float, the layers kept in float, the
warnings, and the verdict. An entry of a version 1 lock has no summary: its target is still
classified, and says that there is nothing to compare.

No TensorFlow, no recipe composition: two JSON documents in, a list of changes out, so a
hundred targets compare in milliseconds.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

from tfbuild.errors import UserError
from tfbuild.lock_summary import DIGITS, number

STATUSES = ("added", "removed", "rebuilt", "unchanged")
PASSED = "passed"
# Figures of a whole target; per-output ones are lock_summary.OUTPUT_FIGURES.
TARGET_FIGURES = ("accuracy", "accuracy_drop", "float_ops", "float_layers", "warnings")


@dataclass(frozen=True)
class Figure:
    """One figure of a target on both sides (None where that side does not measure it)."""

    metric: str  # the name a --fail-on rule uses: size, top1_agreement, cosine, ...
    output: str | None  # the model output it is measured on, when the model has several
    old: float | None
    new: float | None

    @property
    def label(self) -> str:
        return f"{self.output}: {self.metric}" if self.output else self.metric

    @property
    def delta(self) -> float | None:
        """new - old; 0 for two equal figures (infinite ones too), None where one side lacks it."""
        if self.old is None or self.new is None or math.isnan(self.old) or math.isnan(self.new):
            return None
        if self.old == self.new:
            return 0.0
        moved = self.new - self.old  # to the lock's precision: 0.98 - 0.99 is -0.01, not -0.0100...09
        return float(f"{moved:.{DIGITS}g}") if math.isfinite(moved) else moved

    @property
    def relative(self) -> float | None:
        """The change as a fraction of the old figure (infinite when the old one was 0)."""
        delta, old = self.delta, self.old
        if delta is None or delta == 0 or old is None:
            return delta
        if old == 0 or math.isinf(old):
            return math.copysign(math.inf, delta) if self.old == 0 else None
        return delta / abs(old)

    @property
    def change(self) -> str:
        """`+1024 (+2.31%)`: the change, absolute and relative to the old figure."""
        relative = self.relative
        share = f" ({relative:+.2%})" if relative is not None and math.isfinite(relative) and relative else ""
        return shown(self.delta, signed=True) + share


@dataclass
class TargetChange:
    target: str
    status: str  # one of STATUSES
    old_verdict: str | None = None
    new_verdict: str | None = None
    figures: list[Figure] = field(default_factory=list)
    float_layers: tuple[list[str] | None, list[str] | None] = (None, None)
    note: str | None = None  # why there is nothing to compare

    @property
    def flipped(self) -> bool:
        """A verdict that changed between the sides (passed -> unverified, say)."""
        return None not in (self.old_verdict, self.new_verdict) and self.old_verdict != self.new_verdict

    @property
    def changed_figures(self) -> list[Figure]:
        return [f for f in self.figures if f.delta != 0]


def compare(old: dict[str, dict], new: dict[str, dict], targets: list[str] | None = None) -> list[TargetChange]:
    """The change of every target in either lock (`old`, `new`: target id -> lock entry), in
    target order; `targets`, if given, the ids to keep."""
    ids = sorted(old.keys() | new.keys()) if targets is None else targets
    return [_change(target, old.get(target), new.get(target)) for target in ids]


def select(old: dict[str, dict], new: dict[str, dict], patterns: list[str]) -> list[str]:
    """The target ids of either lock the patterns name (`recipe`, `recipe:target`, globs of
    either, as the build takes them); a pattern that names none is a user error."""
    ids = sorted(old.keys() | new.keys())
    if not patterns:
        return ids
    chosen: set[str] = set()
    for pattern in patterns:
        found = {t for t in ids if fnmatch.fnmatchcase(t if ":" in pattern else t.split(":", 1)[0], pattern)}
        if not found:
            raise UserError(f"no target in either lock matches {pattern}", key=pattern,
                            expected="recipe, recipe:target or a glob of them ('*:int8')")
        chosen |= found
    return [t for t in ids if t in chosen]


def _change(target: str, old: dict | None, new: dict | None) -> TargetChange:
    layers = (_layers(old), _layers(new))
    if old is None or new is None:
        return TargetChange(target, "added" if old is None else "removed", _verdict(old), _verdict(new),
                            _figures(_summary(old), _summary(new)), layers)
    if old["key"] == new["key"]:
        return TargetChange(target, "unchanged", _verdict(old), _verdict(new), float_layers=layers)
    change = TargetChange(target, "rebuilt", _verdict(old), _verdict(new), float_layers=layers)
    if _summary(old) and _summary(new):
        change.figures = _figures(_summary(old), _summary(new))
    else:
        missing = [side for side, entry in (("the old", old), ("the new", new)) if not _summary(entry)]
        change.note = f"nothing to compare: {' and '.join(missing)} entry has no figures (lock_version 1)"
    return change


def _summary(entry: dict | None) -> dict | None:
    return entry.get("summary") if entry else None


def _verdict(entry: dict | None) -> str | None:
    return (entry.get("summary") or {}).get("verdict") if entry else None


def _layers(entry: dict | None) -> list[str] | None:
    summary = (entry or {}).get("summary")
    return list(summary.get("float_layers") or []) if summary else None


def _figures(old: dict | None, new: dict | None) -> list[Figure]:
    """Every figure either summary has, old beside new (None on a side that lacks it). Outputs
    are named only when the model has several: a single output's metrics are the target's."""
    several = max(len((s or {}).get("outputs") or {}) for s in (old, new)) > 1
    old_values, new_values = _values(old, several), _values(new, several)
    return [Figure(metric, output, old_values.get((metric, output)), new_values.get((metric, output)))
            for metric, output in dict.fromkeys([*old_values, *new_values])]


def _values(summary: dict | None, several: bool) -> dict[tuple[str, str | None], float | None]:
    """A summary's figures by (metric, output); counts a summary leaves out when zero are 0."""
    if not summary:
        return {}
    values: dict[tuple[str, str | None], float | None] = {("size", None): number(summary.get("size_bytes"))}
    for output, metrics in (summary.get("outputs") or {}).items():
        for metric, value in metrics.items():
            values[(metric, output if several else None)] = number(value)
    integer = "float_ops" in summary or "float_layers" in summary
    for metric in TARGET_FIGURES:
        if metric == "float_layers":
            value = len(summary.get("float_layers") or []) if integer else None
        elif metric == "warnings":
            value = summary.get("warnings", 0)
        else:
            value = summary.get(metric)
        if value is not None:
            values[(metric, None)] = number(value)
    return values


def shown(value: float | None, signed: bool = False) -> str:
    """A figure for people: whole numbers whole (sizes, counts), others to the lock's precision."""
    if value is None:
        return "-"
    sign = "+" if signed else ""
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value):{sign}d}"
    return f"{value:{sign}.{DIGITS}g}"
