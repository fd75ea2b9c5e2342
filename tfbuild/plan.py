"""What each target depends on, its key, and why it is (or is not) out of date.

A target has two keys: the conversion key (everything that can change the .tflite and its
report) and the loader key (the conversion key plus templates, mobile settings and labels).
A template edit then re-renders Kotlin/Swift without reconverting, and without TensorFlow.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tfbuild import RECIPE_SCHEMA_VERSION, __version__
from tfbuild.conversion import modes, sources
from tfbuild.conversion.kind import Kind
from tfbuild.errors import UserError
from tfbuild.fingerprint import sha256_json
from tfbuild.project import LoadedRecipe, Project
from tfbuild.registry import check_attribute, source_files

REPORT_FILE = "report.json"
GOLDEN_FILE = "golden.json"


def tool_versions(kind: Kind | None = None) -> dict[str, str]:
    """The versions a source kind's targets depend on (every kind's, without one): tfbuild's,
    the recipe schema's, and the kind's tools' (read from package metadata: no import)."""
    tools = sources.tool_versions(kind.tools if kind is not None else None)
    return {"tfbuild": __version__, "recipe-schema": str(RECIPE_SCHEMA_VERSION), **tools}


@dataclass
class TargetPlan:
    loaded: LoadedRecipe
    name: str
    out_dir: Path
    key: str
    inputs: dict[str, str | None]  # "file:<path>" / "version:<dist>" / "config" -> digest or value
    config: dict[str, object]  # flattened resolved recipe keys this target depends on
    loader_key: str | None
    loader_inputs: dict[str, str | None]
    action: str = "none"  # none | convert | render | rejected
    reasons: list[str] = field(default_factory=list)
    input_paths: dict[str, Path] = field(default_factory=dict)  # "file:<path>" -> the path as the recipe says it

    @property
    def id(self) -> str:
        return f"{self.loaded.name}:{self.name}"

    @property
    def target(self):
        return self.loaded.recipe.targets[self.name]

    def read_output(self, name: str) -> dict | None:
        """A JSON output of this target (report.json, golden.json), or None if absent or unreadable."""
        try:
            return json.loads((self.out_dir / name).read_text())
        except (OSError, ValueError):
            return None


def flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict) and value:
        out: dict[str, object] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _input_path(project: Project, loaded: LoadedRecipe, spec: str, key: str, *,
                allow_dir: bool = False) -> Path:
    path = project.root / spec
    try:
        found, is_file = path.exists(), path.is_file()
    except OSError as err:  # a folder on the way that cannot be searched, a loop of links
        raise UserError(f"cannot use {spec}: {err.strerror}", file=loaded.file, key=key) from None
    if not found:
        raise UserError(f"file not found: {spec}", file=loaded.file, key=key,
                        expected="a path relative to the project root")
    if not allow_dir and not is_file:
        raise UserError(f"not a file: {spec}", file=loaded.file, key=key, expected="a file")
    if not os.access(path, os.R_OK):
        raise UserError(f"cannot read {spec}: permission denied", file=loaded.file, key=key)
    return path


def _py_source_files(project: Project, loaded: LoadedRecipe, spec: str, key: str) -> list[Path]:
    spec = spec.removeprefix("py:")
    files = source_files(spec, [project.root], file=loaded.file, key=key)
    check_attribute(spec, [project.root], file=loaded.file, key=key)
    return files


def conversion_inputs(project: Project, loaded: LoadedRecipe) -> dict[str, Path]:
    """Every file the conversion of any target of this recipe reads, by display name."""
    recipe = loaded.recipe
    files: list[Path] = []
    if sources.kind_of(recipe.model, project.root, file=loaded.file).python:
        files += _py_source_files(project, loaded, recipe.model.source, "model.source")
    else:
        files.append(_input_path(project, loaded, recipe.model.source, "model.source", allow_dir=True))
    for index, spec in enumerate(recipe.model.depends):
        files.append(_input_path(project, loaded, spec, f"model.depends.{index}", allow_dir=True))
    for name, spec in recipe.model.custom_objects.items():
        files += _py_source_files(project, loaded, spec, f"model.custom_objects.{name}")
    for key in ("calibration", "evaluation"):
        spec = getattr(recipe.data, key)
        if spec is None:
            continue
        if spec.startswith("py:"):
            files += _py_source_files(project, loaded, spec, f"data.{key}")
        else:
            files.append(_input_path(project, loaded, spec, f"data.{key}"))
    if recipe.mobile is not None and recipe.mobile.labels is not None:
        # The label count tells verification which output holds class scores (top-1, accuracy).
        files.append(_input_path(project, loaded, recipe.mobile.labels, "mobile.labels"))
    return {project.rel(p): p for p in files}


def external_versions(loaded: LoadedRecipe, project: Project) -> dict[str, str]:
    """Versions of installed packages that provide custom objects or py: sources from outside
    the project: upgrading them can change the model as much as editing a file would."""
    from tfbuild.registry import distribution_version

    specs = list(loaded.recipe.model.custom_objects.values())
    specs += [s for s in (loaded.recipe.model.source, loaded.recipe.data.calibration,
                          loaded.recipe.data.evaluation) if s and s.startswith("py:")]
    found = {}
    for spec in specs:
        top = spec.removeprefix("py:").split(":", 1)[0].split(".", 1)[0]
        if (project.root / top).exists() or (project.root / f"{top}.py").exists():
            continue
        dist = distribution_version(spec)
        if dist is not None:
            found[f"version:{dist[0]}"] = dist[1]
    return found


def _check_output_dir(project: Project, loaded: LoadedRecipe, out_root: Path, inputs: dict[str, Path]) -> None:
    """Outputs get deleted and replaced: their folder must hold nothing the build reads."""
    resolved = out_root.resolve()
    if resolved == project.root or resolved in project.recipes_dir.resolve().parents or \
            resolved == project.recipes_dir.resolve():
        raise UserError("output_dir would hold the project's own files", file=loaded.file,
                        key="output_dir", expected="a folder of its own, e.g. build/<recipe>")
    for name, path in inputs.items():
        if resolved in path.resolve().parents:
            raise UserError(f"output_dir contains the input {name}", file=loaded.file,
                            key="output_dir", expected="a folder that holds no inputs")


def _check_needs(loaded: LoadedRecipe, target_name: str) -> None:
    target = loaded.recipe.targets[target_name]
    if modes.mode(target.quantize).calibrates and loaded.recipe.data.calibration is None:
        raise UserError(f"quantize: {target.quantize} needs calibration data", file=loaded.file,
                        key=f"targets.{target_name}.quantize",
                        expected="data.calibration: a .npz/.npy file or py:module:function")
    mobile = loaded.recipe.mobile
    if target.io == "int8" and mobile is not None and mobile.ios is not None \
            and mobile.ios.api == "interpreter":
        raise UserError("the iOS interpreter loader cannot read int8 outputs: TensorFlowLiteSwift's "
                        "Tensor.DataType has no int8 case, so every prediction would throw",
                        file=loaded.file, key=f"targets.{target_name}.io",
                        expected="io: uint8 (or float32) for a target with an iOS interpreter loader",
                        hint="or set mobile.ios.api: compiled_model (LiteRT reads int8)")


def _metadata_inputs(project: Project, loaded: LoadedRecipe, target: str) -> tuple[dict, dict[str, str | None], dict]:
    """What a target's TFLite metadata adds to its key: the recipe's `metadata` section (config;
    only for targets that have metadata, so that the others keep their keys), the labels files
    it packs into the .tflite (and their paths), and the version of the extra that writes it."""
    from tfbuild import metadata

    wanted = metadata.wanted(loaded.recipe, target, loaded.file)
    if wanted is None:
        return {}, {}, {}
    config = flatten(loaded.raw["metadata"], "metadata") if loaded.raw.get("metadata") else {}
    found: dict[str, str | None] = {f"version:{metadata.EXTRA_DISTRIBUTION}": metadata.extra_version()}
    paths = {}
    for key, spec in metadata.label_files(wanted).items():
        path = _input_path(project, loaded, spec, key)
        found[f"file:{project.rel(path)}"] = project.digests.file(path)
        paths[f"file:{project.rel(path)}"] = path
    return config, found, paths


def plan_recipe(project: Project, loaded: LoadedRecipe, target_names: list[str],
                template_files: dict[str, Path]) -> list[TargetPlan]:
    digests = project.digests
    kind = sources.kind_of(loaded.recipe.model, project.root, file=loaded.file)
    inputs_by_name = conversion_inputs(project, loaded)
    out_root = loaded.output_dir(project.root)
    _check_output_dir(project, loaded, out_root, inputs_by_name)
    file_digests = {f"file:{name}": digests.path(path) for name, path in inputs_by_name.items()}
    version_inputs = {f"version:{dist}": value for dist, value in tool_versions(kind).items()}
    version_inputs.update(external_versions(loaded, project))
    version_inputs.update(kind.key_versions(project.root, loaded.recipe.model.source, digests))
    raw = loaded.raw
    mobile = raw.get("mobile")
    loader_files: dict[str, str | None] = {}
    if mobile:
        loader_files = {f"file:{label}": digests.file(p) for label, p in template_files.items()}
        if loaded.recipe.mobile is not None and loaded.recipe.mobile.labels:
            labels = _input_path(project, loaded, loaded.recipe.mobile.labels, "mobile.labels")
            loader_files[f"file:{project.rel(labels)}"] = digests.file(labels)
    plans = []
    for name in target_names:
        _check_needs(loaded, name)
        config = flatten({key: raw.get(key) for key in ("model", "data", "accept")})
        metadata_config, metadata_inputs, metadata_paths = _metadata_inputs(project, loaded, name)
        config.update(metadata_config)
        config.update(flatten(raw["targets"][name], f"targets.{name}"))
        config["output_dir"] = project.rel(out_root)
        inputs = {**file_digests, **version_inputs, **metadata_inputs, "config": sha256_json(config)}
        key = sha256_json(inputs)
        loader_inputs: dict[str, str | None] = {}
        loader_key = None
        if mobile:
            loader_inputs = {**loader_files, "mobile": sha256_json(mobile), "conversion": key}
            loader_key = sha256_json(loader_inputs)
            config.update(flatten(mobile, "mobile"))
        plans.append(TargetPlan(loaded=loaded, name=name, out_dir=out_root / name, key=key,
                                inputs=inputs, config=config, loader_key=loader_key,
                                loader_inputs=loader_inputs,
                                input_paths={**{f"file:{n}": p for n, p in inputs_by_name.items()}, **metadata_paths}))
    return plans


def diff_inputs(old: dict, new: dict) -> list[str]:
    """Human reasons for a key change, one per input that differs."""
    reasons = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after or name in ("config", "mobile", "conversion"):
            continue
        kind, _, label = name.partition(":")
        if kind == "version":
            reasons.append(f"{label} {before or 'none'} -> {after or 'none'}")
        elif before is None:
            reasons.append(f"{label} is a new input")
        elif after is None:
            reasons.append(f"{label} is no longer an input")
        else:
            reasons.append(f"{label} changed")
    return reasons


def diff_config(old: dict, new: dict) -> list[str]:
    reasons = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            reasons.append(f"{key}: {_show(old.get(key, '<unset>'))} -> {_show(new.get(key, '<unset>'))}")
    return reasons


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)
