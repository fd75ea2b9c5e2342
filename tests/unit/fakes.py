"""A fake executor and throwaway projects for the unit layer: no TensorFlow, no worker process.

The fake speaks the job contract (tfbuild.jobs) as a worker would: it writes each target's files
into the staging folder the job names, then hands out the events a scripted worker would send.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from tfbuild import jobs
from tfbuild.api import classified
from tfbuild.jobs import Event, JobSpec, TargetSpec
from tfbuild.project import Project
from tfbuild.run import Builder, Options


RECIPE = """\
tfbuild: 1
model:
  source: models/{name}.keras
targets:
  fp32: {{}}
  fp16: {{quantize: float16}}
"""


def make_project(root: Path, *names: str) -> Project:
    """Recipes over model files that are only bytes: planning hashes them, nothing loads them."""
    for name in names:
        (root / "recipes").mkdir(parents=True, exist_ok=True)
        (root / "models").mkdir(parents=True, exist_ok=True)
        (root / "recipes" / f"{name}.yaml").write_text(RECIPE.format(name=name))
        (root / "models" / f"{name}.keras").write_bytes(f"model {name}".encode())
    return Project.open(root)


def built(target: TargetSpec, verdict: str = "passed") -> list[Event]:
    """What a worker sends for a target it converted: files staged first, then `done`."""
    stage = Path(target["stage"])
    stage.mkdir(parents=True, exist_ok=True)
    (stage / "model.tflite").write_bytes(f"tflite {target['recipe']}:{target['name']}".encode())
    (stage / "report.json").write_text(json.dumps({"verdict": verdict}))
    failures = ["top1_agreement 0.5 < 0.99"] if verdict == "rejected" else []
    result: jobs.TargetResult = {"files": ["model.tflite", "report.json"], "verdict": verdict,
                                 "failures": failures, "warnings": []}
    return [jobs.started(target["name"]), jobs.done(target["name"], result, 0.01)]


def every_target_built(job: JobSpec) -> list[Event]:
    return [event for target in job["targets"] for event in built(target)] + [jobs.finished()]


class FakeExecutor:
    """An executor whose worker is a function from a job to its events."""

    ships_inputs = False
    start_cost_s = 0.0

    def __init__(self, worker: Callable[[JobSpec], list[Event]] = every_target_built, slots: int = 1):
        self.worker = worker
        self.slots = slots
        self.pending: list[tuple[str, Event]] = []
        self.submitted: list[JobSpec] = []
        self.shut = False

    def started(self) -> int:
        return self.slots

    def submit(self, job_id: str, job: JobSpec, inputs: dict[str, Path]) -> str:
        self.submitted.append(job)
        self.pending += [(job_id, event) for event in self.worker(job)]
        return "queued"

    def events(self, timeout: float) -> list[tuple[str, Event]]:
        out, self.pending = self.pending, []
        return out

    def shutdown(self) -> None:
        self.shut = True


class Quiet:
    """A progress display that shows nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def build(project: Project, executor: FakeExecutor, *, keep_going: bool = False, always: bool = False):
    plans, state = classified(project, [], [], always)
    outcomes = Builder(project, state, Quiet(), Options(keep_going), executor).build(plans)
    return {outcome.plan.id: outcome for outcome in outcomes}
