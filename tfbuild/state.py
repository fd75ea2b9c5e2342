"""Build state (`.tfbuild/state.json`, private) and the lock file (`tfbuild.lock`, committed).

The state remembers, per target, the key it was built with, the inputs and resolved config
behind that key (so `explain` can name what changed) and the digests of its outputs. The lock
is the committed, diff-friendly subset: per target its inputs, outputs and tool versions, for
the last build that passed, and the layers `float_fallback: auto` kept in float (with the key
of the search that chose them, so a build with the same inputs reuses them without searching),
and the summary of its verdict (tfbuild/lock_summary.py). Both are written only after the outputs are in place.

Neither is trusted blindly: an entry of the state that is damaged (a truncated file, a hand
edit) is dropped and its target rebuilt, and a damaged lock (a merge conflict) is rewritten
from the state on the next build, keeping the readable entries of targets not built here.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

from tfbuild import jsonfile
from tfbuild.jsonfile import Damage, ListOf, MapOf, Maybe, OneOf
from tfbuild.fallback import lock_record
from tfbuild.lock_summary import SHAPE as SUMMARY
from tfbuild.lock_summary import summarize
from tfbuild.lockfile import DIGESTS, FALLBACK, Lock, read_lock
from tfbuild.lockfile import ENTRY as LOCK_ENTRY
from tfbuild.plan import REPORT_FILE, TargetPlan, diff_config, diff_inputs
from tfbuild.project import Project, write_json_atomic

STATE_VERSION = 1
HEADER = {"version": int, "targets": MapOf(object)}
# What classify() and the lock read from an entry; fields read with .get() are optional.
ENTRY = {
    "key": str, "inputs": DIGESTS, "config": MapOf(object), "outputs": DIGESTS,
    "verdict": OneOf(frozenset({"passed", "failed", "rejected"})), "time": (int, float),
    "loader_key?": Maybe(str), "loader_inputs?": Maybe(DIGESTS), "loader_outputs?": DIGESTS,
    "failures?": Maybe(ListOf(str)), "last_good?": Maybe(LOCK_ENTRY), "float_fallback?": FALLBACK,
    "summary?": SUMMARY,
}


class BuildState:
    def __init__(self, project: Project):
        self.project = project
        self.path = project.state_dir / "state.json"
        self.targets, self.damage, self.unreadable = _read_state(self.path)
        self._had_entries = bool(self.targets or self.unreadable)
        self._lock_on_disk: dict | None = None  # the lock document last read or written

    def get(self, target_id: str) -> dict | None:
        return self.targets.get(target_id)

    def lost(self, target_id: str) -> str | None:
        """Why there is no entry to trust for a target that has one on disk (None: never built)."""
        damage = self.unreadable.get(target_id) or self.damage
        return f"{self.project.rel(self.path)} is damaged ({damage})" if damage else None

    def damage_note(self) -> str | None:
        """One line for the user when the state was damaged: nothing in it is trusted blindly."""
        damage = self.damage or next(iter(self.unreadable.values()), None)
        if damage is None:
            return None
        return (f"{self.project.rel(self.path)} was damaged ({damage}): "
                "targets it no longer vouches for are rebuilt")

    def record(self, plan: TargetPlan, *, verdict: str, outputs: list[Path], failures: list[str],
               loader_outputs: list[Path] | None = None) -> None:
        digests = self.project.digests
        entry = {
            "key": plan.key, "inputs": plan.inputs, "config": plan.config,
            "loader_key": plan.loader_key if loader_outputs is not None else None,
            "loader_inputs": plan.loader_inputs,
            "outputs": {self.project.rel(p): digests.file(p) for p in outputs},
            "loader_outputs": {self.project.rel(p): digests.file(p) for p in loader_outputs or []},
            "verdict": verdict, "failures": failures, "time": time.time(),
        }
        report = plan.read_output(REPORT_FILE) if verdict == "passed" else None
        chosen = lock_record(report)
        if chosen is not None:
            entry["float_fallback"] = chosen  # what the next build reuses while the key holds
        summary = summarize(report)
        if summary is not None:
            entry["summary"] = summary  # what was measured, for the lock (tfbuild diff)
        previous = self.targets.get(plan.id)
        if verdict != "passed" and previous and previous.get("verdict") == "passed":
            entry["last_good"] = _last_good(previous)
        elif verdict != "passed" and previous:
            entry["last_good"] = previous.get("last_good")
        self.targets[plan.id] = entry

    def orphans(self, declared: set[str]) -> dict[str, list[Path]]:
        """Targets no recipe declares any more (a deleted recipe, a removed target), by id: the
        outputs and loaders their last build recorded, and their rejected files. A plain build
        never touches them; `tfbuild status` lists them and `tfbuild clean` removes them."""
        found: dict[str, list[Path]] = {}
        for target_id, entry in self.targets.items():
            if target_id not in declared:
                recorded = {**(entry.get("outputs") or {}), **(entry.get("loader_outputs") or {})}
                found[target_id] = [self.project.root / rel for rel in sorted(recorded)]
        rejected = self.project.state_dir / "rejected"
        for folder in sorted(rejected.glob("*/*")) if rejected.is_dir() else []:
            target_id = f"{folder.parent.name}:{folder.name}"
            if target_id not in declared and folder.is_dir():
                found.setdefault(target_id, []).extend(sorted(p for p in folder.rglob("*") if p.is_file()))
        return found

    def forget(self, target_id: str) -> None:
        self.targets.pop(target_id, None)

    def save(self) -> None:
        self._save_state()
        self._save_lock(self.lock_document())

    def save_if_changed(self) -> None:
        """After a run that may have built nothing: repair a damaged state, and write the lock
        when it does not say what the state says (damaged, missing, or behind it). A sound lock
        that agrees is left alone, so a no-op build writes nothing but the digest cache."""
        if self.damage or self.unreadable:
            self._save_state()
        else:
            self.project.digests.save()
        document = self.lock_document()
        if document != self._lock_on_disk:
            self._save_lock(document)

    def _save_state(self) -> None:
        write_json_atomic(self.path, {"version": STATE_VERSION, "targets": self.targets})
        self.damage, self.unreadable = None, {}
        self.project.digests.save()

    def _save_lock(self, document: dict) -> None:
        write_json_atomic(self.project.lock_path, document, indent=2)
        self._lock_on_disk = document

    @functools.cached_property
    def committed(self) -> Lock:
        """The lock as this run found it, read once (a damaged one is salvaged, then rewritten)."""
        lock = read_lock(self.project)
        if lock.sound:
            self._lock_on_disk = lock.document()
        return lock

    def lock_problem(self) -> str | None:
        """What was wrong with the committed lock, that the next save repairs (None: nothing)."""
        if self.committed.damage is not None:
            return f"was damaged ({self.committed.damage})"
        if not self.committed.exists and self._had_entries:
            return "was missing"
        return None

    def lock_document(self) -> dict:
        """The committed lock, updated with what this checkout built: entries of targets not
        built here (a fresh clone building one target) are kept where readable; recipes that are
        gone are dropped. The state is authoritative for every target it has a good build of."""
        targets = dict(self.committed.targets)
        for target_id, entry in self.targets.items():
            good = _last_good(entry) if entry["verdict"] == "passed" else entry.get("last_good")
            if good:
                targets[target_id] = good
        recipes = set(self.project.recipe_names())
        kept = {tid: entry for tid, entry in targets.items() if tid.split(":", 1)[0] in recipes}
        return Lock(self.committed.file, True, kept).document()


def _read_state(path: Path) -> tuple[dict[str, dict], Damage | None, dict[str, Damage]]:
    """The entries that can be trusted, the damage of the whole file, and the damage of each
    entry that cannot be trusted. What is not trusted is rebuilt, never guessed at."""
    document = jsonfile.read(path)
    if not document.exists:
        return {}, None, {}
    damage = document.damage or document.problem(HEADER)
    if damage is not None:
        return {}, damage, {}
    if document.value["version"] != STATE_VERSION:
        return {}, None, {}  # another tfbuild's state: rebuilt, as after an upgrade
    targets, unreadable = {}, {}
    for target_id, entry in document.value["targets"].items():
        problem = jsonfile.mismatch(document.text, entry, ENTRY, ("targets", target_id))
        if problem is None:
            targets[target_id] = entry
        else:
            unreadable[target_id] = problem
    return targets, None, unreadable


def _last_good(entry: dict) -> dict:
    """The lock's view of a good build. report.json is left out of its outputs: it holds
    measurements (timings, latency) that differ on every run and would make the committed lock
    churn; the shipped files (model, loaders, golden vectors) are deterministic."""
    inputs = entry["inputs"]
    outputs = {**entry["outputs"], **entry.get("loader_outputs", {})}
    good = {
        "key": entry["key"],
        "inputs": {k: v for k, v in inputs.items() if not k.startswith("version:")},
        "versions": {k.removeprefix("version:"): v for k, v in inputs.items() if k.startswith("version:")},
        "outputs": {k: v for k, v in outputs.items() if not k.endswith("/" + REPORT_FILE)},
    }
    if entry.get("float_fallback"):
        good["float_fallback"] = entry["float_fallback"]  # the layers kept in float, and its search key
    if entry.get("summary"):
        good["summary"] = entry["summary"]  # what was measured (deterministic for the key)
    return good


def _changed_outputs(project: Project, recorded: dict[str, str]) -> list[str]:
    reasons = []
    for rel, digest in sorted(recorded.items()):
        actual = project.digests.file(project.root / rel)
        if actual is None:
            reasons.append(f"{rel} is missing")
        elif actual != digest:
            reasons.append(f"{rel} was modified")
    return reasons


def classify(plan: TargetPlan, state: BuildState, *, always: bool = False) -> None:
    """Set plan.action and plan.reasons from the recorded state (up to date = key + outputs)."""
    entry = state.get(plan.id)
    if always:
        plan.action, plan.reasons = "convert", ["-B: rebuilding everything selected"]
        return
    if entry is None:
        plan.action, plan.reasons = "convert", [state.lost(plan.id) or "never built"]
        return
    last_good = entry.get("last_good")
    if entry["verdict"] != "passed" and last_good and last_good["key"] == plan.key \
            and not _changed_outputs(state.project, last_good["outputs"]):
        plan.action, plan.reasons = "none", []  # back to the inputs of the good build on disk
        return
    if entry["key"] != plan.key:
        plan.action = "convert"
        plan.reasons = diff_inputs(entry["inputs"], plan.inputs) + diff_config(entry["config"], plan.config)
        plan.reasons = plan.reasons or ["recipe changed"]
        return
    if entry["verdict"] == "rejected" and all(f.startswith("latency_ms") for f in entry.get("failures") or ["?"]):
        plan.action, plan.reasons = "convert", ["rejected only for latency, which is measured again"]
        return
    if entry["verdict"] != "passed":
        plan.action = "rejected"
        plan.reasons = ["rejected with these inputs: " + "; ".join(entry.get("failures") or ["failed"])]
        return
    missing = _changed_outputs(state.project, entry["outputs"])
    if missing:
        plan.action, plan.reasons = "convert", missing
        return
    if plan.loader_key is None and entry.get("loader_outputs"):
        plan.action, plan.reasons = "render", ["the mobile section was removed: old loaders are deleted"]
        return
    if plan.loader_key is not None and entry.get("loader_key") != plan.loader_key:
        plan.action = "render"
        old = entry.get("loader_inputs") or {}
        plan.reasons = (diff_inputs(old, plan.loader_inputs) + diff_config(
            {k: v for k, v in entry["config"].items() if k.startswith("mobile")},
            {k: v for k, v in plan.config.items() if k.startswith("mobile")})) or ["loaders never generated"]
        return
    changed_loaders = _changed_outputs(state.project, entry.get("loader_outputs") or {})
    if changed_loaders:
        plan.action, plan.reasons = "render", changed_loaders
        return
    plan.action, plan.reasons = "none", []
