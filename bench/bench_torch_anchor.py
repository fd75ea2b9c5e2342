"""The anchor for PyTorch sources (issue 27): the plain litert-torch + ai-edge-quantizer script a
user would write, timed as whole processes per target on the torch digits example, so that
tfbuild's single-target build can be set beside it (aim: <= 1.15x time).

Each target is one fresh process, as a one-target build is: imports (torch, litert-torch, jax)
and the float conversion are paid every time; quantized targets convert the float file first
and then quantize it, as tfbuild does. With COMPARE = True (recipes/torch_digits.yaml), each
run also times `tfbuild torch_digits:<target>` in the same interleaved runs.

Usage: python bench/bench_torch_anchor.py [RUNS]
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from common import PYTHON, REPO, copy_examples, measure, row, tfbuild

TARGETS = {"fp32": "float32", "fp16": "float16", "dynamic": "dynamic", "int8": "int8"}
COMPARE = True  # recipes/torch_digits.yaml exists: time tfbuild beside the plain script

PLAIN = """
import sys
import numpy as np, torch, litert_torch
sys.path.insert(0, {repo!r})
from examples.torch_digits.model import load

mode = {mode!r}
model = litert_torch.to_channel_last_io(load(), args=[0]).eval()
sample = (torch.zeros(1, 8, 8, 1),)
litert_torch.convert(model, sample).export("float.tflite")
if mode != "float32":
    from ai_edge_quantizer import quantizer, recipe
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    q = quantizer.Quantizer("float.tflite")
    if mode == "float16":
        q.add_weight_only_config(".*", "*", 16, algorithm_key=AlgorithmName.FLOAT_CASTING)
    else:
        q.load_quantization_recipe({{"dynamic": recipe.dynamic_wi8_afp32, "int8": recipe.static_wi8_ai8}}[mode]())
    calibration = None
    if q.need_calibration:
        images = np.load({calibration!r})["image"][:200].astype("float32")
        calibration = q.calibrate({{"serving_default": [{{"args_0": images[i:i + 1]}} for i in range(len(images))]}})
    q.quantize(calibration, enable_progress_report=False).export_model("model.tflite", overwrite=True)
"""


def plain_command(mode: str) -> list[str]:
    script = PLAIN.format(repo=str(REPO), mode=mode, calibration=str(REPO / "examples/torch_digits/calibration.npz"))
    return [PYTHON, "-c", script]


def tfbuild_command(project: Path, target: str) -> list[str]:
    """The hook: a one-target build of the same example (no loaders), once it has a recipe."""
    return tfbuild("-C", str(project), f"torch_digits:{target}", "~mobile")


def main(runs: int = 3) -> None:
    work = Path(tempfile.mkdtemp(prefix="tfbuild-bench-torch-"))
    project = copy_examples(work / "project") if COMPARE else None
    print(f"torch digits, one target per process: median wall time of {runs} runs")
    for target, mode in TARGETS.items():
        times: dict[str, list[float]] = {"plain": [], "tfbuild": []}
        for _ in range(runs):  # interleaved, so that drift in the machine's speed hits both
            times["plain"].append(measure(plain_command(mode), cwd=work)[0])
            if COMPARE:
                shutil.rmtree(project / "build", ignore_errors=True)
                shutil.rmtree(project / ".tfbuild", ignore_errors=True)
                times["tfbuild"].append(measure(tfbuild_command(project, target), cwd=project)[0])
        plain = statistics.median(times["plain"])
        print(row(f"plain litert-torch + ai-edge-quantizer {target}", plain))
        if COMPARE:
            built = statistics.median(times["tfbuild"])
            print(row(f"tfbuild torch_digits:{target}", built) + f"  ratio {built / plain:.2f}x (aim <= 1.15x)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
