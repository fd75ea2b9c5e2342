"""Cost of `float_fallback: auto` on a 24-layer model with outlier activations in its middle,
against one plain int8 conversion of the same model, in the same build. Aim: <= 6x.

Both targets of one recipe are built together (`-B` from a fresh state and lock, so that each run
converts and searches: a rebuild would reuse the recorded set): `plain` is the
model quantized everywhere (its thresholds relaxed so that it passes), `auto` searches for the
layers to keep in float. The figures come from each target's report.json timings, measured
inside the worker: the plain conversion (calibration and quantization) against what auto adds
on top of its own conversion (per-layer errors, ranking, every quantize-and-check trial).

Usage: python bench/bench_float_fallback.py [RUNS]
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

DEPTH = 10  # Dense layers before and after the outlier layer: 2 * DEPTH + 2 layers with weights

RECIPE = """\
tfbuild: 1
model:
  source: models/deep.keras
data:
  calibration: data/deep.npz
  evaluation: data/deep.npz
targets:
  plain: {quantize: int8, accept: {top1_agreement: 0.0, min_cosine: -1.0}}
  auto: {quantize: int8, float_fallback: auto}
"""


def make_project(root: Path) -> None:
    """A deep MLP whose middle layer has one channel ~1000x the others, which the next ignores."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((32,), name="features")
    h = x
    for i in range(DEPTH):
        h = keras.layers.Dense(96, activation="relu", kernel_initializer="he_normal", name=f"before{i}")(h)
    h = keras.layers.Dense(32, name="outlier")(h)
    for i in range(DEPTH):
        h = keras.layers.Dense(96, activation="relu", kernel_initializer="he_normal", name=f"after{i}")(h)
    y = keras.layers.Dense(4, activation="softmax", name="probs")(h)
    model = keras.Model(x, y)
    for i in range(1, DEPTH):  # near-identity: the signal keeps its shape through the depth, as in
        for name in (f"before{i}", f"after{i}"):  # a trained network, not a product of random matrices
            layer = model.get_layer(name)
            noise = np.random.default_rng(i).normal(0, 0.01, (96, 96)).astype(np.float32)
            layer.set_weights([np.eye(96, dtype=np.float32) + noise, layer.get_weights()[1]])
    weights, bias = model.get_layer("outlier").get_weights()
    weights[:, 0] *= 2000.0
    bias[0] = 500.0
    model.get_layer("outlier").set_weights([weights, bias])
    weights, bias = model.get_layer("after0").get_weights()
    weights[0, :] = 0.0
    model.get_layer("after0").set_weights([weights, bias])
    samples = np.random.default_rng(3).random((200, 32), dtype=np.float32)
    head = model.get_layer("probs")
    hidden = np.asarray(keras.Model(x, head.input)(samples))
    # a head that reads the features' main directions, as a trained one would: its decisions do not
    # hinge on the faint channels that int8 rounds away
    centred = hidden - hidden.mean(0)
    _, spread, directions = np.linalg.svd(centred, full_matrices=False)
    weights = (directions[:4].T / spread[:4] * 4 * np.sqrt(len(samples))).astype(np.float32)
    head.set_weights([weights, -np.median(hidden @ weights, axis=0)])  # balanced classes
    (root / "models").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "recipes").mkdir()
    model.save(root / "models" / "deep.keras")
    np.savez(root / "data" / "deep.npz", features=samples, labels=np.asarray(model(samples)).argmax(1))
    (root / "recipes" / "deep.yaml").write_text(RECIPE)


def main(runs: int = 3) -> None:
    work = Path(tempfile.mkdtemp(prefix="tfbuild-bench-"))
    project = work / "fallback"
    make_project(project)
    plain_s, search_s, trials, kept = [], [], [], []
    for _ in range(runs):
        # a fresh state and lock each run: with them, a rebuild reuses the recorded set (no search)
        shutil.rmtree(project / ".tfbuild", ignore_errors=True)
        (project / "tfbuild.lock").unlink(missing_ok=True)
        measure(tfbuild("-C", str(project), "-B"))
        plain = json.loads((project / "build/deep/plain/report.json").read_text())
        auto = json.loads((project / "build/deep/auto/report.json").read_text())
        plain_s.append(plain["timings"]["convert_s"])
        search_s.append(auto["timings"]["layers_and_fallback_s"])
        trials.append(auto["float_fallback"]["trials"])
        kept.append(len(auto["float_fallback"]["layers"]))
    layers = len(auto["layer_errors"])
    plain_top1 = plain["metrics"]["outputs"]["probs"]["top1_agreement"]
    auto_top1 = auto["metrics"]["outputs"]["probs"]["top1_agreement"]
    convert, search = statistics.median(plain_s), statistics.median(search_s)
    print(f"float_fallback: auto on a {layers}-layer model (median of {runs} builds)")
    print(f"  plain int8 conversion   {convert:6.3f} s   top-1 agreement {plain_top1:.3f}")
    print(f"  auto search             {search:6.3f} s   {statistics.median(trials):.0f} trials, "
          f"{statistics.median(kept):.0f} layer(s) kept in float, top-1 agreement {auto_top1:.3f}")
    print(f"  ratio {search / convert:.2f}x one conversion (aim <= 6x)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
