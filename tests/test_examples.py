"""The shipped examples build as the README promises, in a copy of the repository's project."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import REPO, Project
from test_loaders_e2e import assert_constants_match

pytestmark = pytest.mark.slow


def test_shipped_examples_build_and_int8_digits_keeps_accuracy(tmp_path):
    root = tmp_path / "repo"
    for folder in ("recipes", "examples"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    project = Project(root)
    result = project.run("-j2")
    assert result.code == 0, result.text
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
    report = project.run("report")
    assert report.code == 0 and "<svg" in (root / "build/report.html").read_text()

