"""Glue between a built target and the code generator: context in, files written atomically.

The context comes from the target's report.json (the signature LiteRT read from the built
file) and golden.json, never from the recipe's idea of the model, so loaders cannot drift from
the .tflite they ship with, and re-rendering needs no TensorFlow.
"""

from __future__ import annotations

import os
import shutil
from functools import partial
from pathlib import Path

from tfbuild import __version__
from tfbuild.errors import UserError
from tfbuild.fingerprint import sha256_bytes
from tfbuild.plan import GOLDEN_FILE, REPORT_FILE, TargetPlan
from tfbuild.project import LoadedRecipe, Project


def override_dirs(project: Project, loaded: LoadedRecipe) -> list[Path]:
    mobile = loaded.recipe.mobile
    if mobile is None or mobile.templates is None:
        return []
    path = project.root / mobile.templates
    if not path.is_dir():
        raise UserError(f"template directory not found: {mobile.templates}", file=loaded.file,
                        key="mobile.templates", expected="a directory relative to the project root")
    return [path]


def template_files(project: Project, loaded: LoadedRecipe) -> dict[str, Path]:
    """Every file the loaders are rendered from, by a machine-independent label: the templates
    (project-relative, or tfbuild/templates/...) and tfbuild/codegen/versions.py, whose library
    versions the generated build files name, so raising one re-renders the loaders."""
    if loaded.recipe.mobile is None:
        return {}
    from tfbuild import codegen
    from tfbuild.codegen import versions

    builtin = codegen.builtin_template_dir().resolve()
    labelled = {"tfbuild/codegen/versions.py": Path(versions.__file__)}
    for path in codegen.template_files(override_dirs(project, loaded)):
        resolved = path.resolve()
        label = (f"tfbuild/templates/{resolved.relative_to(builtin).as_posix()}"
                 if builtin in resolved.parents else project.rel(resolved))
        labelled[label] = path
    return labelled


def _labels(project: Project, loaded: LoadedRecipe) -> list[str] | None:
    spec = loaded.recipe.mobile.labels
    if spec is None:
        return None
    from tfbuild.data import label_lines

    return label_lines((project.root / spec).read_text(encoding="utf-8"))


def context(project: Project, plan: TargetPlan) -> dict:
    report = plan.read_output(REPORT_FILE)
    if report is None:
        raise UserError(f"{plan.id} has no readable report.json to generate loaders from",
                        file=plan.loaded.file, hint=f"rebuild it: tfbuild -B {plan.id}")
    mobile = plan.loaded.recipe.mobile
    signature = report["signature"]
    golden = plan.read_output(GOLDEN_FILE)
    if golden is not None:
        keep = mobile.golden_samples
        golden = {"count": min(keep, golden["count"]),
                  "inputs": {k: v[:keep] for k, v in golden["inputs"].items()},
                  "outputs": {k: v[:keep] for k, v in golden["outputs"].items()}}
    return {
        "recipe": plan.loaded.name, "target": plan.name, "model_file": plan.target.output,
        "model_sha256": report["model_sha256"], "tfbuild_version": __version__,
        "signature_key": signature["signature_key"], "inputs": signature["inputs"],
        "outputs": signature["outputs"], "uses_flex": report.get("uses_flex", False),
        "labels": _labels(project, plan.loaded),
        "android": mobile.android.model_dump() if mobile.android else None,
        "ios": _ios(project, plan) if mobile.ios else None,
        "golden": golden,
        "golden_fixed": _golden_at_converted_shape(plan, signature, golden),
        "metadata": report.get("metadata"),  # the TFLite metadata read back from the built file
    }


def _ios(project: Project, plan: TargetPlan) -> dict:
    """mobile.ios, with a local LiteRT path (written relative to the project root) made
    relative to the generated package, where Package.swift's `.package(path:)` reads it."""
    ios = plan.loaded.recipe.mobile.ios.model_dump()
    litert = ios.get("litert") or {}
    if litert.get("path"):
        package = plan.out_dir / "ios"
        ios["litert"] = {**litert, "path": Path(os.path.relpath(project.root / litert["path"], package)).as_posix()}
    return ios


def _golden_at_converted_shape(plan: TargetPlan, signature: dict, golden: dict | None) -> dict | None:
    """Golden vectors a loader that cannot resize can run (LiteRT's Kotlin CompiledModel API has
    no resize): each sample of a dynamic input cut, or padded with its zero point, to the shape
    the model was converted with, and the outputs the built model gives for them (LiteRT's
    interpreter, no TensorFlow). None when every sample already has the converted shape."""
    if golden is None or not any(-1 in t["shape_signature"] for t in signature["inputs"]):
        return None
    import numpy as np

    fitted = {t["name"]: [_fit(np.asarray(s), t) for s in golden["inputs"][t["name"]]] for t in signature["inputs"]}
    if all(np.asarray(s).size == f.size for t in signature["inputs"]
           for s, f in zip(golden["inputs"][t["name"]], fitted[t["name"]])):
        return None
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(plan.out_dir / plan.target.output)).get_signature_runner(
        signature["signature_key"])
    results = [runner(**{name: samples[i] for name, samples in fitted.items()}) for i in range(golden["count"])]
    return {"count": golden["count"],
            "inputs": {name: [s.tolist() for s in samples] for name, samples in fitted.items()},
            "outputs": {t["name"]: [r[t["name"]].tolist() for r in results] for t in signature["outputs"]}}


def _fit(sample, tensor: dict):
    """One sample (without the batch axis, as golden.json keeps it) in the tensor's converted
    shape: each dimension cut to that size or padded with the zero point."""
    import numpy as np

    shape = tuple(tensor["shape"])
    data = sample.reshape((1,) + sample.shape) if sample.ndim == len(shape) - 1 else sample
    zero = (tensor.get("quantization") or {}).get("zero_point", 0) or 0
    out = np.full(shape, zero, dtype=tensor["dtype"])
    common = tuple(slice(0, min(a, b)) for a, b in zip(shape, data.shape))
    out[common] = data[common]
    return out


def render_target(project: Project, plan: TargetPlan, stage: Path) -> list[Path]:
    """Render every loader file for one target, and copy the model where a loader package needs
    it (the iOS test resources); stage each file, then rename it into place."""
    from tfbuild import codegen

    ctx = context(project, plan)
    files = codegen.render_loaders(ctx, override_dirs(project, plan.loaded))
    written = []
    for relative, text in sorted(files.items()):
        written.append(_place(plan, stage, relative,
                              partial(Path.write_text, data=text, encoding="utf-8")))
    model = plan.out_dir / plan.target.output
    for relative in codegen.model_copies(ctx):
        written.append(_place(plan, stage, relative, partial(shutil.copyfile, model)))
    return written


def _place(plan: TargetPlan, stage: Path, relative: str, write) -> Path:
    """write(staged path), then rename the staged file to its place under the target's dir.

    Staged flat, named by the digest of its relative path (any length, one name per path):
    mirroring the loaders' package folders in the stage made each fresh target create them
    twice, and creating folders was most of what rendering cost once templates were compiled."""
    destination = (plan.out_dir / relative).resolve()
    if plan.out_dir.resolve() not in destination.parents:
        raise UserError(f"generated path escapes the build directory: {relative}",
                        file=plan.loaded.file, key="mobile")
    staged = stage / sha256_bytes(relative.encode())
    stage.mkdir(parents=True, exist_ok=True)
    write(staged)
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, destination)
    return destination
