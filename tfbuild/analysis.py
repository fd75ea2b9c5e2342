"""Per-layer quantization figures on request, for integer targets that passed without them.

Measuring every layer of an integer model (layer_error.py) runs both the float and the integer
model with every tensor kept: on long activations that is most of a conversion again, and a
target that passes does not need it. So a build measures them only when its float-fallback
search or a failure needs them, and keeps what a later measurement needs under
`.tfbuild/analysis/<recipe>/<target>/` (never shipped, never pushed): the calibrated float model
and, when the shipped file keeps layers in float, the fully quantized one. `tfbuild explain` and
`tfbuild report` measure from those and the recipe's evaluation data, with LiteRT only (no
TensorFlow), and cache the result under the target's key: asking twice is instant.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tfbuild.conversion import modes

CALIBRATED = "calibrated.tflite"
FULLY_QUANTIZED = "fully-quantized.tflite"
ROWS = "layer_errors.json"
KEY = "key"


def folder(project, target_id: str) -> Path:
    recipe, _, target = target_id.partition(":")
    return project.state_dir / "analysis" / recipe / target


def keep(project, plan, stage: Path, names: list[str]) -> None:
    """Move a build's analysis inputs out of its staging folder, under the target's key."""
    if not names:
        return
    kept = project.private_dir("analysis", plan.loaded.name, plan.name, empty=True)
    for name in names:
        shutil.move(stage / name, kept / name)
    (kept / KEY).write_text(plan.key)


def rows(project, plan, report: dict) -> list[dict] | None:
    """The report's per-layer figures, else those measured for this key before, else measured
    now; None when they cannot be (not an integer target, or its analysis inputs are gone:
    a target pulled from a shared cache, or built by an older tfbuild)."""
    if report.get("layer_errors") is not None:
        return report["layer_errors"]
    if not modes.calibrates(report.get("quantize")):
        return None
    where = folder(project, plan.id)
    if _read(where / KEY) != plan.key or not (where / CALIBRATED).is_file():
        return None
    cached = _cached(where / ROWS)
    if cached is not None:
        return cached
    measured = _measure(project, plan, report, where)
    (where / ROWS).write_text(json.dumps(measured))
    return measured


def missing(report: dict) -> str | None:
    """What `explain` says of an integer target whose per-layer figures cannot be measured."""
    if not modes.calibrates(report.get("quantize")) or report.get("layer_errors") is not None:
        return None
    target = f"{report.get('recipe')}:{report.get('target')}"
    return (f"per-layer errors: not measured (the target passed) and their inputs are not kept here "
            f"(pulled from a cache, or built by an older tfbuild): `tfbuild -B {target}` keeps them")


def _measure(project, plan, report: dict, where: Path) -> list[dict]:
    from tfbuild import data, verify
    from tfbuild.fallback import layer_rows

    float_bytes = (where / CALIBRATED).read_bytes()
    full = where / FULLY_QUANTIZED
    full_bytes = full.read_bytes() if full.is_file() else (plan.out_dir / report["model_file"]).read_bytes()
    specs = [(t["name"], [None if d < 0 else d for d in t["shape_signature"]], t["dtype"])
             for t in verify.signature(float_bytes)["inputs"]]
    batch = (specs[0][1][0] if specs and specs[0][1] else None) or 1
    inputs, _, _ = data.evaluation_set(plan.loaded.recipe, project.root, plan.loaded.file, specs, batch)
    kept = (report.get("float_fallback") or {}).get("layers") or []
    return layer_rows(float_bytes, full_bytes, inputs, batch, kept)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _cached(path: Path) -> list[dict] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, list) and all(isinstance(row, dict) for row in value) else None
