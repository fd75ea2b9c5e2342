"""Real conversions through the real command: each source kind, each quantization mode, the
model shapes plain converter calls get wrong, the registry, trust_code and select TF ops.

Every check of a .tflite here loads it in ai-edge-litert in the test process and compares it
with the Keras model computed here too, so the tests do not trust tfbuild's own verifier.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_user_error
from models import FACTORIES, dense_classifier, features, keras

pytestmark = pytest.mark.slow


def litert_outputs(path, **inputs) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    return {k: np.asarray(v) for k, v in runner(**inputs).items()}


def tensor_details(path) -> tuple[dict, dict]:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    return runner.get_input_details(), runner.get_output_details()


def report(project, recipe: str, target: str) -> dict:
    return json.loads(project.path(f"build/{recipe}/{target}/report.json").read_text())


def test_every_source_kind_converts_to_the_same_function(project):
    model = dense_classifier(project.path("models/m.keras"))
    model.save(project.path("models/m.h5"))
    model.export(str(project.path("models/m_savedmodel")), verbose=False)
    project.write("factory.py", """\
        import keras
        def make():
            return keras.saving.load_model("models/m.keras")
        """)
    x = features(16)
    np.save(project.path("data/x.npy"), x)
    for name, source in [("keras", "models/m.keras"), ("h5", "models/m.h5"),
                         ("savedmodel", "models/m_savedmodel"), ("factory", "py:factory:make")]:
        project.recipe(name, f"tfbuild: 1\nmodel: {{source: {source}}}\ndata: {{evaluation: data/x.npy}}\n"
                             "targets: {fp32: {}}\n")
    result = project.run("-j2")
    assert result.code == 0, result.text
    expected = np.asarray(model(x[:1]))
    for name in ("keras", "h5", "savedmodel", "factory"):
        path = project.path(f"build/{name}/fp32/model.tflite")
        inputs, outputs = tensor_details(path)
        (input_name,) = inputs
        (output_name,) = outputs
        got = litert_outputs(path, **{input_name: x[:1]})[output_name]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=name)
        assert report(project, name, "fp32")["verdict"] == "passed"


def test_each_quantization_mode_has_its_own_settings(project):
    from models import write_dense_project

    write_dense_project(project, targets="""\
        fp32: {}
        fp16: {quantize: float16}
        dynamic: {quantize: dynamic}
        int8: {quantize: int8, io: int8}
        uint8: {quantize: int8, io: uint8}
        int8f: {quantize: int8}
        x16: {quantize: int16x8}
        x16io: {quantize: int16x8, io: int16}
        """.replace("        ", ""), hidden=256)
    result = project.run()
    assert result.code == 0, result.text
    expected_io = {"fp32": np.float32, "fp16": np.float32, "dynamic": np.float32, "int8": np.int8,
                   "uint8": np.uint8, "int8f": np.float32, "x16": np.float32, "x16io": np.int16}
    expected_mode = {"fp32": "float32", "fp16": "float16", "dynamic": "dynamic", "int8": "int8",
                     "uint8": "int8", "int8f": "int8", "x16": "int16x8", "x16io": "int16x8"}
    tolerance = {"float32": 1e-5, "float16": 5e-3, "dynamic": 0.05, "int8": 0.05, "int16x8": 0.02}
    import keras as k

    model = k.saving.load_model(project.path("models/clf.keras"))
    sizes = {}
    for target, dtype in expected_io.items():
        path = project.path(f"build/clf/{target}/model.tflite")
        sizes[target] = path.stat().st_size
        inputs, outputs = tensor_details(path)
        assert inputs["features"]["dtype"] == dtype, target
        assert outputs["probs"]["dtype"] == dtype, target
        rep = report(project, "clf", target)
        assert rep["verdict"] == "passed" and rep["quantize"] == expected_mode[target]
        assert_close_to_keras(path, model, tolerance[expected_mode[target]])
    ops = {t: set(report(project, "clf", t)["signature"]["ops"]) for t in expected_io}
    assert "DEQUANTIZE" in ops["fp16"]                      # float16 weights, dequantized at load
    assert "QUANTIZE" not in ops["int8"] and "DEQUANTIZE" not in ops["int8"]   # fully integer
    assert {"QUANTIZE", "DEQUANTIZE"} <= ops["int8f"]        # float edges around an int8 core
    assert sizes["fp16"] < sizes["fp32"] and sizes["int8"] < sizes["fp16"] and sizes["dynamic"] < sizes["fp16"]
    quant = tensor_details(project.path("build/clf/int8/model.tflite"))[0]["features"]["quantization"]
    assert quant[0] > 0  # a real input scale
    from ai_edge_litert.interpreter import Interpreter

    x16 = Interpreter(model_path=str(project.path("build/clf/x16/model.tflite")))
    assert any(d["dtype"] == np.int16 for d in x16.get_tensor_details())  # int16 activations inside


def assert_close_to_keras(path, model, tolerance: float) -> None:
    """Run the .tflite as an app would (quantizing with the file's own parameters) vs Keras."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    (name, detail), = runner.get_input_details().items()
    (out_name, out_detail), = runner.get_output_details().items()
    worst = 0.0
    for x in features(8, seed=3):
        x = x[None]
        fed = x
        if detail["dtype"] != np.float32:
            scale, zero = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            fed = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])
        got = runner(**{name: fed})[out_name].astype(np.float32)
        if out_detail["dtype"] != np.float32:
            scale, zero = out_detail["quantization"]
            got = (got - zero) * scale
        worst = max(worst, float(np.abs(got - np.asarray(model(x))).max()))
    assert worst <= tolerance, (path, worst)


def test_recurrent_layers_convert_to_builtin_ops_with_pinned_batch(project):
    k = keras()
    k.utils.set_random_seed(0)
    seq = k.Input((6, 3), name="seq")
    branches = [k.layers.LSTM(4)(seq), k.layers.GRU(4)(seq), k.layers.Bidirectional(k.layers.LSTM(4))(seq)]
    model = k.Model(seq, k.layers.Dense(2, name="out")(k.layers.Concatenate()(branches)))
    model.save(project.path("models/rnn.keras"))
    x = np.random.default_rng(0).random((8, 6, 3), dtype=np.float32)
    project.save_arrays("data/seq.npz", seq=x)
    project.recipe("rnn", "tfbuild: 1\nmodel: {source: models/rnn.keras}\n"
                          "data: {calibration: data/seq.npz, evaluation: data/seq.npz}\n"
                          "targets: {fp32: {}, dynamic: {quantize: dynamic}}\n")
    result = project.run("rnn")
    assert result.code == 0, result.text
    path = project.path("build/rnn/fp32/model.tflite")
    assert not any(op.startswith("Flex") for op in report(project, "rnn", "fp32")["signature"]["ops"])
    assert list(tensor_details(path)[0]["seq"]["shape"]) == [1, 6, 3]  # batch pinned to 1 by default
    np.testing.assert_allclose(litert_outputs(path, seq=x[:1])["out"], np.asarray(model(x[:1])), atol=1e-5)
    unpinned = project.run("rnn:fp32", "model.batch_size=null")
    assert unpinned.code == 1, unpinned.text
    assert "pin the batch" in unpinned.out and "select_tf_ops" in unpinned.out
    assert "Traceback" not in unpinned.text and "loc(callsite" not in unpinned.text


def test_subclassed_multi_io_and_dynamic_dims(project):
    project.write("factories.py", FACTORIES)
    rng = np.random.default_rng(0)
    project.save_arrays("data/multi.npz", left=rng.random((10, 5), dtype=np.float32),
                        right=rng.random((10, 3), dtype=np.float32))
    project.save_arrays("data/frames.npz", frames=rng.random((10, 9, 4), dtype=np.float32))
    project.recipe("sub", "tfbuild: 1\nmodel:\n  source: py:factories:subclassed\n"
                          "  inputs: {x: {shape: [1, 7]}}\ndata: {evaluation: 'py:factories:sub_data'}\n"
                          "targets: {fp32: {}}\n")
    project.recipe("multi", "tfbuild: 1\nmodel: {source: 'py:factories:two_in_two_out'}\n"
                            "data: {evaluation: data/multi.npz, calibration: data/multi.npz}\n"
                            "targets: {fp32: {}, int8: {quantize: int8, io: int8}}\n")
    project.recipe("dyn", "tfbuild: 1\nmodel: {source: 'py:factories:variable_length'}\n"
                          "data: {evaluation: data/frames.npz}\ntargets:\n  kept: {}\n")
    project.recipe("pinned", "tfbuild: 1\nmodel:\n  source: py:factories:variable_length\n"
                             "  inputs: {frames: {shape: [1, 9, 4]}}\ndata: {evaluation: data/frames.npz}\n"
                             "targets: {fixed: {}}\n")
    result = project.run("-j2")
    assert result.code == 0, result.text

    inputs, outputs = tensor_details(project.path("build/multi/fp32/model.tflite"))
    assert set(inputs) == {"left", "right"} and set(outputs) == {"score", "classes"}
    inputs8, outputs8 = tensor_details(project.path("build/multi/int8/model.tflite"))
    assert set(inputs8) == {"left", "right"} and outputs8["classes"]["dtype"] == np.int8
    per_output = report(project, "multi", "int8")["metrics"]["outputs"]
    assert set(per_output) == {"score", "classes"}
    factories = load_module(project.path("factories.py"))
    left, right = rng.random((1, 5), dtype=np.float32), rng.random((1, 3), dtype=np.float32)
    expected = {k: np.asarray(v) for k, v in factories.two_in_two_out()([left, right]).items()}
    got = litert_outputs(project.path("build/multi/fp32/model.tflite"), left=left, right=right)
    for name in ("score", "classes"):  # each name carries its own output, not its neighbour's
        np.testing.assert_allclose(got[name], expected[name], atol=1e-5, err_msg=name)

    sub_inputs, _ = tensor_details(project.path("build/sub/fp32/model.tflite"))
    assert list(sub_inputs["x"]["shape"]) == [1, 7]
    subclassed = factories.subclassed()
    x = rng.random((1, 7), dtype=np.float32)
    expected_sub = np.asarray(subclassed(x))  # same seed, same weights as the worker's build
    got_sub = next(iter(litert_outputs(project.path("build/sub/fp32/model.tflite"), x=x).values()))
    np.testing.assert_allclose(got_sub, expected_sub, atol=1e-5)
    sub_report = report(project, "sub", "fp32")
    assert sub_report["evaluated_on"] == "evaluation" and sub_report["metrics"]["samples"] == 10

    kept = report(project, "dyn", "kept")["signature"]["inputs"][0]
    assert kept["shape_signature"] == [1, -1, 4]
    fixed = report(project, "pinned", "fixed")["signature"]["inputs"][0]
    assert fixed["shape_signature"] == [1, 9, 4]
    frames = np.random.default_rng(5).random((1, 13, 4), dtype=np.float32)  # a length never seen
    expected = np.asarray(load_module(project.path("factories.py")).variable_length()(frames))
    got = litert_outputs(project.path("build/dyn/kept/model.tflite"), frames=frames)["pooled"]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def load_module(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"test_module_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SWISH = """\
import keras


@keras.saving.register_keras_serializable(package="acme")
class Swish(keras.layers.Layer):
    def call(self, x):
        return x * keras.ops.sigmoid(x)
"""


def test_custom_layer_through_the_registry(project):
    project.write("acme/__init__.py", "")
    project.write("acme/layers.py", SWISH)
    module = load_module(project.path("acme/layers.py"))
    k = keras()
    inputs = k.Input((4,), name="x")
    model = k.Model(inputs, module.Swish()(k.layers.Dense(3)(inputs)))
    model.save(project.path("models/swish.keras"))
    k.saving.get_custom_objects().clear()  # the build must not rely on this process's registrations
    base = "tfbuild: 1\nmodel:\n  source: models/swish.keras\n{registry}targets: {{fp32: {{}}}}\n"
    project.recipe("swish", base.format(registry=""))
    missing = project.run()
    assert_user_error(missing, "model.custom_objects.acme>Swish", "not registered", "acme>Swish: package.module:Swish")
    project.recipe("swish", base.format(registry="  custom_objects:\n    acme>Swish: acme.layers:Swish\n"))
    built = project.run()
    assert built.code == 0, built.text
    x = np.ones((1, 4), np.float32)
    out = litert_outputs(project.path("build/swish/fp32/model.tflite"), x=x)
    np.testing.assert_allclose(next(iter(out.values())), np.asarray(model(x)), atol=1e-5)


def test_lambda_needs_trust_code(project):
    k = keras()
    inputs = k.Input((4,), name="x")
    model = k.Model(inputs, k.layers.Lambda(lambda t: t * 2.0 + 1.0)(k.layers.Dense(2)(inputs)))
    model.save(project.path("models/lam.keras"))
    project.recipe("lam", "tfbuild: 1\nmodel: {source: models/lam.keras}\ntargets: {fp32: {}}\n")
    refused = project.run()
    assert_user_error(refused, "model.trust_code", "Lambda", "trust_code: true")
    assert not project.path("build/lam/fp32/model.tflite").exists()
    trusted = project.run("model.trust_code=true")
    assert trusted.code == 0, trusted.text
    x = np.ones((1, 4), np.float32)
    out = litert_outputs(project.path("build/lam/fp32/model.tflite"), x=x)
    np.testing.assert_allclose(next(iter(out.values())), np.asarray(model(x)), atol=1e-5)


def test_select_tf_ops_is_an_explicit_opt_in(project):
    project.write("flexmodel.py", """\
        import keras
        import tensorflow as tf

        class Determinant(keras.layers.Layer):
            def call(self, x):
                return tf.expand_dims(tf.linalg.det(tf.reshape(x, (-1, 3, 3))), -1)

        def make():
            x = keras.Input((9,), name="m")
            return keras.Model(x, Determinant(name="det")(x))
        """)
    project.recipe("flex", """\
        tfbuild: 1
        model: {source: 'py:flexmodel:make'}
        targets:
          plain: {}
          flex: {select_tf_ops: true}
          strict: {select_tf_ops: true, accept: {max_abs_error: 0.01}}
          waived: {select_tf_ops: true, accept: {max_abs_error: 0.01, waive: checked on a Pixel 8}}
        """)
    result = project.run("-k")
    assert result.code == 1, result.text
    lines = result.out
    assert "failed flex:plain" in lines and "tf.MatrixDeterminant" in lines and "select_tf_ops: true" in lines
    assert "built flex:flex" in lines and "Flex runtime" in lines
    assert "rejected flex:strict" in lines and "not verified: Flex ops" in lines
    assert "built flex:waived" in lines and "verification waived: checked on a Pixel 8" in lines
    assert report(project, "flex", "flex")["verdict"] == "unverified"
    assert not project.path("build/flex/plain/model.tflite").exists()
    assert not project.path("build/flex/strict/model.tflite").exists()


def test_data_that_does_not_fit_the_model_is_a_user_error(project):
    dense_classifier(project.path("models/m.keras"))
    project.save_arrays("data/bad.npz", features=np.zeros((4, 5), np.float32))
    project.recipe("m", "tfbuild: 1\nmodel: {source: models/m.keras}\ndata: {evaluation: data/bad.npz}\n"
                        "targets: {fp32: {}}\n")
    assert_user_error(project.run(), "recipes/m.yaml: data.evaluation", "samples of shape [5]", "[8]")
    project.write("models/lfs.keras", "version https://git-lfs.github.com/spec/v1\noid sha256:abc\n")
    project.recipe("m", "tfbuild: 1\nmodel: {source: models/lfs.keras}\ntargets: {fp32: {}}\n")
    assert_user_error(project.run(), "model.source", "not a readable .keras model", "git lfs pull")
