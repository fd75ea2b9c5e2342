"""The scheduler (run.Builder) over a fake executor (fakes.py): no TensorFlow, no worker
process, seconds. What is checked is everything the scheduler owns: promotion, the state and the
lock, what a failure, a rejection, a crash or a lost worker does to the other targets, and `-k`.
"""

from __future__ import annotations

import pytest

from fakes import FakeExecutor, build, built, make_project
from tfbuild import jobs
from tfbuild.api import classified
from tfbuild.jobs import Event, JobSpec
from tfbuild.lockfile import read_lock
from tfbuild.project import Project


@pytest.fixture
def project(tmp_path) -> Project:
    return make_project(tmp_path / "proj", "a", "b")


def test_built_targets_are_promoted_recorded_and_locked(project):
    executor = FakeExecutor()
    outcomes = build(project, executor)
    assert {tid: o.status for tid, o in outcomes.items()} == {
        "a:fp32": "built", "a:fp16": "built", "b:fp32": "built", "b:fp16": "built"}
    assert (project.root / "build/a/fp16/model.tflite").read_bytes() == b"tflite a:fp16"
    assert not list((project.root / "build/a").glob(".tfbuild-staging-*")), "staging is removed"
    assert executor.shut
    lock = read_lock(project)
    assert sorted(lock.targets) == sorted(outcomes)
    plans, _ = classified(project, [], [])
    assert [p.action for p in plans] == ["none"] * 4, "a second build has nothing to do"


def test_one_job_per_recipe_carries_its_targets_and_the_versions_its_keys_name(project):
    executor = FakeExecutor()
    build(project, executor)
    assert [[t["name"] for t in job["targets"]] for job in executor.submitted] == [["fp32", "fp16"]] * 2
    job = executor.submitted[0]
    assert job["version_inputs"]["version:tensorflow"] == job["targets"][0]["versions"]["tensorflow"]


def test_a_failed_target_is_recorded_and_stops_the_next_jobs_unless_keep_going(project):
    def first_fails(job: JobSpec) -> list[Event]:
        first, second = job["targets"]
        return [jobs.started(first["name"]), jobs.failed(first["name"], "while converting: boom", 0.1),
                *built(second), jobs.finished()]

    outcomes = build(project, FakeExecutor(first_fails))
    assert outcomes["a:fp32"].status == "failed" and "boom" in outcomes["a:fp32"].messages[0]
    assert outcomes["a:fp16"].status == "built", "the worker went on within its job"
    assert {outcomes["b:fp32"].status, outcomes["b:fp16"].status} == {"skipped"}
    outcomes = build(project, FakeExecutor(first_fails), keep_going=True)
    assert outcomes["b:fp32"].status == "failed" and outcomes["b:fp16"].status == "built"
    assert outcomes["a:fp16"].status == "up-to-date"


def test_a_machine_fault_is_not_recorded_against_the_inputs(project):
    def disk_full(job: JobSpec) -> list[Event]:
        return [event for target in job["targets"] for event in
                (jobs.started(target["name"]), jobs.failed(target["name"], "disk full", 0.1, machine_fault=True))
                ] + [jobs.finished()]

    outcomes = build(project, FakeExecutor(disk_full), keep_going=True)
    assert {o.status for o in outcomes.values()} == {"failed"}
    plans, _ = classified(project, [], [])
    assert all(p.action == "convert" and "never built" in " ".join(p.reasons) for p in plans), \
        [p.reasons for p in plans]


def test_a_rejected_target_keeps_the_last_good_output(project):
    build(project, FakeExecutor())
    good = (project.root / "build/a/fp32/model.tflite").read_bytes()
    outcomes = build(project, FakeExecutor(lambda job: [
        event for target in job["targets"] for event in built(target, "rejected")] + [jobs.finished()]),
        keep_going=True, always=True)
    assert outcomes["a:fp32"].status == "rejected"
    assert (project.root / "build/a/fp32/model.tflite").read_bytes() == good
    assert (project.state_dir / "rejected/a/fp32/model.tflite").is_file()


def test_a_lost_worker_crashes_the_targets_it_had_not_finished(project):
    def dies_after_one(job: JobSpec) -> list[Event]:
        return built(job["targets"][0]) + [jobs.lost("killed by SIGKILL (out of memory?)")]

    outcomes = build(project, FakeExecutor(dies_after_one), keep_going=True)
    assert outcomes["a:fp32"].status == "built"
    assert outcomes["a:fp16"].status == "crashed"
    assert "worker died while" in outcomes["a:fp16"].messages[0]


def test_a_user_error_in_a_job_fails_its_targets_with_the_located_message(project):
    from tfbuild.errors import UserError

    error = UserError("the model uses 'Swish', which is not registered", file="recipes/a.yaml",
                      key="model.custom_objects.Swish")
    outcomes = build(project, FakeExecutor(lambda job: [jobs.user_error(error.to_dict())]), keep_going=True)
    assert {o.status for o in outcomes.values()} == {"error"}
    assert "recipes/a.yaml" in outcomes["a:fp32"].messages[0]


def test_a_crash_of_one_target_leaves_the_others(project):
    def second_crashes(job: JobSpec) -> list[Event]:
        first, second = job["targets"]
        return [*built(first), jobs.started(second["name"]),
                jobs.crashed("converting", "SystemError: bad", target=second["name"]), jobs.finished()]

    outcomes = build(project, FakeExecutor(second_crashes), keep_going=True)
    assert [outcomes[t].status for t in ("a:fp32", "a:fp16", "b:fp32", "b:fp16")] == \
        ["built", "crashed", "built", "crashed"]


def test_job_ending_events():
    assert jobs.ends_job(jobs.finished()) and jobs.ends_job(jobs.user_error({}))
    assert jobs.ends_job(jobs.crashed("loading the model", "boom"))
    assert not jobs.ends_job(jobs.crashed("converting", "boom", target="fp32"))
    assert not jobs.ends_job(jobs.failed("fp32", "boom", 1.0))
