"""The warm worker pool: workers run job after job, are retired after MAX_JOBS, and a model a
py: factory builds gets the same names whichever jobs its worker ran before."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

FACTORY = """\
import os
import keras


def make():
    with open(os.path.join(os.path.dirname(__file__), "pids.txt"), "a") as pids:
        pids.write(f"{os.getpid()}\\n")
    keras.utils.set_random_seed(0)
    x = keras.Input((4,), name="x")
    return keras.Model(x, keras.layers.Dense(3)(keras.layers.Dense(5)(x)))  # unnamed layers
"""


@pytest.fixture
def three(project):
    project.write("factory.py", FACTORY)
    for name in ("a", "b", "c"):
        project.recipe(name, "tfbuild: 1\nmodel: {source: 'py:factory:make'}\ntargets: {fp32: {}}\n")
    return project


def workers(project) -> list[str]:
    return project.path("pids.txt").read_text().split()


def output_names(project, recipe: str) -> list[str]:
    report = json.loads(project.path(f"build/{recipe}/fp32/report.json").read_text())
    return [t["name"] for t in report["signature"]["outputs"]]


def test_one_worker_runs_every_job_and_names_do_not_depend_on_it(three):
    result = three.run("-j1")
    assert result.code == 0 and "3 built" in result.out, result.text
    assert len(workers(three)) == 3 and len(set(workers(three))) == 1  # TensorFlow imported once
    assert output_names(three, "a") == output_names(three, "b") == output_names(three, "c")


def test_workers_are_retired_after_max_jobs(three):
    result = three.run("-j1", env={"TFBUILD_WORKER_MAX_JOBS": "1"})
    assert result.code == 0, result.text
    assert len(set(workers(three))) == 3


def test_a_worker_that_died_while_idle_is_replaced(tmp_path):
    """A kept worker killed while it waited (the OOM killer, a stray signal) gets no job: the
    next job goes to a new worker instead of failing to send (it was a BrokenPipeError)."""
    from tfbuild.pool import WorkerPool, start_worker

    dead = start_worker()
    dead.process.kill()
    dead.process.join()
    pool = WorkerPool(1, [dead])
    try:
        pool.submit("job", {"root": str(tmp_path), "log": str(tmp_path / "job.log"), "targets": []}, {})
        (worker, _), = pool.busy.values()
        assert worker is not dead and worker.process.is_alive()
    finally:
        pool.shutdown()


def test_a_second_worker_starts_only_when_it_pays():
    """The scheduler's rule, without TensorFlow: a worker that takes ~3 s to start is started
    for queued work longer than that per running worker, and only on a machine with a core idle."""
    from tfbuild.run import worth_starting

    assert worth_starting(10.0, 1, 3.0, idle=1.0)
    assert not worth_starting(2.5, 1, 3.0, idle=1.0)  # sub-second jobs: the running worker is faster
    assert not worth_starting(8.0, 3, 3.0, idle=1.0)  # three running finish 8 s of work before a fourth starts
    assert not worth_starting(10.0, 1, 3.0, idle=0.2)  # a loaded machine: the import steals the worker's CPU
    assert worth_starting(0.1, 4, 0.0, idle=0.0)  # a cluster's workers cost us nothing to start


def test_a_job_is_estimated_from_its_last_build_or_its_size(tmp_path):
    import json
    from types import SimpleNamespace

    from tfbuild.run import FIRST_BUILD_S, FIRST_BUILD_S_PER_MB, job_estimate

    model = tmp_path / "m.keras"
    model.write_bytes(b"x" * 2 ** 21)  # 2 MiB
    (tmp_path / "built").mkdir()
    (tmp_path / "built" / "report.json").write_text(json.dumps({"timings": {"convert_s": 1.5, "verify_s": 0.25,
                                                                          "load_s": 0.5, "reference_s": 0.25}}))

    def plan(folder: str):
        def read_output(name):
            path = tmp_path / folder / name
            return json.loads(path.read_text()) if path.is_file() else None
        return SimpleNamespace(read_output=read_output, input_paths={"file:m.keras": model})
    assert job_estimate([plan("built")]) == 1.75 + 0.75
    assert job_estimate([plan("built"), plan("built")]) == 2 * 1.75 + 0.75  # the model is loaded once a job
    assert job_estimate([plan("never")]) == FIRST_BUILD_S + 2 * FIRST_BUILD_S_PER_MB
