"""Models from other projects: a SavedModel written by an older TensorFlow/Keras (legacy
optimizer) that TensorFlow 2.21 cannot revive, a subclassed network returning a list, outputs
named and typed through the recipe, and sources that cannot be loaded at all."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import assert_user_error, without_tf_keras

pytestmark = pytest.mark.slow

# Run in its own process: tf-keras (Keras 2) writes the SavedModel the way projects did before
# Keras 3, with a legacy optimizer whose slot variables TF 2.21 cannot revive without tf-keras.
LEGACY_SAVEDMODEL = """\
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tf_keras as K
K.utils.set_random_seed(0)
x = K.Input((12,), name="audio")
h = K.layers.Dense(16, activation="relu")(x)
model = K.Model(x, {"class_scores": K.layers.Dense(4, activation="softmax")(h),
                    "embedding": K.layers.Dense(6)(h), "loudness": K.layers.Dense(1)(h)})
model.compile(optimizer=K.optimizers.legacy.Adam(), loss="mse")
rng = np.random.default_rng(0)
model.fit(rng.random((8, 12)).astype("float32"),
          {"class_scores": np.eye(4)[rng.integers(0, 4, 8)], "embedding": rng.random((8, 6)),
           "loudness": rng.random((8, 1))}, epochs=1, verbose=0)
model.save(sys.argv[1])
"""

FACES = """\
import keras


class FaceNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.body = keras.layers.Dense(16, activation="relu")
        self.bbox = keras.layers.Dense(4)
        self.landmarks = keras.layers.Dense(10)
        self.score = keras.layers.Dense(2)

    def call(self, x):
        h = self.body(x)
        return [self.bbox(h), self.landmarks(h), self.score(h)]


def make():
    keras.utils.set_random_seed(0)
    return FaceNet()
"""


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    """A project whose model is a legacy SavedModel, built without tf-keras (fp32 and int8)."""
    from conftest import Project

    base = tmp_path_factory.mktemp("legacy")
    project = Project(base / "proj")
    script = base / "make_legacy.py"
    script.write_text(LEGACY_SAVEDMODEL)
    made = subprocess.run([sys.executable, str(script), str(project.path("models/audio"))],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    project.save_arrays("data/audio.npz", audio=np.random.default_rng(1).random((40, 12), dtype=np.float32))
    project.recipe("audio", """\
        tfbuild: 1
        model: {source: models/audio}
        data: {calibration: data/audio.npz, evaluation: data/audio.npz}
        targets: {fp32: {}, int8: {quantize: int8}}
        mobile:
          android: {package: com.example.audio, class_name: AudioModel}
        """)
    env = without_tf_keras(base / "hide")
    return project, env, project.run(env=env)


def target_report(project, target: str) -> dict:
    data = json.loads(project.path(f"build/audio/{target}/report.json").read_text())
    return data


def test_a_savedmodel_tensorflow_cannot_revive_is_converted_from_its_signature_graph(legacy):
    project, _, result = legacy
    assert result.code == 0, result.text
    assert result.out.count("cannot revive this SavedModel") == 1  # said once, with the reason
    assert "add_slot" in result.out and "SignatureDef graph 'serving_default'" in result.out
    for target in ("fp32", "int8"):
        data = target_report(project, target)
        names = [t["name"] for t in data["signature"]["outputs"]]
        assert sorted(names) == ["dense_1", "dense_2", "dense_3"]  # the SignatureDef's own keys
        assert [t["name"] for t in data["signature"]["inputs"]] == ["audio"]
        assert any("cannot revive" in note for note in data["notes"])
        assert data["output_kinds"] == {"dense_1": "scores", "dense_2": "values", "dense_3": "values"}
        assert "top1_agreement" not in data["metrics"]["outputs"]["dense_3"]
    kotlin = project.path("build/audio/fp32/android/src/main/kotlin/com/example/audio/AudioModel.kt").read_text()
    assert "dense_1" in kotlin and "StatefulPartitionedCall" not in kotlin


def test_the_fallback_matches_the_savedmodel_run_by_tensorflow(legacy):
    """tf-keras is installed in the test process, so TensorFlow revives the model here: the
    reference is the SavedModel's own signature, and the .tflite must agree with it."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    project, _, _ = legacy
    signature = tf.saved_model.load(str(project.path("models/audio"))).signatures["serving_default"]
    runner = Interpreter(model_path=str(project.path("build/audio/fp32/model.tflite"))).get_signature_runner()
    for seed in range(3):
        x = np.random.default_rng(seed).random((1, 12), dtype=np.float32)
        expected = {k: v.numpy() for k, v in signature(audio=tf.constant(x)).items()}
        got = runner(audio=x)
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, atol=1e-5)


def test_an_unknown_signature_lists_the_ones_that_exist(legacy):
    project, env, _ = legacy
    result = project.run("model.signature=predict", env=env)
    assert_user_error(result, "recipes/audio.yaml: model.signature", "no signature 'predict'", "serving_default")


def test_a_damaged_savedmodel_says_what_was_tried_and_what_tensorflow_said(legacy, tmp_path):
    project, env, _ = legacy
    damaged = project.path("models/damaged")
    shutil.copytree(project.path("models/audio"), damaged)
    for part in (damaged / "variables").glob("variables.data-*"):
        part.unlink()
    result = project.run("model.source=models/damaged", env=env)
    assert_user_error(result, "recipes/audio.yaml: model.source", "cannot load the SavedModel",
                      "as an object graph", "as a SignatureDef graph", "variables/")


def test_a_truncated_keras_file_is_a_located_error(project):
    from models import dense_classifier

    dense_classifier(project.path("models/m.keras"))
    whole = project.path("models/m.keras").read_bytes()
    project.path("models/m.keras").write_bytes(whole[: len(whole) // 2])
    project.recipe("m", "tfbuild: 1\nmodel: {source: models/m.keras}\ntargets: {fp32: {}}\n")
    assert_user_error(project.run(), "recipes/m.yaml: model.source", "not a readable .keras model")


def test_a_subclassed_model_returning_a_list_is_named_and_typed_by_the_recipe(project):
    project.write("faces.py", FACES)
    project.save_arrays("data/faces.npz", face=np.random.default_rng(0).random((16, 12), dtype=np.float32))
    project.recipe("faces", """\
        tfbuild: 1
        model:
          source: 'py:faces:make'
          inputs: {face: {shape: [1, 12]}}
          outputs: [bbox, landmarks, {name: face_scores, kind: scores}]
        data: {calibration: data/faces.npz, evaluation: data/faces.npz}
        targets: {fp32: {}, int8: {quantize: int8}}
        mobile:
          ios: {class_name: FaceNet}
        """)
    result = project.run()
    assert result.code == 0, result.text
    data = json.loads(project.path("build/faces/int8/report.json").read_text())
    assert sorted(t["name"] for t in data["signature"]["outputs"]) == ["bbox", "face_scores", "landmarks"]
    assert data["output_kinds"] == {"bbox": "values", "landmarks": "values", "face_scores": "scores"}
    outputs = data["metrics"]["outputs"]
    assert "top1_agreement" not in outputs["bbox"] and "top1_agreement" not in outputs["landmarks"]
    assert "top1_agreement" in outputs["face_scores"]
    assert "bbox top1" not in result.out and "face_scores top1" in result.out
    swift = project.path("build/faces/fp32/ios/Sources/FaceNet/FaceNet.swift").read_text()
    assert "landmarks" in swift and "output_0" not in swift
    golden = json.loads(project.path("build/faces/fp32/golden.json").read_text())
    assert set(golden["outputs"]) == {"bbox", "landmarks", "face_scores"}

    wrong = project.run("model.outputs=[a,b]")
    assert_user_error(wrong, "recipes/faces.yaml: model.outputs", "2 output(s) named, but the model has 3")
