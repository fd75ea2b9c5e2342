"""Keras 2 files keep their Keras 2 meaning, and every verdict checks what the target claims.

The models are written by tf-keras (Keras 2) in their own process, the way other projects ship
them (tests/keras2_models.py): a CNN + bidirectional-GRU chord model whose GRUs use Keras 2.2's
hard_sigmoid, with two per-frame softmax outputs, and a model whose input is named `cqt/mag`.
Keras 3 reads the chord file without a word and computes something else (hard_sigmoid was
redefined); a build must be checked against what Keras 2 computes, or stop.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, Project, assert_user_error, without_tf_keras

CHORD = """\
    tfbuild: 1
    model: {source: models/chord.h5}
    data: {calibration: data/chord_calib.npz, evaluation: data/chord_eval.npz}
    targets:
      fp32: {}
      int8: {quantize: int8, io: float32}
    """


@pytest.fixture(scope="module")
def keras2_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keras2")
    made = subprocess.run([sys.executable, str(REPO / "tests" / "keras2_models.py"), str(folder)],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    return folder


def chord_project(root, files) -> Project:
    project = Project(root)
    project.path("models/chord.h5").write_bytes((files / "chord.h5").read_bytes())
    for name in ("chord_calib.npz", "chord_eval.npz"):
        project.path(f"data/{name}").write_bytes((files / name).read_bytes())
    project.recipe("chord", CHORD)
    return project


@pytest.fixture(scope="module")
def chord_built(tmp_path_factory, keras2_files):
    project = chord_project(tmp_path_factory.mktemp("chord") / "proj", keras2_files)
    return project, project.run()


def report(project, target: str) -> dict:
    return json.loads(project.path(f"build/chord/{target}/report.json").read_text())


@pytest.mark.slow
def test_a_keras_2_file_is_built_as_keras_2_computes_it(chord_built, keras2_files):
    """Read by tf-keras: the .tflite agrees with the file's own Keras 2 outputs, and the build
    says how far Keras 3's reading is (the difference a Keras 3 build would have passed)."""
    from ai_edge_litert.interpreter import Interpreter

    project, result = chord_built
    assert result.code == 0, result.text
    assert "read by tf-keras" in result.out and "use(s) of hard_sigmoid)" in result.out
    drift = next(line for line in result.out.splitlines() if "Keras 3 reads this Keras 2 file differently" in line)
    assert "top-1 agreement per frame" in drift, drift
    spectrum = np.load(keras2_files / "chord_eval.npz")["spectrum"]
    truth = np.load(keras2_files / "chord_keras2.npz")
    runner = Interpreter(model_path=str(project.path("build/chord/fp32/model.tflite"))).get_signature_runner()
    for name in ("chords", "bass"):
        got = np.concatenate([runner(spectrum=spectrum[i:i + 1])[name] for i in range(len(spectrum))])
        assert np.abs(got - truth[name]).max() < 1e-4, name
    fp32 = report(project, "fp32")
    assert any("Keras 3 reads this Keras 2 file differently" in note for note in fp32["notes"])


@pytest.mark.slow
def test_per_frame_scores_are_checked_per_frame(chord_built):
    project, result = chord_built
    assert result.code == 0, result.text
    for target in ("fp32", "int8"):
        data = report(project, target)
        assert data["output_kinds"] == {"chords": "scores", "bass": "scores"}
        for name in ("chords", "bass"):
            assert data["metrics"]["outputs"][name]["positions"] == 20, (target, name)
        assert data["metrics"]["accuracy"]["output"] == "chords"
        assert data["metrics"]["accuracy"]["positions"] == 20
    assert "chords top1/frame" in result.out and "acc/frame" in result.out
    assert report(project, "fp32")["metrics"]["accuracy"]["tflite"] == 1.0  # the labels are Keras 2's


@pytest.mark.slow
def test_an_integer_target_says_which_ops_stayed_float(chord_built):
    project, _ = chord_built
    data = report(project, "int8")
    found = data["float_ops"]
    assert found["count"] == sum(found["by_type"].values()) == len(found["tensors"])
    explained = project.run("explain", "chord:int8")
    assert explained.code == 0, explained.text
    expected = "integer-only" if not found["count"] else f"{found['count']} op(s) compute in float"
    assert expected in explained.out


@pytest.mark.slow
def test_without_tf_keras_a_redefined_function_stops_the_build(tmp_path, keras2_files):
    project = chord_project(tmp_path / "proj", keras2_files)
    result = project.run(env=without_tf_keras(tmp_path / "hide"))
    assert_user_error(result, "recipes/chord.yaml: model.source: written by Keras 2.2.4",
                      "recurrent_activation: hard_sigmoid", "relu6(x + 3) / 6",
                      "pip install 'tfbuild[keras2]'")
    assert not project.path("build").exists() or not any(project.path("build").rglob("*.tflite"))


@pytest.mark.slow
def test_a_name_keras_3_refuses_is_kept_with_tf_keras_and_explained_without(tmp_path, keras2_files):
    project = Project(tmp_path / "proj")
    project.path("models/slash.h5").write_bytes((keras2_files / "slash.h5").read_bytes())
    project.path("data/slash.npz").write_bytes((keras2_files / "slash.npz").read_bytes())
    project.recipe("slash", """\
        tfbuild: 1
        model: {source: models/slash.h5}
        data: {evaluation: data/slash.npz}
        targets: {fp32: {}}
        """)
    hidden = project.run(env=without_tf_keras(tmp_path / "hide"))
    assert_user_error(hidden, "cannot load this Keras 2.2.4 file with Keras 3",
                      "cannot contain character `/`", "pip install 'tfbuild[keras2]'")
    built = project.run()
    assert built.code == 0, built.text
    data = json.loads(project.path("build/slash/fp32/report.json").read_text())
    assert [t["name"] for t in data["signature"]["inputs"]] == ["cqt/mag"]  # the data's key, as written
    assert data["verdict"] == "passed"


# ---------------------------------------------------------------- without TensorFlow

def test_meaning_changes_are_found_wherever_the_config_uses_them():
    from tfbuild import keras2

    config = {"class_name": "Functional", "config": {"layers": [
        {"class_name": "Bidirectional", "config": {"name": "bi", "layer": {
            "class_name": "GRU", "config": {"name": "gru", "activation": "tanh",
                                            "recurrent_activation": "hard_sigmoid"}}}},
        {"class_name": "Activation", "config": {"name": "gate", "activation": "hard_sigmoid"}},
        {"class_name": "Dense", "config": {"name": "out", "activation": "softmax"}},
        {"class_name": "Dense", "config": {"name": "k3", "activation": {
            "module": "keras.activations", "class_name": "function", "config": "hard_sigmoid"}}}]}}
    assert keras2.meaning_changes(json.dumps(config)) == [
        "layer 'gru' (GRU) recurrent_activation: hard_sigmoid",
        "layer 'gate' (Activation) activation: hard_sigmoid",
        "layer 'k3' (Dense) activation: hard_sigmoid"]
    assert keras2.meaning_changes("not json") == []
    assert keras2.unused_entries(["Swish", "pkg>Gone", "mine>Used"], '{"class_name": "Swish", "x": "Used"}') == ["pkg>Gone"]


def test_only_keras_2_files_carry_tf_keras_in_their_key(tmp_path, monkeypatch):
    """The writer is read once per file stat (the digest cache remembers it), so a no-op build
    opens no model; a Keras 3 file's key does not move when tf-keras is installed or upgraded."""
    import h5py

    from tfbuild import keras2
    from tfbuild.fingerprint import DigestCache

    for name, writer in (("k2.h5", "2.2.4"), ("k3.h5", "3.15.1")):
        with h5py.File(tmp_path / name, "w") as handle:
            handle.attrs["keras_version"] = writer
    cache = DigestCache(tmp_path / "digests.json")
    assert keras2.key_versions(tmp_path, "k2.h5", cache, "2.21.0") == {"version:tf-keras": "2.21.0"}
    assert keras2.key_versions(tmp_path, "k2.h5", cache, None) == {"version:tf-keras": "missing"}
    assert keras2.key_versions(tmp_path, "k3.h5", cache, "2.21.0") == {}
    assert keras2.key_versions(tmp_path, "py:pkg.mod:make", cache, "2.21.0") == {}
    cache.save()
    opened = []
    monkeypatch.setattr(keras2, "writer_version", opened.append)
    again = DigestCache(tmp_path / "digests.json")
    assert keras2.key_versions(tmp_path, "k2.h5", again, "2.21.0") == {"version:tf-keras": "2.21.0"}
    assert opened == []
    (tmp_path / "k2.h5").touch()  # a new stat: read again
    keras2.key_versions(tmp_path, "k2.h5", again, "2.21.0")
    assert opened == [tmp_path / "k2.h5"]
