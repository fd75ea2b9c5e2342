"""Make-like costs, each measured as a ratio within one run:

(a) a no-op build of a project with 50 targets against `python -c "import tensorflow"`
    (aim: <= 0.25 s and <= 0.1x);
(b) 5 quantization targets of one model in one build against 5 separate plain converter
    scripts (aim: <= 0.4x);
(c) -j2 against -j1 on 4 independent small models on 2 cores (aim: <= 0.7x).

Usage: python bench/bench_incremental.py [a|b|c ...]
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from common import PYTHON, copy_examples, measure, median_seconds, row, tfbuild

FIVE_TARGETS = """\
  fp32: {}
  fp16: {quantize: float16}
  dynamic: {quantize: dynamic}
  int8: {quantize: int8, io: int8}
  int16x8: {quantize: int16x8}
"""

PLAIN_TARGET = """
import sys, numpy as np, tensorflow as tf, keras
mode = sys.argv[1]
model = keras.saving.load_model("examples/digits/digits.keras", compile=False)
converter = tf.lite.TFLiteConverter.from_keras_model(model)
calibration = np.load("examples/digits/calibration.npz")["image"]
def representative():
    for i in range(len(calibration)):
        yield [calibration[i:i + 1]]
if mode != "fp32":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
if mode == "fp16":
    converter.target_spec.supported_types = [tf.float16]
if mode == "int8":
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
if mode == "int16x8":
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
open(f"plain_{mode}.tflite", "wb").write(converter.convert())
"""

SMALL_MODEL = """
import sys, keras
keras.utils.set_random_seed(int(sys.argv[2]))
inputs = keras.Input((16,), name="x")
h = keras.layers.Dense(64, activation="relu")(inputs)
keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="y")(h)).save(sys.argv[1])
"""


def digits_recipe(targets: str) -> str:
    return ("tfbuild: 1\nmodel: {source: examples/digits/digits.keras}\n"
            "data: {calibration: examples/digits/calibration.npz, evaluation: examples/digits/evaluation.npz}\n"
            f"targets:\n{targets}")


def noop_50_targets(work: Path) -> None:
    project = copy_examples(work / "noop")
    for recipe in (project / "recipes").glob("*.yaml"):
        recipe.unlink()
    for index in range(10):
        (project / "recipes" / f"digits{index}.yaml").write_text(digits_recipe(FIVE_TARGETS))
    measure(tfbuild("-C", str(project), "-j2"))  # the real first build
    noop = median_seconds(7, tfbuild("-C", str(project)))
    import_tf = median_seconds(3, [PYTHON, "-c", "import tensorflow"])
    print("(a) no-op build, 10 recipes x 5 targets = 50 targets (median of 7; import: median of 3)")
    print(row("tfbuild (no-op)", noop))
    print(row('python -c "import tensorflow"', import_tf))
    print(f"  no-op {noop:.3f} s (aim <= 0.25 s), ratio {noop / import_tf:.3f}x (aim <= 0.1x)")


def five_targets_one_model(work: Path) -> None:
    project = copy_examples(work / "five")
    (project / "recipes" / "digits.yaml").write_text(digits_recipe(FIVE_TARGETS))
    builds, plains = [], []
    for _ in range(3):
        shutil.rmtree(project / "build", ignore_errors=True)
        shutil.rmtree(project / ".tfbuild", ignore_errors=True)
        builds.append(measure(tfbuild("-C", str(project), "digits"))[0])
        plains.append(sum(measure([PYTHON, "-c", PLAIN_TARGET, mode], cwd=project)[0]
                          for mode in ("fp32", "fp16", "dynamic", "int8", "int16x8")))
    build, plain = statistics.median(builds), statistics.median(plains)
    print("(b) 5 quantization targets of digits (median of 3)")
    print(row("tfbuild digits (one build, converts + verifies)", build))
    print(row("5 plain converter scripts, one after another", plain))
    print(f"  ratio {build / plain:.2f}x (aim <= 0.4x)")


def parallel_four_models(work: Path) -> None:
    project = work / "parallel"
    (project / "recipes").mkdir(parents=True)
    for index in range(4):
        measure([PYTHON, "-c", SMALL_MODEL, str(project / f"m{index}.keras"), str(index)])
        (project / "recipes" / f"m{index}.yaml").write_text(
            f"tfbuild: 1\nmodel: {{source: m{index}.keras}}\n"
            "targets: {fp32: {}, fp16: {quantize: float16}, dynamic: {quantize: dynamic}}\n")
    timings = {1: [], 2: []}
    for _ in range(3):
        for jobs in (1, 2):
            timings[jobs].append(measure(tfbuild("-C", str(project), "-B", f"-j{jobs}"))[0])
    one, two = statistics.median(timings[1]), statistics.median(timings[2])
    print("(c) 4 independent small models x 3 targets, -B (median of 3)")
    print(row("tfbuild -j1", one))
    print(row("tfbuild -j2", two))
    print(f"  ratio {two / one:.2f}x (aim <= 0.7x)")


def main(parts: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix="tfbuild-bench-"))
    try:
        for part in parts or ["a", "b", "c"]:
            {"a": noop_50_targets, "b": five_targets_one_model, "c": parallel_four_models}[part](work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
