"""What a passing int8 target spends besides converting and verifying, on a model with long
activations (a dilated 1-D CNN over 4,096 steps). Aim: <= 0.2x its conversion.

Per-layer quantization errors run the float and the integer model with every tensor kept; a
passing target does not need them, so the build skips them and `tfbuild explain` measures them
on request (then cached). The figures come from the target's report.json timings (inside the
worker): `convert_s` (calibration and quantization) against `layers_and_fallback_s` (everything
between converting and verifying). The on-request measurement is timed as whole `tfbuild
explain` processes: the first measures, the second reads the cache.

Usage: python bench/bench_int8_analysis.py [RUNS]
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import measure, tfbuild

STEPS = 4096
RECIPE = """\
tfbuild: 1
model: {source: models/dna.keras}
data: {calibration: data/dna.npz, evaluation: data/dna.npz, calibration_samples: 32, evaluation_samples: 32}
targets:
  int8: {quantize: int8, io: float32, accept: {min_cosine: 0.9, top1_agreement: 0.8}}
"""


def make_project(root: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((STEPS, 4), name="sequence")
    h = x
    for i, rate in enumerate((1, 2, 4, 8, 16, 32)):
        h = keras.layers.Conv1D(32, 3, dilation_rate=rate, padding="same", activation="relu", name=f"dilated{i}")(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    y = keras.layers.Dense(3, activation="softmax", name="probs")(h)
    for folder in ("models", "data", "recipes"):
        (root / folder).mkdir(parents=True)
    keras.Model(x, y).save(root / "models" / "dna.keras")
    rng = np.random.default_rng(0)
    np.savez(root / "data" / "dna.npz", sequence=rng.random((32, STEPS, 4), dtype=np.float32))
    (root / "recipes" / "dna.yaml").write_text(RECIPE)


def main(runs: int = 3) -> None:
    work = Path(tempfile.mkdtemp(prefix="tfbuild-bench-"))
    project = work / "dna"
    make_project(project)
    convert, other, verify, first, again = [], [], [], [], []
    for _ in range(runs):
        measure(tfbuild("-C", str(project), "-B"))
        report = json.loads((project / "build/dna/int8/report.json").read_text())
        assert report["verdict"] == "passed" and "layer_errors" not in report, report["failures"]
        convert.append(report["timings"]["convert_s"])
        other.append(report["timings"]["layers_and_fallback_s"])
        verify.append(report["timings"]["verify_s"])
        first.append(measure(tfbuild("-C", str(project), "explain", "dna:int8"))[0])
        again.append(measure(tfbuild("-C", str(project), "explain", "dna:int8"))[0])
    c, o = statistics.median(convert), statistics.median(other)
    print(f"int8 target of a dilated 1-D CNN over {STEPS} steps (median of {runs} builds)")
    print(f"  conversion (calibrate + quantize)   {c:7.3f} s")
    print(f"  besides converting and verifying    {o:7.3f} s   ratio {o / c:.3f}x (aim <= 0.2x)")
    print(f"  verification                        {statistics.median(verify):7.3f} s")
    print(f"  tfbuild explain, measuring layers   {statistics.median(first):7.3f} s (whole process)")
    print(f"  tfbuild explain, cached             {statistics.median(again):7.3f} s (whole process)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
