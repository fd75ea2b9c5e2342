"""Loaders generated from real builds: they parse under the real Kotlin and Swift grammars, and
the names, shapes, dtypes, scales and zero points they embed are the built .tflite's own."""

from __future__ import annotations

import numpy as np
import pytest

from models import FACTORIES
from test_codegen import assert_all_parse, kotlin_constants, swift_constants

pytestmark = pytest.mark.slow



def model_tensors(path) -> dict[str, dict]:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    tensors = {}
    for name, detail in {**runner.get_input_details(), **runner.get_output_details()}.items():
        scale, zero = detail["quantization"]
        tensors[name] = {"name": name, "dtype": np.dtype(detail["dtype"]).name,
                         "shape": [int(d) for d in detail["shape"]],
                         "shape_signature": [int(d) for d in detail["shape_signature"]],
                         "quantization": {"scale": scale, "zero_point": zero} if scale else None}
    return tensors


def generated(target_dir) -> dict[str, str]:
    return {str(p.relative_to(target_dir)): p.read_text()
            for p in target_dir.rglob("*") if p.suffix in (".kt", ".swift")}


def assert_constants_match(target_dir) -> None:
    expected = model_tensors(target_dir / "model.tflite")
    files = generated(target_dir)
    assert_all_parse(files)
    loader_kt = next(t for p, t in files.items() if p.startswith("android/src/main"))
    loader_swift = next(t for p, t in files.items() if p.startswith("ios/Sources"))
    for parsed in (kotlin_constants(loader_kt), swift_constants(loader_swift)):
        by_name = {field["name"]: field for field in parsed.values()}
        assert set(by_name) == set(expected)
        for name, field in by_name.items():
            if field["quantization"] is not None:  # written as float32 literals
                field["quantization"]["scale"] = float(np.float32(field["quantization"]["scale"]))
            assert field == expected[name], name


def test_generated_loaders_parse_and_carry_the_models_real_parameters(project):
    project.write("factories.py", FACTORIES)
    rng = np.random.default_rng(0)
    project.save_arrays("data/multi.npz", left=rng.random((16, 5), dtype=np.float32),
                        right=rng.random((16, 3), dtype=np.float32))
    project.save_arrays("data/frames.npz", frames=rng.random((8, 9, 4), dtype=np.float32))
    mobile = ("mobile:\n  android: {{package: com.example.t, class_name: {name}, api: {api}}}\n"
              "  ios: {{class_name: {name}}}\n")
    project.recipe("multi", "tfbuild: 1\nmodel: {source: 'py:factories:two_in_two_out'}\n"
                            "data: {calibration: data/multi.npz, evaluation: data/multi.npz}\n"
                            "targets: {int8: {quantize: int8, io: uint8}, fp32: {}}\n"
                   + mobile.format(name="TwoHeads", api="compiled_model"))
    project.recipe("dyn", "tfbuild: 1\nmodel: {source: 'py:factories:variable_length'}\n"
                          "data: {evaluation: data/frames.npz}\ntargets: {fp32: {}}\n"
                   + mobile.format(name="Frames", api="interpreter"))
    result = project.run("-j2")
    assert result.code == 0, result.text
    for target_dir in ("build/multi/int8", "build/multi/fp32", "build/dyn/fp32"):
        assert_constants_match(project.path(target_dir))
    assert model_tensors(project.path("build/multi/int8/model.tflite"))["classes"]["quantization"] is not None
    assert model_tensors(project.path("build/dyn/fp32/model.tflite"))["frames"]["shape_signature"] == [1, -1, 4]
