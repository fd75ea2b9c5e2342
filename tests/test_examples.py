"""The shipped examples build as the README promises, in a copy of the repository's project."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import REPO, Project
from mobile_builds import litert_lib  # noqa: F401  (fixture used below)
from test_loaders_android_run import compile_loaders, jvm, run_instrumented  # noqa: F401  (jvm: a fixture)
from test_loaders_compile import android_api, kotlin  # noqa: F401  (fixtures used below)
from test_loaders_e2e import assert_constants_match

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Project:
    """The repository's recipes and examples, built in a copy."""
    root = tmp_path_factory.mktemp("examples") / "repo"
    for folder in ("recipes", "examples"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    project = Project(root)
    result = project.run("-j2")
    assert result.code == 0, result.text
    return project


def test_shipped_examples_build_and_int8_digits_keeps_accuracy(examples):
    project, root = examples, examples.root
    reports = {p.parent.name: json.loads(p.read_text()) for p in (root / "build/digits").glob("*/report.json")}
    assert set(reports) == {"fp32", "fp16", "dynamic", "int8"}
    accuracy = reports["int8"]["metrics"]["accuracy"]
    print(f"digits held-out accuracy: keras {accuracy['source']:.4f}, int8 .tflite {accuracy['tflite']:.4f}")
    assert accuracy["source"] - accuracy["tflite"] <= 0.01
    assert reports["int8"]["signature"]["inputs"][0]["dtype"] == "uint8"
    assert (root / "build/digits/int8/android/src/main/kotlin/com/example/digits/DigitsClassifier.kt").is_file()
    assert (root / "build/digits/int8/ios/Sources/DigitsClassifier/DigitsClassifier.swift").is_file()
    assert_constants_match(root / "build/digits/int8")
    assert (root / "build/swish/int8/model.tflite").is_file()
    assert project.run("check").code == 0
    built = json.loads((root / "tfbuild.lock").read_text())["targets"]
    committed = json.loads((REPO / "tfbuild.lock").read_text())["targets"]
    exact = ("verdict", "size_bytes", "accuracy", "float_ops", "float_layers", "warnings")  # not the
    # errors, cosine and SNR: their last digits may move with another CPU's LiteRT kernels
    assert {t: {k: e["summary"].get(k) for k in exact} for t, e in built.items()} == \
        {t: {k: e["summary"].get(k) for k in exact} for t, e in committed.items()}, \
        "the committed lock's summaries are not what a build measures: rebuild the examples and commit tfbuild.lock"
    report = project.run("report")
    assert report.code == 0 and "<svg" in (root / "build/report.html").read_text()



def test_shipped_examples_android_loaders_pass_their_golden_tests(examples, jvm, tmp_path):
    # Every shipped target's Android loader runs its instrumented test on the JVM against
    # LiteRT's runtime (tests/test_loaders_android_run.py); a recipe's targets share one class
    # name, so each target is compiled on its own, and the targets run one JVM per recipe target.
    targets = sorted(p.parent for p in examples.root.glob("build/*/*/android"))
    assert {t.parent.name for t in targets} == {"digits", "scenes", "torch_digits"}
    for target in targets:
        classes = compile_loaders(jvm, [target], tmp_path / target.parent.name / target.name)
        test = next((target / "android" / "src" / "androidTest" / "kotlin").rglob("*Test.kt"))
        name = ".".join(test.relative_to(target / "android" / "src" / "androidTest" / "kotlin").with_suffix("").parts)
        line = run_instrumented(classes, {name: target})[name]
        assert line.startswith("PASS"), f"{target}: {line}"
