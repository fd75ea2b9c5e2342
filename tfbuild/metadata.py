"""TFLite metadata: what a target's .tflite says about itself.

MediaPipe Tasks, the TFLite Task Library and Android Studio's ML Model Binding do an app's pre-
and post-processing from the model's embedded metadata: its name, version, author and license,
how to turn pixels into an image input (normalization), and the labels of a classifier's
output, packed inside the file. This module decides what a target's metadata says:

- `wanted` (planning and worker): the recipe's `metadata` with the target's over it, field by
  field, remembering which recipe key set each field so that errors point at it;
- `prepare` (worker, before anything is converted): checked against the model's real shapes and
  the source model's outputs (channels, label counts, probabilities), labels files read;
- `embed` (worker, in staging, before verification): described for the converted file's own
  tensors and written into it (`tflite_metadata`), then read back and compared, so the file that
  is verified is the file that ships, and it says what the recipe asked for.

Nothing here imports the optional extra (`tfbuild[metadata]`, mediapipe's generated schema):
planning only asks whether it is installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tfbuild import __version__
from tfbuild.errors import UserError
from tfbuild.recipe import Recipe

EXTRA = "tfbuild[metadata]"
EXTRA_DISTRIBUTION = "mediapipe"  # ships the object API generated from metadata_schema.fbs
GENERAL = ("name", "description", "version", "author", "license")
PIXELS = (0.0, 255.0)  # what MediaPipe and the Task Library feed an image input before normalizing
IMAGE_ONLY = ("color_space", "normalization")
MEDIAPIPE_IMAGE_DTYPES = ("uint8", "float32")


def extra_installed() -> bool:
    """Whether the extra is installed, found without importing it (mediapipe imports TensorFlow)."""
    return importlib.util.find_spec(EXTRA_DISTRIBUTION) is not None


def extra_version() -> str:
    """The version of the distribution that writes the metadata: part of a target's key."""
    try:
        return version(EXTRA_DISTRIBUTION)
    except PackageNotFoundError:
        return "missing"


# ---------------------------------------------------------------- what the recipe asks for

@dataclass(frozen=True)
class Wanted:
    """A target's metadata settings: the recipe's `metadata`, the target's over it field by field,
    and the recipe key each field (or tensor entry) came from, for errors that point at it."""
    general: dict[str, str]
    inputs: dict[str, dict]
    outputs: dict[str, dict]
    where: dict[str, str]
    default_labels: str | None  # mobile.labels: for scores outputs that name no labels

    def key(self, path: str) -> str:
        """The recipe key that set `path` (`inputs.image.normalization`), or the closest entry."""
        while path and path not in self.where:
            path = path.rpartition(".")[0]
        return self.where.get(path, self.where[""])


def wanted(recipe: Recipe, target: str, file: str) -> Wanted | None:
    """The target's metadata settings, or None when it has none (no `metadata` in the recipe, or
    `metadata: false` on the target)."""
    own = recipe.targets[target].metadata
    if own is False or (own is None and recipe.metadata is None):
        return None
    general: dict = {}
    tensors: dict[str, dict] = {"inputs": {}, "outputs": {}}
    where: dict[str, str] = {}
    for section, prefix in ((recipe.metadata, "metadata"), (own, f"targets.{target}.metadata")):
        if section is None:
            continue
        where[""] = prefix
        for key in GENERAL:
            if getattr(section, key) is not None:
                general[key], where[key] = getattr(section, key), f"{prefix}.{key}"
        for group, merged in tensors.items():
            for name, spec in getattr(section, group).items():
                where[f"{group}.{name}"] = f"{prefix}.{group}.{name}"
                fields = merged.setdefault(name, {})
                for key, value in spec:
                    if value is not None:
                        fields[key], where[f"{group}.{name}.{key}"] = value, f"{prefix}.{group}.{name}.{key}"
    result = Wanted(general, tensors["inputs"], tensors["outputs"], where,
                    recipe.mobile.labels if recipe.mobile else None)
    _check_image_fields(result, file)
    return result


def _check_image_fields(wanted_: Wanted, file: str) -> None:
    for name, fields in wanted_.inputs.items():
        if fields.get("content") == "image":
            continue
        for key in IMAGE_ONLY:
            if key in fields:
                raise UserError(f"{key} applies to image inputs, and input {name!r} is not one",
                                file=file, key=wanted_.key(f"inputs.{name}.{key}"),
                                expected=f"content: image on input {name!r} (a [1, height, width, "
                                         f"channels] picture), or no {key}")


def label_files(wanted_: Wanted) -> dict[str, str]:
    """Every labels file the target's metadata may pack, by the recipe key that names it."""
    found = {wanted_.key(f"outputs.{name}.labels"): fields["labels"]
             for name, fields in wanted_.outputs.items() if isinstance(fields.get("labels"), str)}
    if wanted_.default_labels:
        found["mobile.labels"] = wanted_.default_labels
    return found


# ---------------------------------------------------------------- checked against the model

@dataclass
class Prepared:
    """A target's metadata checked against the model before converting: tensor descriptions by
    name (their order, dtypes and ranges come from the converted file), the files to pack."""
    recipe: str
    target: str
    quantize: str
    io: str
    general: dict[str, str]
    inputs: dict[str, dict]
    outputs: dict[str, dict]
    scores: dict[str, str] = field(default_factory=dict)  # output -> probability | logit
    files: dict[str, bytes] = field(default_factory=dict)


def prepare(recipe: Recipe, recipe_name: str, target: str, specs: list, reference: dict, kinds: dict,
            root: Path, file: str) -> Prepared | None:
    """`specs`: the source's (name, shape, dtype) inputs; `reference`: the source model's outputs
    on the evaluation data, by name; `kinds`: scores | values per output."""
    wanted_ = wanted(recipe, target, file)
    if wanted_ is None:
        return None
    settings = recipe.targets[target]
    prepared = Prepared(recipe_name, target, settings.quantize, settings.io, dict(wanted_.general), {}, {})
    shapes = {name: shape for name, shape, _ in specs}
    _known(wanted_, "inputs", list(shapes), file)
    _known(wanted_, "outputs", list(reference), file)
    for name, shape in shapes.items():
        prepared.inputs[name] = _input(name, wanted_.inputs.get(name, {}), shape, wanted_, file)
    for name, values in reference.items():
        tensor, score = _output(name, wanted_.outputs.get(name, {}), values, kinds.get(name), wanted_,
                                prepared.files, (root, file))
        prepared.outputs[name] = tensor
        if score:
            prepared.scores[name] = score
    return prepared


def _known(wanted_: Wanted, group: str, names: list[str], file: str) -> None:
    for name in getattr(wanted_, group):
        if name not in names:
            raise UserError(f"the model has no {group[:-1]} {name!r}", file=file,
                            key=wanted_.key(f"{group}.{name}"), expected=f"one of: {', '.join(names)}")


def _input(name: str, fields: dict, shape: list, wanted_: Wanted, file: str) -> dict:
    tensor = {"name": name, "description": fields.get("description"), "content": fields.get("content", "feature"),
              "color_space": None, "normalization": None, "range": fields.get("range"), "labels": None}
    if tensor["content"] != "image":
        return tensor
    channels = _image_channels(name, shape, wanted_, file)
    space = fields.get("color_space") or ("grayscale" if channels == 1 else "rgb")
    if channels not in ((1,) if space == "grayscale" else (3, 4)):
        raise UserError(f"color_space: {space} does not fit input {name!r}, which has {channels} channel(s)",
                        file=file, key=wanted_.key(f"inputs.{name}.color_space"),
                        expected="rgb for 3 or 4 channels (RGBA), grayscale for 1")
    tensor["color_space"] = space
    normalization = fields.get("normalization")
    if normalization is not None:
        for label in ("mean", "std"):
            count = len(getattr(normalization, label))
            if count not in (1, channels):
                raise UserError(f"normalization.{label} has {count} values, but input {name!r} has "
                                f"{channels} channel(s)", file=file,
                                key=wanted_.key(f"inputs.{name}.normalization"),
                                expected=f"1 value (for every channel) or {channels}, one per channel")
        tensor["normalization"] = {"mean": _f32s(normalization.mean), "std": _f32s(normalization.std)}
    return tensor


def _image_channels(name: str, shape: list, wanted_: Wanted, file: str) -> int:
    """An image input is [1, height, width, channels] with fixed sizes, as image tasks read it."""
    if len(shape) != 4 or shape[0] not in (None, 1) or any(d is None for d in shape[1:]):
        shown = ", ".join("null" if d is None else str(d) for d in shape)
        raise UserError(f"content: image needs a [1, height, width, channels] input of fixed size, and "
                        f"input {name!r} has shape [{shown}]", file=file,
                        key=wanted_.key(f"inputs.{name}.content"),
                        expected=f"content: feature (the default) for input {name!r}, without normalization "
                                 "or color_space")
    return int(shape[3])


def _output(name: str, fields: dict, values, kind: str | None, wanted_: Wanted, files: dict[str, bytes],
            where: tuple[Path, str]) -> tuple[dict, str | None]:
    """The output's description (labels packed into `files`) and its score type, if it has one."""
    root, file = where
    classes = int(values.shape[-1]) if values.ndim > 1 else 1
    spec, key = fields.get("labels"), wanted_.key(f"outputs.{name}.labels")
    if spec is None and kind == "scores" and wanted_.default_labels:
        spec, key = wanted_.default_labels, "mobile.labels"
    labels = _pack_labels(spec, classes, name, files, (root, file, key)) if spec else None
    score = _score(name, fields.get("score"), values, kind == "scores" or labels is not None, wanted_, file)
    description = fields.get("description") or _scores_text(score, classes, labels)
    return ({"name": name, "description": description, "content": "feature", "color_space": None,
             "normalization": None, "range": None, "labels": labels}, score)


def _pack_labels(spec: str, classes: int, output: str, files: dict[str, bytes], where: tuple) -> dict:
    """Read a labels file, check it has one label per class, and add it to the files to pack as
    the official writers write labels: one per line, joined by newlines."""
    root, file, key = where
    from tfbuild.data import label_lines  # numpy: not on the planning path

    try:
        lines = label_lines((root / spec).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {spec}: {err}", file=file, key=key,
                        expected="UTF-8 text, one class label per line") from None
    if len(lines) != classes:
        raise UserError(f"{spec} has {len(lines)} label(s), but output {output!r} has {classes} class(es) "
                        f"(its last axis)", file=file, key=key,
                        expected=f"{classes} non-empty lines, one label per class, in class order")
    name, data = Path(spec).name, "\n".join(lines).encode("utf-8")
    if files.get(name, data) != data:
        raise UserError(f"two different labels files are named {name}: the .tflite packs files by name",
                        file=file, key=key, expected="labels files with distinct names")
    files[name] = data
    return {"file": name, "count": len(lines)}


def _score(output: str, declared: str | None, values, scores: bool, wanted_: Wanted, file: str) -> str | None:
    """probability or logit: declared (and checked against the source model's outputs), or, for
    scores outputs, read from them (all within 0..1 means probabilities)."""
    low, high = float(values.min()), float(values.max())
    in_unit = math.isfinite(low) and math.isfinite(high) and low >= -1e-6 and high <= 1 + 1e-6
    if declared == "probability" and not in_unit:
        raise UserError(f"score: probability, but output {output!r} of the source model ranges from "
                        f"{low:.4g} to {high:.4g} on the evaluation data", file=file,
                        key=wanted_.key(f"outputs.{output}.score"),
                        expected="score: logit, or an output in 0..1 (softmax or sigmoid)")
    if declared is None and scores:
        return "probability" if in_unit else "logit"
    return declared


def _scores_text(score: str | None, classes: int, labels: dict | None) -> str | None:
    if score is None:
        return None
    what = "Probabilities" if score == "probability" else "Logits (unnormalized scores)"
    return f"{what} of the {classes} classes" + (f" in {labels['file']}" if labels else "") + "."


def _f32s(values) -> list[float]:
    """Numbers as they read back from the flatbuffer's float32 vectors."""
    import numpy as np

    return [float(np.float32(v)) for v in values]


# ---------------------------------------------------------------- written into the file

def embed(model_bytes: bytes, prepared: Prepared | None) -> tuple[bytes, dict | None, list[str]]:
    """The model with its metadata, the metadata as read back from it (for the report), and
    warnings about how image tasks will feed it. Raises when what was read back differs from
    what was asked for: that is a bug, not a file to ship."""
    if prepared is None:
        return model_bytes, None, []
    from tfbuild import tflite_metadata, verify

    expected = describe(prepared, model_bytes, verify.signature(model_bytes))
    written = tflite_metadata.write(model_bytes, expected, prepared.files)
    found = tflite_metadata.read(written)
    if found != expected:
        differs = sorted(k for k in expected if found is None or found.get(k) != expected[k])
        raise tflite_metadata.MetadataError(f"the metadata read back from the file differs from what was "
                                            f"written, in: {', '.join(differs)}")
    report = {**found, "scores": prepared.scores}
    return written, report, image_task_warnings(found, verify.signature(written))


def describe(prepared: Prepared, model_bytes: bytes, signature: dict) -> dict:
    """The description to write (tflite_metadata's format): tensors in the subgraph's order, with
    ranges for their dtypes, the defaults filled in."""
    from tfbuild import tflite_metadata

    dtypes = {t["name"]: t["dtype"] for t in signature["inputs"] + signature["outputs"]}
    order_in, order_out = tflite_metadata.io_names(model_bytes)
    general = dict(prepared.general)
    general.setdefault("name", prepared.recipe)
    io = "" if prepared.io == "float32" else f", io {prepared.io}"
    general.setdefault("description", f"{prepared.recipe}:{prepared.target} ({prepared.quantize}{io}), converted "
                                      f"and verified against its source model by tfbuild {__version__}.")
    general.setdefault("version", f"{prepared.target}-{hashlib.sha256(model_bytes).hexdigest()[:12]}")
    inputs = [{**prepared.inputs[n], "range": _input_range(prepared.inputs[n], dtypes[n])} for n in order_in]
    outputs = [{**prepared.outputs[n], "range": _output_range(prepared.scores.get(n), dtypes[n])} for n in order_out]
    files = [{"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
             for name, data in sorted(prepared.files.items())]
    return {**{key: general.get(key) for key in GENERAL}, "min_parser_version": tflite_metadata.MIN_PARSER_VERSION,
            "inputs": inputs, "outputs": outputs, "associated_files": files}


def _input_range(tensor: dict, dtype: str) -> dict | None:
    """Stats as the official image writer records them: 0..255 for a uint8 input; for a float
    input, the declared range, else what pixels 0 and 255 become after the normalization."""
    if dtype == "uint8":
        return {"min": [0.0], "max": [255.0]}
    if dtype != "float32":
        return None
    if tensor["range"] is not None:
        return {"min": _f32s(tensor["range"][:1]), "max": _f32s(tensor["range"][1:])}
    norm = tensor["normalization"]
    if norm is None:
        return None
    return {bound: _f32s((pixel - m) / s for m, s in zip(norm["mean"], norm["std"]))
            for bound, pixel in zip(("min", "max"), PIXELS)}


def _output_range(score: str | None, dtype: str) -> dict | None:
    """Probabilities are 0..1 (0..255 in a uint8 output), as the classification writer records them."""
    if score != "probability" or dtype not in ("float32", "uint8"):
        return None
    return {"min": [0.0], "max": [1.0]} if dtype == "float32" else {"min": [0.0], "max": [255.0]}


def image_task_warnings(description: dict, signature: dict) -> list[str]:
    """What would keep MediaPipe's image tasks (and the Task Library) from running an input
    declared as an image the way tfbuild verified it: they read only uint8 and float32 inputs,
    need a normalization for float32, and feed a uint8 input the raw pixels, trusting that the model
    reads pixel p as the normalization says, (p - mean) / std, while the input's quantization
    decides what it reads: (p - zero_point) * scale (said when the two differ by more than 1%)."""
    warnings = []
    tensors = {t["name"]: t for t in signature["inputs"]}
    for meta in description["inputs"]:
        tensor, name = tensors.get(meta["name"]), meta["name"]
        if meta["content"] != "image" or tensor is None:
            continue
        if tensor["dtype"] not in MEDIAPIPE_IMAGE_DTYPES:
            warnings.append(f"image input {name!r} is {tensor['dtype']}: MediaPipe's image tasks read uint8 or "
                            "float32 images only (io: uint8 or float32)")
        elif tensor["dtype"] == "float32" and meta["normalization"] is None:
            warnings.append(f"image input {name!r} is float32 without a normalization in its metadata: "
                            "MediaPipe's image tasks refuse it (set metadata.inputs."
                            f"{name}.normalization)")
        elif tensor["dtype"] == "uint8" and meta["normalization"] and tensor["quantization"]:
            warnings += _raw_pixel_warning(name, meta["normalization"], tensor["quantization"])
    return warnings


def _raw_pixel_warning(name: str, norm: dict, quant: dict) -> list[str]:
    scale, zero = quant["scale"], quant["zero_point"]
    worst = max(abs((p - zero) * scale - (p - m) / s) / (abs(PIXELS[1] - m) / s or 1.0)
                for m, s in zip(norm["mean"], norm["std"]) for p in PIXELS)
    if worst <= 0.01:
        return []
    return [f"input {name!r} is uint8: image tasks (MediaPipe, the Task Library) feed it raw pixels, which "
            f"this model reads as (p - {zero}) * {scale:.6g}, while its normalization says (p - mean) / std: "
            f"up to {worst:.1%} of the range apart. Calibration data covering the full pixel range (0 and "
            "255) makes them agree"]
