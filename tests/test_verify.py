"""Acceptance: thresholds that pass and fail like tests, int8 edges de/quantized with each
tensor's own parameters, per-output checks, latency, and broken conversions caught."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models import dense_classifier, features, write_dense_project
from tfbuild import verify
from tfbuild.conversion.modes import MODES


def test_quantize_and_dequantize_by_hand():
    tensor = {"dtype": "int8", "quantization": {"scale": 0.25, "zero_point": -3}}
    values = np.array([0.5, -1.0, 100.0, -100.0, 0.125, -0.125], np.float32)
    # 0.5/0.25 - 3 = -1; -1/0.25 - 3 = -7; extremes clip; halves round away from zero (±0.5 -> ±1)
    assert verify.quantize(values, tensor).tolist() == [-1, -7, 127, -128, -2, -4]
    assert verify.dequantize(np.array([5, -128], np.int8), tensor).tolist() == [2.0, -31.25]
    uint8 = {"dtype": "uint8", "quantization": {"scale": 0.5, "zero_point": 10}}
    assert verify.quantize(np.array([1.0, -20.0]), uint8).tolist() == [12, 0]
    float_tensor = {"dtype": "float32", "quantization": None}
    assert verify.quantize(np.array([1.5]), float_tensor).dtype == np.float32


def test_judge_names_metric_value_and_bound_per_output():
    reference = {"probs": np.eye(4, dtype=np.float32), "score": np.ones((4, 1), np.float32)}
    candidate = {"probs": np.eye(4, dtype=np.float32)[[0, 1, 2, 0]], "score": np.ones((4, 1), np.float32) * 1.5}
    metrics = verify.compare(reference, candidate, labels=np.array([0, 1, 2, 3]))
    assert metrics["outputs"]["probs"]["top1_agreement"] == 0.75
    assert metrics["accuracy"] == {"output": "probs", "source": 1.0, "tflite": 0.75}
    failures = verify.judge(metrics, {"top1_agreement": 0.98, "max_abs_error": 0.1, "max_accuracy_drop": 0.01,
                                      "max_size_kb": 10}, size_kb=12.5, latency_ms=None)
    assert "probs: top1_agreement 0.75 < 0.98 (by 0.23)" in failures
    assert "score: max_abs_error 0.5 > 0.1 (by 0.4)" in failures
    assert "accuracy_drop 0.25 > 0.01 (by 0.24)" in failures
    assert "size_kb 12.5 > 10 (by 2.5)" in failures
    assert verify.judge(metrics, {"top1_agreement": 0.7, "max_size_kb": 20}, 12.5, None) == []


def test_non_finite_outputs_always_fail():
    metrics = verify.compare({"y": np.ones((2, 3), np.float32)}, {"y": np.full((2, 3), np.nan, np.float32)}, None)
    assert verify.judge(metrics, {}, 1.0, None) == ["outputs are not finite (NaN or Inf): the conversion is broken"]


def test_defaults_per_mode_and_user_overrides():
    thresholds, user_set = verify.effective_thresholds("int8", None, None)
    assert thresholds["top1_agreement"] == MODES["int8"].thresholds["top1_agreement"] and not user_set
    thresholds, user_set = verify.effective_thresholds("int8", {"max_size_kb": 64}, {"top1_agreement": 0.99})
    assert thresholds["top1_agreement"] == 0.99 and thresholds["max_size_kb"] == 64 and user_set


def poison_float_weights(model_bytes: bytes) -> bytes:
    """A copy of a .tflite whose float32 constant buffers (weights, biases) all hold NaN: a
    conversion broken in a known way, so its outputs are NaN on every run, not by chance."""
    from ai_edge_litert import schema_py_generated as schema

    data = bytearray(model_bytes)
    model = schema.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    poisoned = 0
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        buffer = model.Buffers(tensor.Buffer())
        if tensor.Type() == schema.TensorType.FLOAT32 and buffer.DataLength():
            buffer.DataAsNumpy().view(np.float32)[:] = np.nan  # a view into `data`
            poisoned += 1
    assert poisoned, "the model has no float32 constants to poison"
    return bytes(data)


@pytest.mark.slow
def test_a_conversion_that_outputs_nan_is_caught_by_the_default_thresholds():
    import tensorflow as tf

    from tfbuild.conversion.job import verify_model

    model = dense_classifier()
    good = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    x = features(8)
    reference = {"probs": np.asarray(model(x))}
    thresholds, user_set = verify.effective_thresholds("float32")
    signature_name = verify.signature(good)["outputs"][0]["name"]
    reference = {signature_name: reference["probs"]}
    input_name = verify.signature(good)["inputs"][0]["name"]

    passed = verify_model(good, {input_name: x}, None, reference, thresholds, user_set, batch=1)
    assert passed["verdict"] == "passed", passed["failures"]
    broken = verify_model(poison_float_weights(good), {input_name: x}, None, reference, thresholds,
                          user_set, batch=1)
    assert broken["verdict"] == "rejected"
    assert broken["failures"] == ["outputs are not finite (NaN or Inf): the conversion is broken"]


@pytest.mark.slow
def test_failed_threshold_keeps_last_good_output_and_the_rejected_file(project):
    write_dense_project(project, targets="int8: {quantize: int8, io: int8}")
    first = project.run()
    assert first.code == 0, first.text
    good = project.path("build/clf/int8/model.tflite").read_bytes()
    report = json.loads(project.path("build/clf/int8/report.json").read_text())
    assert report["latency_ms"] > 0 and report["metrics"]["outputs"]["probs"]["cosine"] > 0.9

    strict = ["targets.int8.accept.max_abs_error=0.000001", "targets.int8.accept.max_size_kb=0.5"]
    failed = project.run(*strict)
    assert failed.code == 1, failed.text
    assert "rejected clf:int8" in failed.out
    assert "max_abs_error" in failed.out and "> 1e-06" in failed.out and "size_kb" in failed.out and "> 0.5" in failed.out
    assert project.path("build/clf/int8/model.tflite").read_bytes() == good
    kept = project.path(".tfbuild/rejected/clf/int8/model.tflite")
    assert kept.is_file() and kept.read_bytes() != b""

    again = project.run(*strict)  # same inputs: reported again, not reconverted, not up to date
    assert again.code == 1 and "rejected clf:int8" in again.out and "rejected with these inputs" in again.out
    assert "log:" not in again.out and "(0." not in again.out.split("rejected clf:int8")[1].splitlines()[0]
    assert project.run("status", *strict).code == 1
    back = project.run()  # the inputs of the good build on disk: up to date, nothing reconverted
    assert back.code == 0 and "up to date" in back.out, back.text


def test_labels_one_hot_and_missing_labels():
    from tfbuild.data import conform_labels
    from tfbuild.errors import UserError

    one_hot = np.eye(3)[[2, 0, 1]]
    scores = np.eye(3, dtype=np.float32)[[2, 0, 0]]
    labels = conform_labels(one_hot, 3, file="f", key="k")
    assert verify.label_indices(scores, labels).tolist() == [2, 0, 1]
    assert verify.compare({"p": scores}, {"p": scores}, labels)["accuracy"]["tflite"] == pytest.approx(2 / 3)
    with pytest.raises(UserError, match="2 labels for 3 samples"):
        conform_labels(np.array([1, 2]), 3, file="f", key="k")
    metrics = verify.compare({"p": np.eye(3, dtype=np.float32)}, {"p": np.eye(3, dtype=np.float32)}, None)
    assert verify.judge(metrics, {"min_accuracy": 0.9}, 1.0, None) == [
        "cannot check min_accuracy: the evaluation data has no `labels` array, or the model has no classifier output"]


@pytest.mark.slow
def test_user_thresholds_pass_and_latency_is_a_threshold(project):
    write_dense_project(project, targets="fp32: {accept: {top1_agreement: 1.0, max_abs_error: 0.001, min_snr_db: 40}}")
    passed = project.run()
    assert passed.code == 0 and "built clf:fp32" in passed.out, passed.text
    report = json.loads(project.path("build/clf/fp32/report.json").read_text())
    assert report["thresholds"]["max_abs_error"] == 0.001 and report["verdict"] == "passed"
    too_fast = ["targets.fp32.accept.max_latency_ms=0.000001", "targets.fp32.accept.latency_runs=5"]
    slow = project.run(*too_fast)
    assert slow.code == 1 and "latency_ms" in slow.out and "> 1e-06" in slow.out, slow.text
    again = project.run("-n", *too_fast)  # timing is noise-prone: measured again, not sticky
    assert "would convert clf:fp32: rejected only for latency, which is measured again" in again.out, again.out


@pytest.mark.slow
def test_int8_io_is_quantized_with_the_tensors_own_parameters(project):
    """tfbuild's float view of an int8 model equals a hand computation with the file's own scale/zero point."""
    from ai_edge_litert.interpreter import Interpreter

    write_dense_project(project, targets="int8: {quantize: int8, io: int8}")
    assert project.run().code == 0
    model_bytes = project.path("build/clf/int8/model.tflite").read_bytes()
    runner = Interpreter(model_content=model_bytes).get_signature_runner()
    (in_scale, in_zero) = runner.get_input_details()["features"]["quantization"]
    (out_scale, out_zero) = runner.get_output_details()["probs"]["quantization"]
    x = features(1, seed=11)
    scaled = x / in_scale
    q = np.clip(np.sign(scaled) * np.floor(np.abs(scaled) + 0.5) + in_zero, -128, 127).astype(np.int8)
    by_hand = (runner(features=q)["probs"].astype(np.float32) - out_zero) * out_scale
    floats, raw_in, _ = verify.run(model_bytes, verify.signature(model_bytes), {"features": x}, batch=1)
    np.testing.assert_array_equal(raw_in["features"], q)
    np.testing.assert_allclose(floats["probs"], by_hand, rtol=0, atol=1e-7)


def test_per_frame_scores_get_top1_and_accuracy_per_frame():
    """[batch, frames, classes] softmax outputs: a flipped frame label is a disagreement even where
    the cosine stays high, and labels of shape [batch, frames] give accuracy per frame."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 10, 5))
    reference = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    candidate = reference.copy()
    candidate[:, :3] = candidate[:, :3, ::-1]  # three frames of every sample reordered
    kinds = verify.output_kinds({"frames": reference}, {}, None)
    assert kinds == {"frames": "scores"}
    truth = reference.argmax(-1)
    metrics = verify.compare({"frames": reference}, {"frames": candidate}, truth, kinds)
    frames = metrics["outputs"]["frames"]
    changed = np.mean(candidate.argmax(-1) != truth)
    assert frames["positions"] == 10 and frames["top1_agreement"] == pytest.approx(1 - changed)
    assert metrics["accuracy"] == {"output": "frames", "source": 1.0, "tflite": pytest.approx(1 - changed),
                                   "positions": 10}
    failures = verify.judge(metrics, {"top1_agreement": 0.9}, 1.0, None)
    assert failures and failures[0].startswith("top1_agreement per frame 0.")
    one_hot = np.eye(5)[truth]  # [batch, frames, classes] labels: the same answer
    assert verify.compare({"frames": reference}, {"frames": candidate}, one_hot, kinds)["accuracy"]["tflite"] == \
        pytest.approx(1 - changed)
