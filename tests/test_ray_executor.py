"""`--executor ray`: builds on a real Ray cluster, started by these tests as separate processes
(`ray start --head` on this machine, one cluster for the session), compared byte for byte with
local builds; a Ray worker killed in the middle of a job; a node with other tool versions;
an unreachable cluster; no Ray installed; a bad `ray:` section."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_user_error
from gates import writer_when_blocked
from ray_head import free_port, start_ray_head, start_ray_node, stop_ray_node
from models import dense_classifier, features, write_dense_project

BLOCKS = """\
import keras


class Gain(keras.layers.Layer):
    \"\"\"A custom layer: only the project's own module knows it.\"\"\"

    def call(self, x):
        return x * 1.5 + 0.25
"""

FACTORY = """\
import keras

from nets.blocks import Gain


def make():
    keras.utils.set_random_seed(3)
    x = keras.Input((6,), name="x")
    h = Gain()(keras.layers.Dense(8, activation="relu")(x))
    return keras.Model(x, [keras.layers.Dense(3, activation="softmax", name="probs")(h),
                           keras.layers.Dense(2, name="box")(h)])
"""


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster (2 CPUs) in its own processes (`ray start --head --block`, in its
    own process group, which is stopped at the end: no other Ray on the machine is touched): its
    GCS address and its Ray Client address. A short temp dir: Ray's socket paths must fit in 107
    bytes."""
    head, address = start_ray_head(client_port := free_port())
    try:
        yield address, f"ray://127.0.0.1:{client_port}"
    finally:
        stop_ray_node(head)


def write_variety(project) -> None:
    """Three recipes that need different things shipped: data files and two targets; a py:
    factory importing the project's own package (multi-output, custom layer); a SavedModel
    folder."""
    write_dense_project(project, targets="fp32: {}\nint8: {quantize: int8}")
    project.write("nets/__init__.py", "")
    project.write("nets/blocks.py", BLOCKS)
    project.write("nets/factory.py", FACTORY)
    project.save_arrays("data/multi.npz", x=np.random.default_rng(4).random((48, 6), dtype=np.float32))
    project.recipe("multi", "tfbuild: 1\nmodel: {source: 'py:nets.factory:make'}\n"
                            "data: {calibration: data/multi.npz, evaluation: data/multi.npz}\n"
                            "targets: {fp32: {}, fp16: {quantize: float16}}\n")
    dense_classifier(seed=5).export(str(project.path("models/sm")), verbose=False)
    project.save_arrays("data/sm.npz", features=features(seed=6))
    project.recipe("sm", "tfbuild: 1\nmodel: {source: models/sm}\n"
                         "data: {calibration: data/sm.npz, evaluation: data/sm.npz}\ntargets: {dynamic: {quantize: dynamic}}\n")


def outputs(root: Path) -> dict[str, bytes]:
    """Every built file but the reports (which hold timings)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "build").rglob("*"))
            if p.is_file() and p.name != "report.json"}


@pytest.fixture
def ray_address(ray_cluster):
    return ray_cluster[0]


@pytest.mark.slow
def test_a_ray_build_is_byte_identical_to_a_local_one(project, tmp_path, ray_address):
    write_variety(project)
    other = tmp_path / "copy"
    shutil.copytree(project.root, other)
    local = project.run("-j2")
    assert local.code == 0 and "5 built" in local.out, local.text
    remote = project.run("-C", str(other), "-v", "--executor", f"ray:{ray_address}")
    assert remote.code == 0 and "5 built" in remote.out, remote.text
    assert "Ray node" in remote.out and f"connected to {ray_address}" in remote.out
    assert outputs(other) == outputs(project.root)
    assert (other / "tfbuild.lock").read_text() == project.path("tfbuild.lock").read_text()
    log = (other / ".tfbuild" / "logs" / "multi.log").read_text()
    assert log.strip() and "running on the Ray cluster" not in log  # the remote job's log replaced the placeholder
    again = project.run("-C", str(other), "-v", "--executor", f"ray:127.0.0.1:{free_port()}")
    assert again.code == 0 and "up to date" in again.out, again.text  # a no-op never connects: no cluster there


@pytest.mark.slow
def test_ray_client_addresses_build_the_same_files(project, tmp_path, ray_cluster):
    """Through Ray Client (which cannot stream a task's messages) the same files are built."""
    write_dense_project(project, targets="fp32: {}\nint8: {quantize: int8}")
    other = tmp_path / "copy"
    shutil.copytree(project.root, other)
    assert project.run().code == 0
    remote = project.run("-C", str(other), "--executor", f"ray:{ray_cluster[1]}")
    assert remote.code == 0 and "2 built" in remote.out, remote.text
    assert outputs(other) == outputs(project.root)


GATED_ONCE = """\
import os

import keras

GATE, PID, MARK = {gate!r}, {pid!r}, {mark!r}


def make():
    if not os.path.exists(MARK):  # the first attempt waits at the gate to be killed
        open(MARK, "w").close()
        with open(PID, "w") as pid:
            pid.write(str(os.getpid()))
        with open(GATE) as gate:
            gate.read()
    keras.utils.set_random_seed(0)
    x = keras.Input((4,), name="x")
    return keras.Model(x, keras.layers.Dense(3, name="y")(x))
"""


@pytest.fixture
def gated(project, tmp_path):
    """Recipe `victim`, whose model factory, the first time it runs (while `mark` does not exist),
    writes its process id into `pid` and blocks reading the FIFO `gate`."""
    gate, pid, mark = tmp_path / "gate", tmp_path / "pid", tmp_path / "mark"
    os.mkfifo(gate)
    project.write("victim.py", GATED_ONCE.format(gate=str(gate), pid=str(pid), mark=str(mark)))
    project.recipe("victim", "tfbuild: 1\nmodel: {source: 'py:victim:make'}\ntargets: {fp32: {}}\n")
    return gate, pid


@pytest.mark.slow
def test_a_killed_ray_worker_gets_its_job_retried(project, gated, ray_address):
    gate, pid = gated
    build = project.popen("-v", "--executor", f"ray:{ray_address}")
    with writer_when_blocked(gate, build):  # the Ray worker is inside the model factory
        os.kill(int(pid.read_text()), signal.SIGKILL)
    out, err = build.communicate(timeout=300)
    assert build.returncode == 0 and "1 built" in out, out + err
    assert out.count("victim: Ray node") == 2  # the job started twice: once killed, once retried
    assert "the Ray worker process died; running the job again (attempt 2 of 2)" in out
    assert "Traceback" not in out + err
    assert project.path("build/victim/fp32/model.tflite").is_file()


@pytest.mark.slow
def test_a_job_whose_node_dies_runs_again_on_another_node(project, gated, ray_address):
    """Jobs that ask for 3 CPUs fit no node but the ones this test adds (the head has 2): the job
    starts on node A; node B joins while the job waits at the gate; A is stopped."""
    gate, pid = gated
    project.write("tfbuild.yaml", "ray: {num_cpus: 3}\n")
    node_a = start_ray_node(ray_address, cpus=3)
    node_b = None
    try:
        build = project.popen("-v", "--executor", f"ray:{ray_address}")
        with writer_when_blocked(gate, build):  # the job is inside the model factory, on node A
            node_b = start_ray_node(ray_address, cpus=3)
            stop_ray_node(node_a)
        out, err = build.communicate(timeout=300)
    finally:
        for node in (node_a, node_b):
            if node is not None and node.poll() is None:
                stop_ray_node(node)
    assert build.returncode == 0 and "1 built" in out, out + err
    assert out.count("victim: Ray node") == 2 and "running the job again (attempt 2 of 2)" in out, out
    assert project.path("build/victim/fp32/model.tflite").is_file()


@pytest.mark.slow
def test_sigterm_cancels_the_ray_tasks_and_keeps_nothing_half_done(project, gated, ray_address):
    gate, pid = gated
    build = project.popen("--executor", f"ray:{ray_address}")
    with writer_when_blocked(gate, build):  # the Ray worker is inside the model factory
        worker = os.pidfd_open(int(pid.read_text()))
        build.terminate()
        out, err = build.communicate(timeout=120)
        assert build.returncode == 143, out + err
        assert "interrupted" in err and "Traceback" not in out + err
        assert not list(project.root.rglob(".tfbuild-staging-*"))
        assert not project.path("build/victim/fp32/model.tflite").exists()
        assert ends_within(worker, 60)  # the Ray worker running the job is gone, not left converting


def ends_within(pidfd: int, seconds: float) -> bool:
    """Whether the process behind `pidfd` ends within `seconds` (woken by its end, no polling)."""
    try:
        return bool(select.select([pidfd], [], [], seconds)[0])
    finally:
        os.close(pidfd)


@pytest.mark.slow
def test_a_job_that_kills_every_worker_fails_with_the_cause(project, ray_address):
    project.write("dies.py", "import os\n\n\ndef make():\n    os._exit(3)\n")
    project.recipe("dies", "tfbuild: 1\nmodel: {source: 'py:dies:make'}\ntargets: {fp32: {}}\n")
    result = project.run("--executor", f"ray:{ray_address}")
    assert result.code == 1, result.text
    assert "crashed" in result.out and "the Ray worker process died (tried 2 times)" in result.out, result.text
    assert "(raylet)" not in result.text  # Ray's own messages are -v details, not noise


@pytest.mark.slow
def test_a_node_with_other_tool_versions_is_refused(project, ray_address):
    write_dense_project(project)
    result = project.run("--executor", f"ray:{ray_address}",
                         env={"TFBUILD_TOOL_VERSIONS": json.dumps({"tensorflow": "2.0.0"})})
    assert result.code == 2, result.text
    assert "where this build has 2.0.0" in result.text and "would not match their keys" in result.text
    assert not project.path("build/clf/fp32/model.tflite").exists()


def test_an_unreachable_cluster_is_a_clear_error_before_any_work(project):
    write_dense_project(project)
    result = project.run("--executor", f"ray:127.0.0.1:{free_port()}")  # nobody listens there
    assert_user_error(result, "cannot reach the Ray cluster at 127.0.0.1:", "ray start --head")
    assert not project.path("build").exists()


def test_without_ray_the_executor_names_the_extra(project, tmp_path):
    write_dense_project(project)
    shadow = tmp_path / "no-ray"
    (shadow / "ray").mkdir(parents=True)
    (shadow / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    result = project.run("--executor", "ray", env={"PYTHONPATH": str(shadow)})
    assert_user_error(result, "needs Ray", "pip install 'tfbuild[ray]'")


@pytest.mark.parametrize("section, fragment", [
    ("ray: {num_cpus: 0}", "ray.num_cpus"),
    ("ray: {memroy_mb: 100}", "ray.memroy_mb: unknown key"),
    ("ray: [1, 2]", "the ray section must be a mapping"),
])
def test_a_bad_ray_section_is_located(project, section, fragment):
    write_dense_project(project)
    project.write("tfbuild.yaml", section + "\n")
    assert_user_error(project.run("--executor", "ray"), "tfbuild.yaml", fragment)


@pytest.mark.slow
def test_a_job_no_node_can_take_is_refused_before_any_work(project, ray_address):
    write_dense_project(project)
    project.write("tfbuild.yaml", "ray: {memory_mb: 100000000}\n")
    result = project.run("--executor", f"ray:{ray_address}")
    assert_user_error(result, "tfbuild.yaml: ray: no node of the Ray cluster can take a job of 1 CPU(s) "
                              "and 100000000 MiB")
    assert not project.path("build").exists()


@pytest.mark.slow
def test_an_input_outside_the_project_cannot_be_shipped_but_builds_here(project, tmp_path):
    write_dense_project(project)
    outside = tmp_path / "elsewhere.npz"
    shutil.copy(project.path("data/clf.npz"), outside)
    recipe = project.path("recipes/clf.yaml")
    recipe.write_text(recipe.read_text().replace("evaluation: data/clf.npz", f"evaluation: {outside}"))
    result = project.run("--executor", "ray:127.0.0.1:1")
    assert_user_error(result, "recipes/clf.yaml", f"{outside} is outside the project")
    local = project.run()  # the local pool reads files where they are
    assert local.code == 0 and "1 built" in local.out, local.text
    project.path("data/link.npz").symlink_to(outside)  # a symlink inside the project is fine:
    recipe.write_text(recipe.read_text().replace(f"evaluation: {outside}", "evaluation: data/link.npz"))
    port = free_port()
    assert_user_error(project.run("--executor", f"ray:127.0.0.1:{port}"),  # past the input check
                      f"cannot reach the Ray cluster at 127.0.0.1:{port}")


def test_ray_client_and_local_addresses_are_understood(project):
    write_dense_project(project)
    port = free_port()
    assert_user_error(project.run("--executor", f"ray://127.0.0.1:{port}"),
                      f"cannot reach the Ray cluster at ray://127.0.0.1:{port}")
    assert_user_error(project.run("--executor", "ray:local"), "does not start one")
    assert_user_error(project.run("--executor", "ray:127.0.0.1"), "not a Ray address: 127.0.0.1")


def test_an_unknown_executor_is_refused(project):
    write_dense_project(project)
    assert_user_error(project.run("--executor", "dask"), "unknown executor 'dask'")
