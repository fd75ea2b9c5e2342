"""PyTorch sources (tfbuild/torch_models.py): real torch models converted for real with
litert-torch, quantized with ai-edge-quantizer, run with LiteRT's interpreter and compared with
torch. Nothing is mocked and nothing is downloaded: the models are built here (tests/torch_nets.py)
or trained in the repository (examples/torch_digits).

Without litert-torch installed the module skips, except under CI=true, where it fails: CI must
never pass without having converted a torch model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _require_litert_torch():
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        import litert_torch  # noqa: F401  (an ImportError fails the module under CI)
    else:
        pytest.importorskip("litert_torch", reason="the torch extra is not installed (pip install -e '.[torch]')")


_require_litert_torch()

import torch  # noqa: E402

from tfbuild import torch_models as tm  # noqa: E402
from tfbuild.errors import ConversionFailed, UserError  # noqa: E402
from tfbuild.recipe import InputSpec  # noqa: E402
from tfbuild.layer_error import float_ops  # noqa: E402

FILE = "recipes/t.yaml"


# ------------------------------------------------------------------ helpers

def load(spec: str, inputs: dict[str, list], **kwargs) -> tm.TorchModel:
    specs = {name: InputSpec(shape=shape) for name, shape in inputs.items()}
    return tm.load_torch_model(spec, REPO, file=FILE, inputs=specs, **kwargs)


def random_inputs(model: tm.TorchModel, count: int = 1, seed: int = 1, sizes: dict | None = None) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape, dtype in model.input_specs:
        dims = [(sizes or {}).get((name, axis), 5) if d is None else d for axis, d in enumerate(shape)]
        out[name] = rng.standard_normal([count * dims[0], *dims[1:]]).astype(dtype)
    return out


def runner(model_bytes: bytes):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=model_bytes).get_signature_runner(tm.SIGNATURE)


def run_tflite(model_bytes: bytes, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One batch through the .tflite, quantizing integer inputs and dequantizing integer outputs
    with the scales in the file (as an app's loader does)."""
    run = runner(model_bytes)
    fed = {}
    for name, detail in run.get_input_details().items():
        value = inputs[name]
        if detail["dtype"] != np.float32:
            scale, zero = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            value = np.clip(np.round(value / scale + zero), info.min, info.max).astype(detail["dtype"])
        fed[name] = value
    outputs = run(**fed)
    details = run.get_output_details()
    result = {}
    for name, value in outputs.items():
        scale, zero = details[name]["quantization"]
        result[name] = (value.astype(np.float32) - zero) * scale if details[name]["dtype"] != np.float32 else value
    return result


def io_types(model_bytes: bytes) -> tuple[set[str], set[str]]:
    run = runner(model_bytes)
    return ({d["dtype"].__name__ for d in run.get_input_details().values()},
            {d["dtype"].__name__ for d in run.get_output_details().values()})


def max_error(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def per_sample(model_bytes: bytes, inputs: dict, batch: int = 1) -> dict[str, np.ndarray]:
    count = len(next(iter(inputs.values())))
    parts = [run_tflite(model_bytes, {k: v[i:i + batch] for k, v in inputs.items()}) for i in range(0, count, batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# ------------------------------------------------------------------ float32, four kinds of model

FLOAT_CASES = {
    "cnn": ("py:torch_nets:cnn", {"image": [1, 3, 16, 16]}, None),
    "two_io": ("py:torch_nets:two_io", {"features": [1, 6], "context": [1, 4]}, None),
    "lstm": ("py:torch_nets:lstm", {"sequence": [1, 10, 4]}, None),
    "attention": ("py:torch_nets:attention", {"tokens": [1, 7, 16]}, ["tokens_out", "pooled"]),
}


@pytest.mark.parametrize("case", sorted(FLOAT_CASES))
def test_float32_matches_torch_with_the_recipes_names(case):
    spec, inputs, renamed = FLOAT_CASES[case]
    rename = (lambda names: (renamed, {})) if renamed else None
    model = load(spec, inputs, rename=rename)
    model_bytes = model.convert()
    signature = runner(model_bytes)
    assert sorted(signature.get_input_details()) == sorted(inputs)
    assert sorted(signature.get_output_details()) == sorted(model.output_names)
    sample = random_inputs(model)
    assert max_error(run_tflite(model_bytes, sample), model.reference(sample)) < 1e-4


def test_output_names_follow_what_the_module_returns():
    assert load(*FLOAT_CASES["two_io"][:2]).output_names == ["scores", "embedding"]
    assert load(*FLOAT_CASES["attention"][:2]).output_names == ["output_0", "output_1"]
    assert load(*FLOAT_CASES["cnn"][:2]).output_names == ["output_0"]


# ------------------------------------------------------------------ quantized modes (the trained example)

@pytest.fixture(scope="module")
def digits():
    """The trained example: the wrapped model (channel-last I/O), its float file, its data."""
    model = load("py:examples.torch_digits.model:load", {"image": [1, 8, 8, 1]}, channel_last=True,
                 rename=lambda names: (["probs"], {"probs": "scores"}))
    with np.load(REPO / "examples/torch_digits/calibration.npz") as npz:
        calibration = {"image": npz["image"]}
    with np.load(REPO / "examples/torch_digits/evaluation.npz") as npz:
        evaluation, labels = {"image": npz["image"][:120]}, npz["labels"][:120]
    float_bytes = model.convert()
    reference = model.reference(evaluation)
    return model, float_bytes, calibration, evaluation, labels, reference


def quantized(digits, quantize: str, io: str = "float32", keep_float=()) -> bytes:
    model, float_bytes, calibration, *_ = digits
    batches = tm.calibration_batches(calibration, model.input_specs, 200)
    return tm.quantize_model(float_bytes, quantize, io, batches, keep_float=list(keep_float))


def agreement(model_bytes: bytes, digits) -> tuple[float, float, float]:
    """(top-1 agreement with torch, accuracy, max abs error of the probabilities)."""
    _, _, _, evaluation, labels, reference = digits
    got = per_sample(model_bytes, evaluation)["probs"]
    ref = reference["probs"]
    return (float((got.argmax(-1) == ref.argmax(-1)).mean()), float((got.argmax(-1) == labels).mean()),
            float(np.abs(got - ref).max()))


def test_channel_last_io_takes_nhwc_and_matches_the_nchw_model(digits):
    model, float_bytes, _, evaluation, _, reference = digits
    assert runner(float_bytes).get_input_details()["image"]["shape"].tolist() == [1, 8, 8, 1]
    direct = torch.from_numpy(np.ascontiguousarray(evaluation["image"].transpose(0, 3, 1, 2)))
    from examples.torch_digits.model import load as load_digits

    with torch.no_grad():
        assert np.allclose(load_digits()(direct).numpy(), reference["probs"], atol=1e-6)
    top1, accuracy, error = agreement(float_bytes, digits)
    assert top1 == 1.0 and error < 1e-5 and accuracy > 0.95
    assert any("channel-last" in note for note in model.notes)


def test_float16_stores_half_weights(digits):
    _, float_bytes, *_ = digits
    model_bytes = quantized(digits, "float16")
    assert io_types(model_bytes) == ({"float32"}, {"float32"})
    assert 0.45 < len(model_bytes) / len(float_bytes) < 0.6
    top1, _, error = agreement(model_bytes, digits)
    assert top1 == 1.0 and error < 1e-2


def test_dynamic_range_has_int8_weights_and_float_io(digits):
    _, float_bytes, *_ = digits
    model_bytes = quantized(digits, "dynamic")
    assert io_types(model_bytes) == ({"float32"}, {"float32"})
    assert len(model_bytes) / len(float_bytes) < 0.35
    assert agreement(model_bytes, digits)[0] >= 0.97


@pytest.mark.parametrize("io", ["int8", "uint8", "float32"])
def test_int8_is_truly_integer_with_the_requested_io(digits, io):
    _, float_bytes, *_ = digits
    model_bytes = quantized(digits, "int8", io)
    assert io_types(model_bytes) == ({io}, {io})
    found = float_ops(model_bytes)
    assert found["count"] == 0, found  # no op left computing in float: not a fake-quant file
    assert len(model_bytes) / len(float_bytes) < 0.35
    top1, accuracy, _ = agreement(model_bytes, digits)
    assert top1 >= 0.97 and accuracy > 0.95


@pytest.mark.parametrize("io", ["int16", "float32"])
def test_int16x8(digits, io):
    model_bytes = quantized(digits, "int16x8", io)
    assert io_types(model_bytes) == ({io}, {io})
    assert float_ops(model_bytes)["count"] == 0
    assert agreement(model_bytes, digits)[0] == 1.0


def test_int8_keeps_named_op_types_in_float(digits):
    model_bytes = quantized(digits, "int8", "float32", keep_float=["FULLY_CONNECTED"])
    assert set(float_ops(model_bytes)["by_type"]) == {"FULLY_CONNECTED"}
    assert agreement(model_bytes, digits)[0] >= 0.97


def test_impossible_io_and_missing_calibration_are_conversion_failures(digits):
    _, float_bytes, *_ = digits
    with pytest.raises(ConversionFailed, match="io: uint8 is not possible with quantize: int16x8"):
        tm.quantize_model(float_bytes, "int16x8", "uint8", [])
    with pytest.raises(ConversionFailed, match="needs calibration data"):
        tm.quantize_model(float_bytes, "int8", "int8", None)


# ------------------------------------------------------------------ dynamic axes

def test_dynamic_height_and_width_run_at_two_sizes():
    model = load("py:torch_nets:cnn", {"image": [1, 3, None, None]})
    model_bytes = model.convert()
    assert runner(model_bytes).get_input_details()["image"]["shape_signature"].tolist() == [1, 3, -1, -1]
    for size in (12, 20):
        sample = random_inputs(model, sizes={("image", 2): size, ("image", 3): size})
        assert max_error(run_tflite(model_bytes, sample), model.reference(sample)) < 1e-4


@pytest.mark.parametrize(("spec", "name", "shape", "tool"), [
    ("py:torch_nets:lstm", "sequence", [1, None, 4], "torch.export"),  # an LSTM's sequence length
    ("py:examples.torch_digits.model:load", "image", [None, 1, 8, 8], "litert-torch"),  # batch through Flatten
])
def test_dynamic_axes_the_tools_cannot_keep_are_a_clear_user_error(spec, name, shape, tool):
    model = load(spec, {name: shape})
    axis = shape.index(None)
    with pytest.raises(UserError, match=rf"^{tool} cannot keep {name} axis {axis} dynamic \(\w+") as caught:
        model.convert()
    assert caught.value.file == FILE and caught.value.key == f"model.inputs.{name}.shape"
    assert "a number" in caught.value.expected


# ------------------------------------------------------------------ saved programs and mistakes

def test_saved_export_program_needs_trust_and_then_converts(tmp_path):
    from torch_nets import two_io

    sample = (torch.rand(1, 6), torch.rand(1, 4))
    torch.export.save(torch.export.export(two_io(), sample), tmp_path / "m.pt2")
    with pytest.raises(UserError, match="can run code") as caught:
        tm.load_torch_model("m.pt2", tmp_path, file=FILE)
    assert caught.value.key == "model.trust_code"
    model = tm.load_torch_model("m.pt2", tmp_path, file=FILE, trust_code=True)
    assert model.input_specs == [("features", [1, 6], "float32"), ("context", [1, 4], "float32")]
    assert model.output_names == ["scores", "embedding"]
    sample = random_inputs(model)
    assert max_error(run_tflite(model.convert(), sample), model.reference(sample)) < 1e-5


@pytest.mark.parametrize(("spec", "inputs", "message", "key"), [
    ("py:torch_nets:not_a_module", {"x": [1, 2]}, "returned str, not a torch.nn.Module", "model.source"),
    ("py:torch_nets:cnn", None, "no input shapes of its own", "model.inputs"),
    ("py:torch_nets:cnn", {"image": [1, 16, 16, 3]}, r"forward\(\) failed on inputs image \[1, 16, 16, 3\]", "model.inputs"),
    ("py:torch_nets:missing", {"x": [1, 2]}, "has no attribute 'missing'", "model.source"),
])
def test_user_mistakes_are_user_errors(spec, inputs, message, key):
    with pytest.raises(UserError, match=message) as caught:
        if inputs is None:
            tm.load_torch_model(spec, REPO, file=FILE)
        else:
            load(spec, inputs)
    assert caught.value.key == key and caught.value.file == FILE
