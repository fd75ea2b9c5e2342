"""Model kinds that real apps ship and that used to crash or fail at int8: a dynamic time axis,
several inputs and outputs, recurrent layers at integer modes, Flex ops with int8, and a worker
crash that must still read as one whole line naming its stage.

One project, one build (`-k`), many recipes: each recipe is its own worker, as users run it.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ZOO = """\
import keras
import tensorflow as tf


def tokens_conv():
    keras.utils.set_random_seed(1)
    x = keras.Input((None, 12), name="tokens")
    h = keras.layers.Conv1D(6, 5, activation="relu")(x)
    h = keras.layers.MaxPooling1D(2)(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(x, keras.layers.Dense(5, activation="softmax", name="intent")(h))


def frames_lstm():
    keras.utils.set_random_seed(2)
    x = keras.Input((None, 4), name="frames")
    h = keras.layers.LSTM(6)(x)
    return keras.Model(x, keras.layers.Dense(2, name="level")(h))


def photo_and_meta():
    keras.utils.set_random_seed(3)
    photo = keras.Input((6, 6, 2), name="photo")
    meta = keras.Input((3,), name="meta")
    a = keras.layers.Conv2D(4, 3, activation="relu")(photo)
    a = keras.layers.Flatten()(a)
    b = keras.layers.Dense(4, activation="tanh")(meta)
    h = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([a, b]))
    return keras.Model([photo, meta], {
        "species": keras.layers.Dense(4, activation="softmax", name="species")(h),
        "weight": keras.layers.Dense(1, name="weight")(h)})


def recurrent():
    keras.utils.set_random_seed(4)
    x = keras.Input((8, 3), name="signal")
    branches = [keras.layers.LSTM(5)(x), keras.layers.GRU(5)(x),
                keras.layers.Bidirectional(keras.layers.LSTM(3))(x),
                keras.layers.Bidirectional(keras.layers.GRU(3, return_sequences=True))(x)]
    branches[-1] = keras.layers.GlobalMaxPooling1D()(branches[-1])
    h = keras.layers.Concatenate()(branches)
    return keras.Model(x, keras.layers.Dense(3, activation="softmax", name="gesture")(h))


class Inverse(keras.layers.Layer):
    def call(self, x):
        return tf.reshape(tf.linalg.inv(tf.reshape(x, (-1, 2, 2)) + 3 * tf.eye(2)), (-1, 4))


def flex():
    keras.utils.set_random_seed(5)
    x = keras.Input((4,), name="matrix")
    return keras.Model(x, keras.layers.Dense(2, name="out")(Inverse()(keras.layers.Dense(4)(x))))


class Fussy(keras.layers.Layer):
    def call(self, x):
        if x.shape[0] is None:  # building the functional model works; tracing with a batch does not
            return x
        raise ValueError("this layer refuses to be traced because its configuration is incomplete: "
                         "set the vocabulary before saving the model, then export it again")


def crashes_when_traced():
    x = keras.Input((3,), name="x")
    return keras.Model(x, Fussy()(x))
"""

ALL_MODES = ("targets: {fp32: {}, fp16: {quantize: float16}, dynamic: {quantize: dynamic}, "
             "int8: {quantize: int8, io: int8}, uint8: {quantize: int8, io: uint8}, "
             "i16: {quantize: int16x8}}")


def recipe(source: str, data: str | None, targets: str, extra: str = "") -> str:
    data_line = f"data: {{calibration: {data}, evaluation: {data}}}\n" if data else ""
    return f"tfbuild: 1\nmodel: {{source: '{source}'{extra}}}\n{data_line}{targets}\n"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    from conftest import Project

    project = Project(tmp_path_factory.mktemp("zoo") / "proj")
    project.write("zoo.py", ZOO)
    rng = np.random.default_rng(0)
    project.save_arrays("data/tokens.npz", tokens=rng.random((24, 15, 12), dtype=np.float32),
                        labels=rng.integers(0, 5, 24))
    project.save_arrays("data/frames.npz", frames=rng.random((24, 9, 4), dtype=np.float32))
    project.save_arrays("data/two.npz", photo=rng.random((24, 6, 6, 2), dtype=np.float32),
                        meta=rng.random((24, 3), dtype=np.float32))
    project.save_arrays("data/signal.npz", signal=rng.random((24, 8, 3), dtype=np.float32))
    project.save_arrays("data/matrix.npz", matrix=rng.random((24, 4), dtype=np.float32))
    project.recipe("tokens", recipe("py:zoo:tokens_conv", "data/tokens.npz",
                                    "targets: {fp32: {}, int8: {quantize: int8}}"))
    project.recipe("frames", recipe("py:zoo:frames_lstm", "data/frames.npz",
                                    "targets: {fp32: {}, int8: {quantize: int8}}"))
    project.recipe("pinned", recipe("py:zoo:frames_lstm", "data/frames.npz",
                                    "targets: {int8: {quantize: int8}}",
                                    ", inputs: {frames: {shape: [1, 9, 4]}}"))
    project.recipe("two", recipe("py:zoo:photo_and_meta", "data/two.npz", ALL_MODES))
    project.recipe("rnn", recipe("py:zoo:recurrent", "data/signal.npz",
                                 "targets: {int8: {quantize: int8, io: int8}, i16: {quantize: int16x8}}"))
    project.recipe("flex", recipe("py:zoo:flex", "data/matrix.npz",
                                  "targets: {int8: {quantize: int8, select_tf_ops: true}, "
                                  "dynamic: {quantize: dynamic, select_tf_ops: true}}"))
    project.recipe("fussy", recipe("py:zoo:crashes_when_traced", None, "targets: {fp32: {}}"))
    result = project.run("-k", "-j1")
    return project, result


def report(project, recipe_name: str, target: str) -> dict:
    return json.loads(project.path(f"build/{recipe_name}/{target}/report.json").read_text())


def zoo_module(project):
    import importlib.util

    spec = importlib.util.spec_from_file_location("zoo_under_test", project.path("zoo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def litert(path, **inputs) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    return runner(**inputs)


def test_no_worker_died_or_crashed_except_the_model_that_raises(zoo):
    project, result = zoo
    assert result.code == 1, result.text
    assert "worker died" not in result.text and "worker crashed" not in result.text
    assert "Traceback" not in result.text
    crashed = [line for line in result.out.splitlines() if line.startswith("[") and "crashed" in line]
    assert crashed == [line for line in crashed if "fussy:fp32" in line] and crashed, result.out


def test_a_dynamic_time_axis_stays_dynamic_and_is_verified_at_the_datas_length(zoo):
    project, result = zoo
    assert "built tokens:fp32" in result.out and "built tokens:int8" in result.out, result.out
    signature = report(project, "tokens", "fp32")["signature"]["inputs"][0]
    assert signature["name"] == "tokens" and signature["shape_signature"] == [1, -1, 12]
    reference = zoo_module(project).tokens_conv()
    for length in (7, 15, 31):  # lengths the build never saw, through a resized interpreter
        x = np.random.default_rng(length).random((1, length, 12), dtype=np.float32)
        got = litert(project.path("build/tokens/fp32/model.tflite"), tokens=x)["intent"]
        np.testing.assert_allclose(got, np.asarray(reference(x)), atol=1e-5)


def test_a_recurrent_layer_on_a_dynamic_axis_builds_in_float_and_int8_names_the_key(zoo):
    project, result = zoo
    assert "built frames:fp32" in result.out, result.out
    line = " ".join(result.out.split("failed frames:int8")[1].split("log:")[0].split())
    assert line.startswith("(") and "while converting and calibrating: quantize: int8" in line
    assert "pin the sequence length in model.inputs (frames: {shape: [1, N, 4]}, N the length" in line  # its real rank
    assert "targets.int8.quantize to dynamic or float16" in line
    assert "built pinned:int8" in result.out  # the fix the message names works
    assert report(project, "pinned", "int8")["verdict"] == "passed"


def test_two_inputs_two_outputs_at_every_mode_keep_their_names(zoo):
    project, result = zoo
    for target in ("fp32", "fp16", "dynamic", "int8", "uint8", "i16"):
        assert f"built two:{target}" in result.out, result.out
        data = report(project, "two", target)
        assert {t["name"] for t in data["signature"]["inputs"]} == {"photo", "meta"}
        assert {t["name"] for t in data["signature"]["outputs"]} == {"species", "weight"}
        assert data["output_kinds"] == {"species": "scores", "weight": "values"}
        assert "top1_agreement" not in data["metrics"]["outputs"]["weight"]
    int8 = report(project, "two", "int8")
    assert {t["dtype"] for t in int8["signature"]["inputs"]} == {"int8"}
    assert int8["metrics"]["outputs"]["species"]["cosine"] > 0.95


def test_lstm_and_gru_uni_and_bidirectional_build_at_int8_and_int16x8(zoo):
    project, result = zoo
    for target in ("int8", "i16"):
        assert f"built rnn:{target}" in result.out, result.out
        data = report(project, "rnn", target)
        assert data["verdict"] == "passed" and "WHILE" not in data["signature"]["ops"]
        assert any("unrolled" in w for w in data["warnings"])
        assert data["metrics"]["outputs"]["gesture"]["cosine"] > 0.99


def test_flex_with_int8_says_which_key_to_change_and_dynamic_builds(zoo):
    project, result = zoo
    line = " ".join(result.out.split("failed flex:int8")[1].split("log:")[0].split())
    assert "Flex" in line and "targets.int8.quantize to dynamic or float16" in line
    assert "built flex:dynamic" in result.out
    assert report(project, "flex", "dynamic")["verdict"] == "unverified"


def test_a_crash_is_one_whole_line_with_its_stage_in_the_summary(zoo):
    project, result = zoo
    progress = " ".join(result.out.split("crashed fussy:fp32")[1].split("log:")[0].split())
    assert "\x1b" not in progress
    assert progress.startswith("crashed while tracing the model: ValueError: this layer refuses"), progress
    assert "then export it again" in progress and "Fussy" in progress
    lines = result.out.split("\ntarget ")[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("fussy:fp32"))
    row = [lines[start]] + list(itertools.takewhile(lambda line: line.startswith(" "), lines[start + 1:]))
    words = " ".join(" ".join(row).split())  # the cell wraps onto continuation lines, never cut
    assert "crashed while tracing the model" in words and "then export it again" in words, row
