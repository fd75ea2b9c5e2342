"""One-target build (digits:fp32: conversion + LiteRT verification) against the plain TensorFlow
script doing the same conversion, in the same run. Aim: <= 1.15x time, <= 1.2x memory.

Usage: python bench/bench_one_target.py [RUNS]
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from common import PYTHON, copy_examples, measure, row, tfbuild

PLAIN = """
import tensorflow as tf, keras
model = keras.saving.load_model("examples/digits/digits.keras", compile=False)
converter = tf.lite.TFLiteConverter.from_keras_model(model)
open("plain.tflite", "wb").write(converter.convert())
"""


def main(runs: int = 5) -> None:
    work = Path(tempfile.mkdtemp(prefix="tfbuild-bench-"))
    project = copy_examples(work / "project")
    build_cmd = tfbuild("-C", str(project), "digits:fp32", "~mobile")
    plain_cmd = [PYTHON, "-c", PLAIN]
    results = {"build": [], "plain": []}
    memory = {"build": 0.0, "plain": 0.0}
    for index in range(runs + 1):  # interleaved; the last pair samples memory instead of timing
        sample = index == runs
        shutil.rmtree(project / "build", ignore_errors=True)
        shutil.rmtree(project / ".tfbuild", ignore_errors=True)
        for name, command in (("build", build_cmd), ("plain", plain_cmd)):
            seconds, mib = measure(command, cwd=project, sample_memory=sample)
            if sample:
                memory[name] = mib
            else:
                results[name].append(seconds)
    build_t, plain_t = statistics.median(results["build"]), statistics.median(results["plain"])
    print(f"one target (digits:fp32): median wall time of {runs} runs; peak PSS of the process tree")
    print(row("tfbuild digits:fp32 (convert + verify)", build_t, memory["build"]))
    print(row("plain TFLiteConverter script", plain_t, memory["plain"]))
    print(f"  ratio: time {build_t / plain_t:.2f}x (aim <= 1.15x), "
          f"memory {memory['build'] / memory['plain']:.2f}x (aim <= 1.2x)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
