"""The committed lock file, `tfbuild.lock`: read strictly, salvaged after a merge.

Git merges the lock like any file, and two branches that each rebuilt a target leave conflict
markers in it. A damaged lock is therefore ordinary, and it is never taken for a missing one:
reading names the damage by line and cause (`line 3: merge conflict marker`), `tfbuild check`
stops on it (exit 2), and a build rewrites it from the build state (`state.BuildState`).

What a build cannot rebuild from its own state are the entries of targets it never built in
this checkout, so reading also salvages every entry that is still readable. Conflict markers get
the Cargo / npm treatment: each side of the merge is read as a lock of its own; entries both
sides agree on, or that only one side has, are kept; entries the sides disagree on are dropped,
for the build state to supply (or for `tfbuild check` to report as not in the lock).

Versions: 2 added each entry's `summary` (tfbuild/lock_summary.py), what was measured of the
build; a version 1 lock still reads, its entries as entries without a summary, and is written
as version 2 by the next build that records a target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tfbuild import jsonfile
from tfbuild.errors import UserError
from tfbuild.jsonfile import Damage, ListOf, MapOf
from tfbuild.lock_summary import SHAPE as SUMMARY
from tfbuild.plan import TargetPlan, diff_inputs
from tfbuild.project import Project

LOCK_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: entries without a summary
DIGESTS = MapOf((str, type(None)))
FALLBACK = {"layers": ListOf(str), "search_key": str}  # float_fallback: auto's choice
ENTRY = {"key": str, "inputs": DIGESTS, "versions": DIGESTS, "outputs": DIGESTS, "float_fallback?": FALLBACK,
         "summary?": SUMMARY}
HEADER = {"lock_version": int, "targets": MapOf(object)}
REGENERATE = "run tfbuild to regenerate it from the build state, then commit it"


@dataclass
class Lock:
    file: str  # as shown to the user
    exists: bool
    targets: dict[str, dict] = field(default_factory=dict)  # the readable entries
    damage: Damage | None = None

    def document(self) -> dict:
        return {"lock_version": LOCK_VERSION, "targets": dict(sorted(self.targets.items()))}

    @property
    def sound(self) -> bool:
        return self.exists and self.damage is None

    def require_sound(self) -> None:
        """For `tfbuild check`: a missing or a damaged lock is a user error, each named as itself."""
        if not self.exists:
            raise UserError("no lock file", file=self.file, hint="run tfbuild once and commit tfbuild.lock")
        if self.damage is not None:
            raise UserError(f"{self.damage} (the lock file is damaged)", file=self.file, hint=REGENERATE)


def read_lock(project: Project) -> Lock:
    """The lock as found: missing, sound, or damaged with its readable entries salvaged.
    A lock written by a newer tfbuild is a user error: rewriting it would downgrade it."""
    shown = project.rel(project.lock_path)
    document = jsonfile.read(project.lock_path)
    if not document.exists:
        return Lock(shown, exists=False)
    return _lock(document, shown)


def parse_lock(text: str, shown: str) -> Lock:
    """A lock from its text (as `git show` prints a committed one), read as `read_lock` reads
    the file: `shown` names it in messages (`main:tfbuild.lock`)."""
    value, damage = jsonfile.parse(text)
    return _lock(jsonfile.Document(True, text, value, damage), shown)


def _lock(document: jsonfile.Document, shown: str) -> Lock:
    if document.damage is None:
        return Lock(shown, True, *_entries(document.text, document.value, shown))
    sides = jsonfile.conflict_sides(document.text) if document.damage.cause == jsonfile.CONFLICT else None
    if sides is None:
        return Lock(shown, True, {}, document.damage)
    return Lock(shown, True, _merge(*(_side(text, shown) for text in sides)), document.damage)


def _side(text: str, shown: str) -> dict[str, dict] | None:
    """The readable entries of one side of a conflict (None if that side is not a lock)."""
    value, damage = jsonfile.parse(text)
    if damage is not None:
        return None
    targets, damage = _entries(text, value, shown)
    return targets if targets or damage is None else None


def _merge(ours: dict | None, theirs: dict | None) -> dict[str, dict]:
    """Per target: kept where the sides agree or only one side has it, dropped where they differ."""
    if ours is None or theirs is None:
        return ours or theirs or {}
    merged = {}
    for target_id in ours.keys() | theirs.keys():
        mine, other = ours.get(target_id), theirs.get(target_id)
        if mine is None or other is None or mine == other:
            merged[target_id] = mine or other
    return merged


def _entries(text: str, value, shown: str) -> tuple[dict[str, dict], Damage | None]:
    damage = jsonfile.mismatch(text, value, HEADER)
    if damage is not None:
        return {}, damage
    version = value["lock_version"]
    if version not in READABLE_VERSIONS:
        line = jsonfile.line_of(text, ("lock_version",))
        if version > LOCK_VERSION:
            raise UserError(f"line {line}: lock_version {version} is from a newer tfbuild "
                            f"(this one reads {LOCK_VERSION})", file=shown,
                            hint="upgrade tfbuild, or delete tfbuild.lock to rewrite it with this version")
        return {}, Damage(line, f"unknown lock_version {version} (this tfbuild reads {LOCK_VERSION})")
    targets, damage = {}, None
    for target_id, entry in value["targets"].items():
        problem = jsonfile.mismatch(text, entry, ENTRY, ("targets", target_id))
        if problem is None:
            targets[target_id] = entry
        damage = damage or problem
    return targets, damage


def check_lock(plan: TargetPlan, lock: Lock) -> list[str]:
    """Why the committed lock does not describe this target's current inputs ([] if it does)."""
    entry = lock.targets.get(plan.id)
    if entry is None:
        return ["not in tfbuild.lock"]
    if entry["key"] == plan.key:
        return []
    old = {**entry["inputs"], **{f"version:{k}": v for k, v in entry["versions"].items()}}
    reasons = diff_inputs(old, plan.inputs)
    if old.get("config") != plan.inputs.get("config"):
        reasons.append("resolved recipe settings changed")
    return reasons or ["key changed"]
