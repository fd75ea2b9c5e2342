"""Keys, up-to-date checks, the state and the lock, each in isolation over a fake executor.

Invariant 1 of the design says up to date means: the key (every input that can change an
output) is unchanged and the outputs are present with their recorded digests. These tests change
one input at a time and ask the planner, without converting anything.
"""

from __future__ import annotations

import json
import os

import pytest

from fakes import FakeExecutor, build, make_project
from tfbuild.api import classified
from tfbuild.conversion.sources import VERSIONS_SEAM
from tfbuild.lockfile import check_lock, read_lock
from tfbuild.project import Project


@pytest.fixture
def project(tmp_path) -> Project:
    built = make_project(tmp_path / "proj", "a", "b")
    build(built, FakeExecutor())
    return Project.open(built.root)


def actions(project: Project) -> dict[str, tuple[str, str]]:
    plans, _ = classified(Project.open(project.root), [], [])
    return {plan.id: (plan.action, "; ".join(plan.reasons)) for plan in plans}


def test_a_model_edit_rebuilds_that_recipe_only(project):
    (project.root / "models/a.keras").write_bytes(b"retrained")
    found = actions(project)
    assert found["a:fp32"] == ("convert", "models/a.keras changed")
    assert found["b:fp32"][0] == "none"


def test_a_target_setting_rebuilds_that_target_only_and_says_which(project):
    recipe = project.root / "recipes/a.yaml"
    recipe.write_text(recipe.read_text().replace("fp16: {quantize: float16}", "fp16: {quantize: dynamic}"))
    found = actions(project)
    assert found["a:fp16"] == ("convert", "targets.fp16.quantize: float16 -> dynamic")
    assert found["a:fp32"][0] == "none"


def test_a_tool_upgrade_rebuilds_every_target_of_the_kinds_that_use_it(project, monkeypatch):
    monkeypatch.setenv(VERSIONS_SEAM, json.dumps({"tensorflow": "99.0.0"}))
    found = actions(project)
    assert all(action == "convert" and "tensorflow" in why and "-> 99.0.0" in why
               for action, why in found.values()), found
    monkeypatch.setenv(VERSIONS_SEAM, json.dumps({"some-tool-no-kind-uses": "1.0"}))
    assert {action for action, _ in actions(project).values()} == {"none"}


def test_a_damaged_or_missing_output_is_rebuilt_and_a_touched_one_is_not(project):
    output = project.root / "build/b/fp32/model.tflite"
    stat = output.stat()
    os.utime(output, (stat.st_atime + 10, stat.st_mtime + 10))
    assert actions(project)["b:fp32"][0] == "none", "same bytes, new mtime: up to date"
    output.write_bytes(b"damaged")
    assert actions(project)["b:fp32"][0] == "convert"
    output.unlink()
    assert actions(project)["b:fp32"][0] == "convert"


def test_the_lock_describes_what_was_built_and_check_names_what_changed(project):
    lock = read_lock(project)
    assert lock.sound and sorted(lock.targets) == ["a:fp16", "a:fp32", "b:fp16", "b:fp32"]
    plans, _ = classified(project, [], [])
    assert all(check_lock(plan, lock) == [] for plan in plans)
    (project.root / "models/b.keras").write_bytes(b"retrained")
    plans, _ = classified(Project.open(project.root), ["b"], [])
    assert {plan.id: check_lock(plan, lock) for plan in plans} == {
        "b:fp32": ["models/b.keras changed"], "b:fp16": ["models/b.keras changed"]}
