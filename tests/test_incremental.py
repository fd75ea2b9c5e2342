"""make semantics: rebuild exactly when an input that can change an output changed, say why,
and never lose a good output. Builds are real (spawned workers, real TensorFlow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from gates import writer_when_blocked
from models import dense_classifier, features

pytestmark = pytest.mark.slow

LAYERS = "import keras\n\nfrom .ops import double\n\n\nclass Scale(keras.layers.Layer):\n    pass\n"

TWO_RECIPES = {
    "a": """\
tfbuild: 1
model:
  source: models/a.keras
  custom_objects: {Scale: acme.layers:Scale}
data: {calibration: data/a.npz, evaluation: data/a.npz}
targets:
  fp32: {}
  int8: {quantize: int8, io: int8}
""",
    "b": """\
tfbuild: 1
model: {source: models/b.keras}
targets:
  fp32: {}
""",
}


@pytest.fixture
def built(project):
    """Two recipes, built once: a (with a registry module and data) and b."""
    project.write("acme/__init__.py", "")
    project.write("acme/layers.py", LAYERS)
    project.write("acme/ops.py", "def double(x):\n    return 2 * x\n")
    project.write("acme/unused.py", "")
    dense_classifier(project.path("models/a.keras"))
    dense_classifier(project.path("models/b.keras"), seed=1)
    project.save_arrays("data/a.npz", features=features(32))
    for name, text in TWO_RECIPES.items():
        project.recipe(name, text)
    result = project.run("-j2")
    assert result.code == 0, result.text
    assert "3 built" in result.out
    return project


def would_convert(project, *args, env=None) -> set[str]:
    """Targets a dry run would reconvert; any other pending work (render, rejected) fails the test."""
    result = project.run("-n", *args, env=env)
    assert result.code == 0, result.text
    lines = [line for line in result.out.splitlines() if line.startswith("would ")]
    assert all(line.startswith("would convert") for line in lines), result.out
    if not lines:
        assert "up to date" in result.out, result.out
    return {line.split()[2].rstrip(":") for line in lines}


def explain(project, target, *args, env=None) -> str:
    result = project.run("explain", target, *args, env=env)
    assert result.code == 0, result.text
    return result.out


def tree_snapshot(root) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in root.rglob("*") if p.is_file()}


def run_watched(root, *args, env: dict | None = None) -> tuple[int, str]:
    """Run the CLI in a fresh interpreter; report its exit code and output, which heavy modules
    it imported and how many files it hashed, as a last line `HEAVY [...] HASHED n`."""
    script = (
        "import sys, tfbuild.fingerprint as f\n"
        "calls = []\n"
        "real = f._hash_file\n"
        "f._hash_file = lambda p: calls.append(p) or real(p)\n"
        "from tfbuild.cli import main\n"
        f"code = main(['-C', {str(root)!r}, *{list(args)!r}])\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'ai_edge_litert') if m in sys.modules]\n"
        "print('HEAVY', heavy, 'HASHED', len(calls))\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    return proc.returncode, proc.stdout + proc.stderr


def test_noop_build_rebuilds_nothing_imports_no_tensorflow_and_rehashes_nothing(built):
    code, out = run_watched(built.root)
    assert code == 0, out
    assert "all 3 target(s) up to date" in out
    assert "HEAVY [] HASHED 0" in out


def test_touch_without_change_rebuilds_nothing(built):
    for path in ("models/a.keras", "data/a.npz", "acme/layers.py", "recipes/a.yaml"):
        os.utime(built.path(path))
    assert would_convert(built) == set()


def test_each_kind_of_input_rebuilds_exactly_the_affected_targets(built):
    original = built.path("models/a.keras").read_bytes()
    dense_classifier(built.path("models/a.keras"), seed=5)
    assert would_convert(built) == {"a:fp32", "a:int8"}
    assert "models/a.keras changed" in explain(built, "a:fp32")
    built.path("models/a.keras").write_bytes(original)  # new mtime, same bytes: up to date again
    assert would_convert(built) == set()

    built.write("acme/layers.py", LAYERS + "# tuned\n")
    assert would_convert(built) == {"a:fp32", "a:int8"}
    assert "acme/layers.py changed" in explain(built, "a:int8")
    built.write("acme/layers.py", LAYERS)
    built.write("acme/ops.py", "def double(x):\n    return x + x\n")  # imported by the registry module
    assert would_convert(built) == {"a:fp32", "a:int8"}
    assert "acme/ops.py changed" in explain(built, "a:int8")
    built.write("acme/ops.py", "def double(x):\n    return 2 * x\n")
    built.write("acme/unused.py", "# nobody imports this\n")
    assert would_convert(built) == set()

    built.save_arrays("data/a.npz", features=features(32, seed=9))
    assert would_convert(built) == {"a:fp32", "a:int8"}
    assert "data/a.npz changed" in explain(built, "a:fp32")
    built.save_arrays("data/a.npz", features=features(32))

    built.recipe("a", TWO_RECIPES["a"].replace("io: int8", "io: uint8"))
    assert would_convert(built) == {"a:int8"}
    assert "targets.int8.io: int8 -> uint8" in explain(built, "a:int8")
    built.recipe("a", TWO_RECIPES["a"])

    assert would_convert(built, "a", "targets.fp32.accept.max_size_kb=64") == {"a:fp32"}
    assert "targets.fp32.accept.max_size_kb: <unset> -> 64" in explain(built, "a:fp32", "targets.fp32.accept.max_size_kb=64")

    upgraded = {"TFBUILD_TOOL_VERSIONS": json.dumps({"tensorflow": "99.0.0"})}
    assert would_convert(built, env=upgraded) == {"a:fp32", "a:int8", "b:fp32"}
    assert "-> 99.0.0" in explain(built, "b:fp32", env=upgraded)
    assert would_convert(built) == set()


def test_only_the_changed_target_is_reconverted(built):
    before = built.path("build/a/int8/model.tflite").read_bytes()
    built.recipe("a", TWO_RECIPES["a"].replace("  fp32: {}", "  fp32: {quantize: float16}"))
    result = built.run()
    assert result.code == 0, result.text
    assert "built a:fp32" in result.out and "1 built" in result.out
    assert built.path("build/a/int8/model.tflite").read_bytes() == before


def test_deleted_or_edited_output_is_rebuilt(built):
    built.path("build/a/fp32/model.tflite").unlink()
    built.path("build/b/fp32/report.json").write_text("{}")
    assert would_convert(built) == {"a:fp32", "b:fp32"}
    assert "build/a/fp32/model.tflite is missing" in explain(built, "a:fp32")
    result = built.run()
    assert result.code == 0 and "2 built" in result.out, result.text
    assert built.path("build/a/fp32/model.tflite").is_file()


def test_dry_run_changes_nothing_on_disk(built):
    dense_classifier(built.path("models/b.keras"), seed=3)
    before = tree_snapshot(built.root)
    assert would_convert(built, "-B") == {"a:fp32", "a:int8", "b:fp32"}
    assert tree_snapshot(built.root) == before


def test_always_make_and_clean(built):
    result = built.run("-B", "b")
    assert result.code == 0 and "1 built" in result.out, result.text
    dry = built.run("clean", "-n", "a:int8")
    assert "would remove build/a/int8/model.tflite" in dry.out and built.path("build/a/int8/model.tflite").is_file()
    cleaned = built.run("clean", "a:int8")
    assert cleaned.code == 0
    assert not built.path("build/a/int8").exists() and built.path("build/a/fp32/model.tflite").exists()
    assert would_convert(built) == {"a:int8"}
    lock = json.loads(built.path("tfbuild.lock").read_text())
    assert {"a:int8", "a:fp32"} <= set(lock["targets"])  # the committed record is not the build dir


def test_a_fresh_checkout_building_one_target_keeps_the_others_in_the_lock(built):
    import shutil

    shutil.rmtree(built.path(".tfbuild"))  # as in a fresh clone: committed lock, no local state
    result = built.run("b:fp32")
    assert result.code == 0 and "1 built" in result.out, result.text
    lock = json.loads(built.path("tfbuild.lock").read_text())
    assert set(lock["targets"]) == {"a:fp32", "a:int8", "b:fp32"}
    assert built.run("check").code == 0


def test_moving_outputs_or_dropping_loaders_is_a_change(built):
    built.recipe("b", TWO_RECIPES["b"] + "output_dir: out/b\n")
    assert "output_dir: build/b -> out/b" in explain(built, "b:fp32")
    assert built.run().code == 0
    assert built.path("out/b/fp32/model.tflite").is_file()


def test_check_gates_the_lock_without_tensorflow(built):
    code, out = run_watched(built.root, "check")
    assert code == 0 and "tfbuild.lock matches all 3 target(s)" in out and "HEAVY []" in out, out
    lock = json.loads(built.path("tfbuild.lock").read_text())
    entry = lock["targets"]["a:int8"]
    assert entry["inputs"]["file:models/a.keras"] and entry["versions"]["tensorflow"]
    assert "build/a/int8/model.tflite" in entry["outputs"]
    built.save_arrays("data/a.npz", features=features(32, seed=4))
    code, out = run_watched(built.root, "check")
    assert code == 1 and "HEAVY []" in out, out
    stale = built.run("check")
    assert stale.code == 1
    assert "a:fp32: data/a.npz changed" in stale.out and "b:fp32" not in stale.out
    status = built.run("status")
    assert status.code == 1 and "a:int8: data/a.npz changed" in status.out


KILLER = """\
import os, signal


def make():
    os.kill(os.getpid(), signal.SIGKILL)
"""

GATE = """\
import os


def make():
    with open(os.environ["GATE"]) as gate:  # blocks until the test opens the other end
        gate.read()
    import keras
    return keras.saving.load_model("models/g.keras")
"""


def test_killed_worker_fails_its_target_while_others_build(built):
    built.write("killer.py", KILLER)
    built.recipe("0kill", "tfbuild: 1\nmodel: {source: 'py:killer:make'}\ntargets: {fp32: {}}\n")
    result = built.run("-k", "-B", "-j1")  # 0kill is scheduled first: the others build after it died
    assert result.code == 1, result.text
    assert "crashed 0kill:fp32" in result.out and "worker died while loading the model: killed by SIGKILL" in result.out
    assert result.out.index("crashed 0kill:fp32") < result.out.index("built a:fp32")
    assert "3 built" in result.out
    stopped = built.run("-B", "-j1")  # without -k, make stops scheduling after the first failure
    assert stopped.code == 1 and "skipped a:fp32" in stopped.out and "built" not in stopped.out, stopped.text


@pytest.fixture
def gated(built, tmp_path):
    """Recipe g, whose model load blocks while GATE is a FIFO nobody writes to."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    built.write("gate.py", GATE)
    dense_classifier(built.path("models/g.keras"), seed=7)
    built.recipe("g", "tfbuild: 1\nmodel: {source: 'py:gate:make', depends: [models/g.keras]}\n"
                      "targets: {fp32: {}}\n")
    os.environ["GATE"] = str(gate)
    yield built, gate
    del os.environ["GATE"]


def test_sigkill_of_the_whole_build_rebuilds_just_the_interrupted_target(gated, tmp_path):
    project, gate = gated
    open_gate = tmp_path / "open-gate"
    open_gate.write_text("")
    assert project.run("g", env={"GATE": str(open_gate)}).code == 0  # a last good g
    good = project.path("build/g/fp32/model.tflite").read_bytes()
    lock_before = project.path("tfbuild.lock").read_text()
    dense_classifier(project.path("models/b.keras"), seed=2)  # b and g are both out of date now
    dense_classifier(project.path("models/g.keras"), seed=8)  # declared in model.depends
    build = project.popen("-j1")
    with writer_when_blocked(gate, build):  # the g worker is inside its model load, after b was built
        os.killpg(build.pid, signal.SIGKILL)
    build.wait()
    assert project.path("build/g/fp32/model.tflite").read_bytes() == good  # last good output intact
    lock_after = json.loads(project.path("tfbuild.lock").read_text())["targets"]
    assert lock_after["g:fp32"] == json.loads(lock_before)["targets"]["g:fp32"]
    assert lock_after["b:fp32"] != json.loads(lock_before)["targets"]["b:fp32"]  # b finished first
    assert would_convert(project, env={"GATE": str(open_gate)}) == {"g:fp32"}
    result = project.run(env={"GATE": str(open_gate)})
    assert result.code == 0 and "1 built" in result.out, result.text
    assert not list(project.path("build/g").glob(".tfbuild-staging-*"))  # the killed run's staging is gone


def test_concurrent_builds_wait_for_each_other(gated):
    project, gate = gated
    first = project.popen()
    writer = writer_when_blocked(gate, first)  # the first build holds the project lock, inside a conversion
    second = project.popen()
    waiting = second.stderr.readline()
    assert "waiting for another tfbuild" in waiting and str(first.pid) in waiting
    writer.close()
    out1, err1 = first.communicate(timeout=300)
    out2, err2 = second.communicate(timeout=300)
    assert first.returncode == 0, out1 + err1
    assert second.returncode == 0, out2 + err2
    assert "1 built" in out1 and "up to date" in out2
    assert json.loads(project.path("tfbuild.lock").read_text())["targets"].keys() == {"a:fp32", "a:int8", "b:fp32", "g:fp32"}


MOBILE = """\
mobile:
  android: {package: com.example.clf, class_name: Classifier}
  ios: {class_name: Classifier}
  templates: mobile_templates
"""


def test_template_or_mobile_change_rerenders_loaders_without_converting(project):
    from models import write_dense_project

    project.write("mobile_templates/android/README.md.j2", "CUSTOM README for {{ recipe }}\n")
    write_dense_project(project, extra=MOBILE)
    first = project.run()
    assert first.code == 0, first.text
    readme = project.path("build/clf/fp32/android/README.md")
    assert readme.read_text() == "CUSTOM README for clf\n"
    kotlin = project.path("build/clf/fp32/android/src/main/kotlin/com/example/clf/Classifier.kt")
    assert kotlin.is_file() and project.path("build/clf/fp32/ios/Sources/Classifier/Classifier.swift").is_file()
    model_before = project.path("build/clf/fp32/model.tflite").stat().st_mtime_ns

    project.write("labels.txt", "a\nb\nc\nd\n")  # the label count tells verification which output holds scores
    labelled = project.run("-n", "mobile.labels=labels.txt")
    assert "would convert clf:fp32: labels.txt is a new input" in labelled.out, labelled.text

    project.write("mobile_templates/android/README.md.j2", "EDITED README for {{ recipe }}\n")
    dry = project.run("-n")
    assert "would render loaders for clf:fp32: mobile_templates/android/README.md.j2 changed" in dry.out, dry.out
    rendered = project.run()
    assert rendered.code == 0 and "rendered clf:fp32" in rendered.out and "built" not in rendered.out, rendered.text
    assert readme.read_text() == "EDITED README for clf\n"

    renamed = project.run("mobile.android.class_name=Renamed")
    assert "rendered clf:fp32" in renamed.out, renamed.text
    renamed_kotlin = project.path("build/clf/fp32/android/src/main/kotlin/com/example/clf/Renamed.kt")
    assert renamed_kotlin.is_file() and not kotlin.exists()  # the stale loader is removed
    assert project.path("build/clf/fp32/model.tflite").stat().st_mtime_ns == model_before

    renamed_kotlin.write_text("// hand edit")
    dry = project.run("-n", "mobile.android.class_name=Renamed")
    assert "would render loaders for clf:fp32: build/clf/fp32/android/src/main/kotlin/com/example/clf/Renamed.kt was modified" in dry.out

    dropped = project.run("~mobile")
    assert dropped.code == 0 and "rendered clf:fp32" in dropped.out, dropped.text
    assert not project.path("build/clf/fp32/android").exists() and not project.path("build/clf/fp32/ios").exists()
    assert project.path("build/clf/fp32/model.tflite").stat().st_mtime_ns == model_before


def test_sigterm_stops_workers_and_keeps_finished_targets(gated):
    project, gate = gated
    build = project.popen("-j1")
    with writer_when_blocked(gate, build):  # a, b are up to date; g's worker is loading
        build.terminate()
        out, err = build.communicate(timeout=60)
    assert build.returncode == 143, out + err
    assert "interrupted" in err and "Traceback" not in err
    assert not list(project.root.rglob(".tfbuild-staging-*"))
    assert would_convert(project) == {"g:fp32"}
