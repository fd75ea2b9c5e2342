"""The shipped examples build as the README promises, in a copy of the repository's project."""

from __future__ import annotations

import json
import shutil

import numpy as np

import pytest

from conftest import REPO, Project

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
    assert reports["int8"]["signature"]["inputs"][0]["dtype"] == "int8"
    assert (root / "build/digits/int8/android/src/main/kotlin/com/example/digits/DigitsClassifier.kt").is_file()
    swift = (root / "build/digits/int8/ios/Sources/DigitsClassifier/DigitsClassifier.swift").read_text()
    assert "class DigitsClassifier" in swift
    assert_kotlin_constants_match_the_model(root / "build/digits/int8")
    assert (root / "build/swish/int8/model.tflite").is_file()
    assert project.run("check").code == 0
    report = project.run("report")
    assert report.code == 0 and "<svg" in (root / "build/report.html").read_text()


def assert_kotlin_constants_match_the_model(target_dir) -> None:
    """The scale, zero point, shape and dtype written into the generated Kotlin are the .tflite's own."""
    import re

    from ai_edge_litert.interpreter import Interpreter

    kotlin = (target_dir / "android/src/main/kotlin/com/example/digits/DigitsClassifier.kt").read_text()
    runner = Interpreter(model_path=str(target_dir / "model.tflite")).get_signature_runner()
    tensors = {**runner.get_input_details(), **runner.get_output_details()}
    for name, detail in tensors.items():
        prefix = name.upper()
        scale = float(re.search(rf"const val {prefix}_SCALE = ([-0-9.eE]+)f", kotlin).group(1))
        zero = int(re.search(rf"const val {prefix}_ZERO_POINT = (-?\d+)", kotlin).group(1))
        shape = re.search(rf"val {prefix}_SHAPE: IntArray = intArrayOf\(([^)]*)\)", kotlin).group(1)
        assert (scale, zero) == (float(np.float32(detail["quantization"][0])), detail["quantization"][1]), name
        assert [int(d) for d in shape.split(",")] == list(detail["shape"]), name
        assert f'const val {prefix}_DTYPE = "{np.dtype(detail["dtype"]).name}"' in kotlin, name
