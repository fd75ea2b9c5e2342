"""Build state (`.tfbuild/state.json`, private) and the lock file (`tfbuild.lock`, committed).

The state remembers, per target, the key it was built with, the inputs and resolved config
behind that key (so `explain` can name what changed) and the digests of its outputs. The lock
is the committed, diff-friendly subset: per target its inputs, outputs and tool versions, for
the last build that passed. Both are written only after the outputs are in place.
"""

from __future__ import annotations

import time
from pathlib import Path

from tfbuild.plan import REPORT_FILE, TargetPlan, diff_config, diff_inputs
from tfbuild.project import Project, read_json, write_json_atomic

STATE_VERSION = 1
LOCK_VERSION = 1


class BuildState:
    def __init__(self, project: Project):
        self.project = project
        self.path = project.state_dir / "state.json"
        data = read_json(self.path)
        self.targets: dict[str, dict] = data.get("targets", {}) if data.get("version") == STATE_VERSION else {}

    def get(self, target_id: str) -> dict | None:
        return self.targets.get(target_id)

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
        previous = self.targets.get(plan.id)
        if verdict != "passed" and previous and previous.get("verdict") == "passed":
            entry["last_good"] = _last_good(previous)
        elif verdict != "passed" and previous:
            entry["last_good"] = previous.get("last_good")
        self.targets[plan.id] = entry

    def forget(self, target_id: str) -> None:
        self.targets.pop(target_id, None)

    def save(self) -> None:
        write_json_atomic(self.path, {"version": STATE_VERSION, "targets": self.targets})
        self.project.digests.save()
        write_json_atomic(self.project.lock_path, self.lock_document(), indent=2)

    def lock_document(self) -> dict:
        """The committed lock, updated with what this checkout built: entries of targets not
        built here (a fresh clone building one target) are kept; recipes that are gone are dropped."""
        existing = read_json(self.project.lock_path).get("targets", {})
        recipes = set(self.project.recipe_names())
        targets = {tid: entry for tid, entry in existing.items() if tid.split(":", 1)[0] in recipes}
        for target_id, entry in self.targets.items():
            good = entry if entry["verdict"] == "passed" else entry.get("last_good")
            if good:
                targets[target_id] = _last_good(good)
        return {"lock_version": LOCK_VERSION, "targets": dict(sorted(targets.items()))}


def _last_good(entry: dict) -> dict:
    """The lock's view of a good build. report.json is left out of its outputs: it holds
    measurements (timings, latency) that differ on every run and would make the committed lock
    churn; the shipped files (model, loaders, golden vectors) are deterministic."""
    inputs = entry["inputs"]
    outputs = {**entry["outputs"], **entry.get("loader_outputs", {})}
    return {
        "key": entry["key"],
        "inputs": {k: v for k, v in inputs.items() if not k.startswith("version:")},
        "versions": {k.removeprefix("version:"): v for k, v in inputs.items() if k.startswith("version:")},
        "outputs": {k: v for k, v in outputs.items() if not k.endswith("/" + REPORT_FILE)},
    }


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
        plan.action, plan.reasons = "convert", ["never built"]
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


def check_lock(plan: TargetPlan, lock: dict) -> list[str]:
    """Why the committed lock does not describe this target's current inputs ([] if it does)."""
    entry = lock.get("targets", {}).get(plan.id)
    if entry is None:
        return ["not in tfbuild.lock"]
    if entry["key"] == plan.key:
        return []
    old = {**entry["inputs"], **{f"version:{k}": v for k, v in entry["versions"].items()}}
    reasons = diff_inputs(old, plan.inputs)
    if old.get("config") != plan.inputs.get("config"):
        reasons.append("resolved recipe settings changed")
    return reasons or ["key changed"]
