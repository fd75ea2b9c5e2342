"""The warm worker pool, measured within one run:

a clean build of 20 single-target recipes (copies of the digits recipe, fp32) at -j2, against
one Python process that imports TensorFlow once and converts the same 20 models in a loop
(aim: <= 1.5x time, peak memory of the build's process tree <= 2x one worker's).

Usage: python bench/bench_pool.py [runs]
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from common import PYTHON, REPO, measure, row, tfbuild

RECIPES = 20

LOOP = """
import sys, tensorflow as tf, keras
for i in range(int(sys.argv[1])):
    model = keras.saving.load_model(f"models/m{i}.keras", compile=False)
    open(f"plain_{i}.tflite", "wb").write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
"""


def project(root: Path) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    (root / "recipes").mkdir(parents=True)
    (root / "models").mkdir()
    for i in range(RECIPES):
        shutil.copy(REPO / "examples/digits/digits.keras", root / f"models/m{i}.keras")
        (root / "recipes" / f"m{i}.yaml").write_text(
            f"tfbuild: 1\nmodel: {{source: models/m{i}.keras}}\ntargets: {{fp32: {{}}}}\n")
    return root


def main(runs: int) -> None:
    build, loop = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "loop.py").write_text(LOOP)
        for _ in range(runs):
            build.append(measure(tfbuild("-C", str(project(work / "p")), "-j2"))[0])
            loop.append(measure([PYTHON, str(work / "loop.py"), str(RECIPES)], cwd=project(work / "l"))[0])
        _, build_mib = measure(tfbuild("-C", str(project(work / "p")), "-j2"), sample_memory=True)
        _, one_mib = measure(tfbuild("-C", str(project(work / "p")), "-j1", "m0"), sample_memory=True)
    b, l = statistics.median(build), statistics.median(loop)
    print(f"{RECIPES} single-target recipes, median of {runs} run(s):")
    print(row("tfbuild -j2 (warm pool)", b, build_mib))
    print(row("one process converting in a loop", l))
    print(row("tfbuild -j1, one recipe (one worker)", 0, one_mib))
    print(f"  time: {b / l:.2f}x the loop (aim <= 1.5x); memory: {build_mib / one_mib:.2f}x one worker (aim <= 2x)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
