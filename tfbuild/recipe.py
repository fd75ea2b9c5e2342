"""Recipe schema (version 1), migrations, and loading through Hydra composition.

A recipe is YAML a person writes by hand and commits, so every field is documented (the JSON
Schema from `tfbuild schema` carries the descriptions to editors) and unknown keys are errors:
a typo must never silently fall back to a default.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError,
                      field_validator,
                      model_validator)

from tfbuild import RECIPE_SCHEMA_VERSION
from tfbuild.codegen.versions import VERSIONS
from tfbuild.conversion import modes
from tfbuild.conversion.modes import MODES
from tfbuild.errors import UserError

if TYPE_CHECKING:
    from tfbuild import recipe_yaml

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
DType = Literal["float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool"]
Quantize = Literal[tuple(MODES)]  # type: ignore[valid-type]  # one Literal case per registered mode
COMPOSING_PACKAGES = ("hydra", "omegaconf", "yaml", "antlr4")  # what compose() hands recipes to
MAX_PATH_BYTES = 1024  # inputs and outputs named in a recipe; the project root comes on top
MAX_PROBLEMS_SHOWN = 10  # a recipe pasted into the wrong file has hundreds; the first ones tell


def _usable_path(value: str) -> str:
    """A path the operating system accepts: a NUL or a 300-character name would otherwise fail
    in a stat deep inside planning, not here at its key."""
    if "\0" in value:
        raise ValueError("a path cannot contain a NUL character")
    if len(value.encode()) > MAX_PATH_BYTES or any(len(part.encode()) > 255 for part in re.split(r"[/\\]", value)):
        raise ValueError(f"a path of at most {MAX_PATH_BYTES} bytes, names of at most 255")
    return value


PathText = Annotated[str, AfterValidator(_usable_path)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(Strict):
    shape: list[int | None] = Field(
        description="Full shape including the batch dimension; null keeps a dimension dynamic.")
    dtype: DType = Field("float32", description="Element type of the input tensor.")


class OutputSpec(Strict):
    name: str | None = Field(None, description=(
        "Name of the output in the .tflite signature, the report and the generated loaders."))
    kind: Literal["scores", "values"] | None = Field(None, description=(
        "scores: class probabilities or logits (top-1 agreement and accuracy apply); values: "
        "regression, boxes, landmarks, embeddings (errors, cosine and SNR only). Inferred when "
        "omitted: a softmax or sigmoid last activation, rows of probabilities, or one column per "
        "label in mobile.labels mean scores; anything else is values."))

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(NAME_PATTERN, value):
            raise ValueError("letters, digits, _ . - (it becomes a tensor name and an identifier)")
        return value


OutputEntry = Annotated[str, StringConstraints(pattern=NAME_PATTERN)] | OutputSpec


class ModelSection(Strict):
    source: PathText = Field(description=(
        "Where the model comes from, relative to the project root: a .keras file, a legacy .h5 "
        "file, a SavedModel directory, a torch.export program (.pt2), or "
        "`py:package.module:function` returning a Keras model (or a torch.nn.Module, with "
        "framework: torch)."))
    framework: Literal["keras", "torch"] | None = Field(None, description=(
        "What a `py:` factory returns, known without importing it: keras (the default) or torch "
        "(a torch.nn.Module, converted with litert-torch and quantized with ai-edge-quantizer; "
        "docs/torch.md). A .pt2 source is torch whatever this says."))
    channel_last: bool | list[str] = Field(False, description=(
        "PyTorch sources only: true transposes every input and output of rank 3 or more so that "
        "the .tflite takes and gives NHWC for an NCHW model (litert-torch's to_channel_last_io; "
        "model.inputs then gives NHWC shapes), or a list of the input and output names to transpose."))
    custom_objects: dict[str, str] = Field(default_factory=dict, description=(
        "The registry: name in the saved model -> import path `package.module:Attribute`. "
        "Registered names with a package prefix (`mypkg>Swish`) are accepted as keys."))
    trust_code: bool = Field(False, description=(
        "Allow deserialization that can run arbitrary code (Lambda layers, unsafe "
        "deserialization). Only for models you produced yourself."))
    inputs: dict[str, InputSpec] | None = Field(None, description=(
        "Input signature, by input name, in call order. Required for subclassed models; "
        "otherwise it overrides the model's own shapes (pin or keep dynamic dimensions)."))
    batch_size: int | None = Field(1, ge=1, description=(
        "Pin the batch dimension (1 suits mobile and lets recurrent layers convert to builtin "
        "ops); null keeps it dynamic."))
    signature: str | None = Field(None, description=(
        "SavedModel sources only: the signature to convert (default serving_default)."))
    outputs: list[OutputEntry] | dict[str, OutputEntry] | None = Field(None, description=(
        "Names and kinds of the outputs: a list in the model's output order (`[bbox, landmarks, "
        "{name: scores, kind: scores}]`), or a mapping from the names the model gives "
        "(`{output_0: bbox}`). Each entry is a name, or {name, kind}."))
    depends: list[PathText] = Field(default_factory=list, description=(
        "More files or folders the model source reads (weights a py: factory loads, a vocabulary): "
        "hashed into every target's key, so editing them rebuilds."))

    @property
    def torch(self) -> bool:
        """A PyTorch source: a .pt2 program, or a py: factory declared framework: torch."""
        return self.framework == "torch" or self.source.endswith(".pt2")

    @model_validator(mode="after")
    def _channel_last_is_torch(self) -> "ModelSection":
        if self.channel_last and not self.torch:
            raise ValueError("channel_last applies to PyTorch sources only (a .pt2 file, or "
                             "framework: torch with a py: factory)")
        return self


class DataSection(Strict):
    calibration: PathText | None = Field(None, description=(
        "Representative inputs for integer quantization: .npz (one array per input name), "
        ".npy (single-input models) or `py:package.module:function` returning either."))
    evaluation: PathText | None = Field(None, description=(
        "Inputs (and optional `labels` array) used to check each target against the source model."))
    calibration_samples: int = Field(200, ge=1, description="How many calibration samples to use.")
    evaluation_samples: int = Field(200, ge=1, description="How many evaluation samples to check.")


class Thresholds(Strict):
    top1_agreement: float | None = Field(None, ge=0, le=1, description=(
        "Minimum share of samples whose arg-max the source model scores within one output "
        "quantization step of its own top score (classifier outputs; near-ties count as agreeing)."))
    min_accuracy: float | None = Field(None, ge=0, le=1, description=(
        "Minimum accuracy against the evaluation labels."))
    max_accuracy_drop: float | None = Field(None, ge=0, le=1, description=(
        "Largest allowed drop from the source model's accuracy, e.g. 0.01 for one point."))
    max_abs_error: float | None = Field(None, ge=0, description="Largest absolute error, any output element.")
    mean_abs_error: float | None = Field(None, ge=0, description="Largest mean absolute error of an output.")
    min_cosine: float | None = Field(None, ge=-1, le=1, description="Minimum cosine similarity per output.")
    min_snr_db: float | None = Field(None, description="Minimum signal-to-noise ratio per output, dB.")
    max_size_kb: float | None = Field(None, gt=0, description="Largest .tflite file size in KiB.")
    max_latency_ms: float | None = Field(None, gt=0, description="Largest median latency in the LiteRT interpreter.")
    max_float_ops: int | None = Field(None, ge=0, description=(
        "Integer targets: most ops allowed to compute in float (0 = integer-only, for int8-only "
        "NPUs, DSPs, Edge TPUs and microcontrollers). Layers kept by float_fallback count too."))
    latency_runs: int = Field(20, ge=1, description="Runs over which the median latency is taken.")
    latency_threads: int = Field(1, ge=1, description="Interpreter threads for the latency measurement.")
    waive: str | None = Field(None, description=(
        "Reason for accepting a target that cannot be verified here (Flex ops). Required to "
        "pass such a target when thresholds are set."))


class Normalization(Strict):
    mean: list[float] = Field(min_length=1, description=(
        "Per-channel mean (or one value for every channel) subtracted from each pixel (0..255)."))
    std: list[float] = Field(min_length=1, description=(
        "Per-channel standard deviation (or one value) each pixel is divided by after the mean: "
        "the model reads (pixel - mean) / std."))

    @model_validator(mode="after")
    def _same_length_and_positive(self) -> "Normalization":
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} value(s) and std {len(self.std)}: one per channel "
                             "(or one for all) in both")
        if not all(math.isfinite(v) for v in self.mean + self.std) or min(self.std) <= 0:
            raise ValueError("finite means and standard deviations above 0")
        return self


class InputMetadata(Strict):
    description: str | None = Field(None, description="What the input holds, for people.")
    content: Literal["image", "feature"] | None = Field(None, description=(
        "image: a [1, height, width, channels] picture (MediaPipe Tasks and the Task Library "
        "preprocess it from the metadata); feature: any other tensor (default)."))
    color_space: Literal["rgb", "grayscale"] | None = Field(None, description=(
        "content: image only. Default: rgb for 3 or 4 channels, grayscale for 1."))
    normalization: Normalization | None = Field(None, description=(
        "content: image only. How pixels become the model's input values; required by MediaPipe "
        "for a float32 image input."))
    range: Annotated[list[float], Field(min_length=2, max_length=2)] | None = Field(None, description=(
        "[min, max] of the values a float input takes (recorded as its stats). Default for an "
        "image with a normalization: what pixels 0 and 255 become."))

    @field_validator("range")
    @classmethod
    def _ordered(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not (math.isfinite(value[0]) and math.isfinite(value[1]) and value[0] < value[1]):
            raise ValueError("[min, max] with min < max")
        return value


class OutputMetadata(Strict):
    description: str | None = Field(None, description="What the output holds, for people.")
    labels: PathText | Literal[False] | None = Field(None, description=(
        "Labels file packed into the .tflite, one label per line, one per class (the last axis). "
        "Default: mobile.labels for scores outputs; false for none."))
    score: Literal["probability", "logit"] | None = Field(None, description=(
        "What the scores are: probability (0..1, recorded as the output's range) or logit. "
        "Default: probability when the source model's scores all lie in 0..1."))


class MetadataSection(Strict):
    name: str | None = Field(None, description="Model name apps show. Default: the recipe name.")
    description: str | None = Field(None, description=(
        "What the model does. Default: the recipe, target and quantization, built by tfbuild."))
    version: str | None = Field(None, description=(
        "Model version. Default: the target name and the first 12 hex digits of the converted "
        "model's sha256 (before metadata), so every different model has a different version."))
    author: str | None = Field(None, description="Who made the model.")
    license: str | None = Field(None, description="The model's license, e.g. Apache-2.0.")
    inputs: dict[str, InputMetadata] = Field(default_factory=dict, description=(
        "Per input, by its name in the signature."))
    outputs: dict[str, OutputMetadata] = Field(default_factory=dict, description=(
        "Per output, by its name in the signature (after model.outputs renames)."))


class Target(Strict):
    quantize: Quantize = Field("float32", description=modes.described() + ".")
    io: Literal["float32", "int8", "uint8", "int16"] = Field("float32", description=(
        "Type of the model's inputs and outputs. int8/uint8 need quantize: int8; int16 needs int16x8."))
    select_tf_ops: bool = Field(False, description=(
        "Allow TensorFlow ops that have no builtin LiteRT kernel. The app then needs the Flex runtime."))
    accept: Thresholds | None = Field(None, description="Acceptance thresholds; override `accept` defaults.")
    output: str = Field("model.tflite", description="File name of the model inside the target's directory.")
    float_fallback: Literal["none", "auto"] | list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        "none", description=(
            "quantize: int8 only. Layers kept in float inside the integer model. none: every layer "
            "quantized. A list: Keras layer names, output tensor names (as the report lists them) or "
            "op types (FULLY_CONNECTED, CONV_2D). auto: when the fully quantized model misses a "
            "threshold, rank the layers by their quantization error and keep the fewest in float "
            "that make every threshold pass (recorded in tfbuild.lock; reused while the key is "
            "unchanged)."))
    max_float_layers: int = Field(8, ge=1, description=(
        "float_fallback: auto keeps at most this many layers in float; if no such set passes, "
        "the target is rejected with the best result and the sets it tried."))
    metadata: MetadataSection | Literal[False] | None = Field(None, description=(
        "TFLite metadata of this target, over the recipe's `metadata` field by field; false: "
        "none for this target."))

    @model_validator(mode="after")
    def _io_matches_quantization(self) -> "Target":
        problem = modes.io_problem(self.quantize, self.io) or (
            modes.fallback_problem(self.quantize) if self.float_fallback != "none" else None)
        if problem:
            raise ValueError(problem)
        if isinstance(self.float_fallback, list) and not self.float_fallback:
            raise ValueError("float_fallback: an empty list; use none")
        return self

    @field_validator("output")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        if not re.match(NAME_PATTERN, value) or value in (".", ".."):
            raise ValueError("a plain file name (letters, digits, _ . -), no directories")
        return value


def _codegen_check(check, *args) -> None:
    """The code generator's own name rules, applied when the recipe is read, not after a conversion."""
    try:
        check(*args)
    except UserError as err:
        raise ValueError(f"{err.message}; expected {err.expected}") from None


class AndroidSection(Strict):
    package: str = Field(description="Kotlin package of the generated class, e.g. com.example.digits.")
    class_name: str = Field(description="Name of the generated Kotlin class.")
    api: Literal["compiled_model", "interpreter"] = Field("compiled_model", description=(
        "compiled_model: LiteRT 2.x CompiledModel API; interpreter: classic org.tensorflow.lite.Interpreter."))

    @model_validator(mode="after")
    def _valid_names(self) -> "AndroidSection":
        from tfbuild import codegen

        _codegen_check(codegen.validate_package, self.package)
        _codegen_check(codegen.validate_class_name, self.class_name, "mobile.android.class_name")
        return self


class LiteRtSwiftSource(Strict):
    url: str | None = Field(None, min_length=1, description=(
        "Git URL of the LiteRT Swift package (default https://github.com/google-ai-edge/LiteRT)."))
    revision: str | None = Field(None, description=(
        "The commit to pin, 40 hex digits (default: v" + VERSIONS["litert_swift"] + "'s, "
        + VERSIONS["litert_swift_revision"] + "). Never a version: SwiftPM refuses LiteRT's unsafe "
        "linker flags from a dependency resolved by version."))
    path: PathText | None = Field(None, description=(
        "A local LiteRT checkout with its CLiteRT xcframeworks built, instead of url and revision; "
        "relative to the project root or absolute."))

    @model_validator(mode="after")
    def _path_or_revision(self) -> "LiteRtSwiftSource":
        from tfbuild.codegen import ios

        _codegen_check(ios.check_litert_source, self.model_dump())
        return self


class IOSSection(Strict):
    class_name: str = Field(description="Name of the generated Swift class.")
    api: Literal["compiled_model", "interpreter"] = Field("compiled_model", description=(
        "compiled_model: LiteRT's CompiledModel API from its Swift package (github.com/google-ai-edge/"
        f"LiteRT v{VERSIONS['litert_swift']}, pinned by commit); interpreter: TensorFlowLiteSwift's Interpreter (CocoaPods)."))
    litert: LiteRtSwiftSource | None = Field(None, description=(
        "Where the generated Package.swift takes LiteRT from (api: compiled_model): {url, revision} "
        "or {path}. Default: LiteRT's GitHub repository at the v" + VERSIONS["litert_swift"] + " commit."))
    delegates: list[Literal["coreml", "metal"]] = Field(default_factory=list, description=(
        "TensorFlowLiteSwift delegates the loader offers (api: interpreter only; a CompiledModel "
        "takes accelerators at run time)."))

    @field_validator("class_name")
    @classmethod
    def _valid_class_name(cls, value: str) -> str:
        from tfbuild import codegen

        _codegen_check(codegen.validate_class_name, value, "mobile.ios.class_name")
        return value

    @model_validator(mode="after")
    def _delegates_match_api(self) -> "IOSSection":
        from tfbuild.codegen import ios

        _codegen_check(ios.check_delegates, self.delegates, self.api)
        _codegen_check(ios.check_litert, self.litert.model_dump() if self.litert else None, self.api)
        return self


class MobileSection(Strict):
    android: AndroidSection | None = Field(None, description="Generate a Kotlin loader (omit for none).")
    ios: IOSSection | None = Field(None, description="Generate a Swift loader (omit for none).")
    labels: PathText | None = Field(None, description="Text file, one class label per line.")
    templates: PathText | None = Field(None, description="Directory whose templates override the built-in ones.")
    golden_samples: int = Field(3, ge=1, le=100, description="Evaluation samples exported as golden vectors.")


class Recipe(Strict):
    tfbuild: Literal[1] = Field(description="Recipe schema version.")
    model: ModelSection = Field(description="The source model and how to load it.")
    data: DataSection = Field(default_factory=DataSection, description=(
        "Calibration and evaluation inputs, matched to the model's inputs by name."))
    accept: Thresholds | None = Field(None, description="Threshold defaults for every target.")
    targets: dict[str, Target] = Field(min_length=1, description="Named build targets.")
    mobile: MobileSection | None = Field(None, description=(
        "Generated Android/iOS loaders for every target (omit for none)."))
    output_dir: PathText | None = Field(None, description=(
        "Where outputs go, relative to the project root (default build/<recipe>)."))
    metadata: MetadataSection | None = Field(None, description=(
        "TFLite metadata written into every target's .tflite (name, version, author, license, "
        "input normalization, labels), read by MediaPipe Tasks, the TFLite Task Library and "
        "Android Studio's ML Model Binding. Needs the extra tfbuild[metadata]."))

    @field_validator("targets")
    @classmethod
    def _target_names(cls, targets: dict[str, Target]) -> dict[str, Target]:
        for name in targets:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"target name {name!r}: use letters, digits, _ . -")
        return targets

    @field_validator("output_dir")
    @classmethod
    def _relative_inside_project(cls, value: str | None) -> str | None:
        if value is not None and (Path(value).is_absolute() or ".." in Path(value).parts):
            raise ValueError("a relative path inside the project (no '..', not absolute)")
        return value


# Each entry upgrades a raw recipe dict from version N to N+1, so old recipes keep building.
MIGRATIONS: dict[int, Any] = {}


def migrate(raw: dict, file: str) -> dict:
    version = raw.get("tfbuild")
    if not isinstance(version, int):
        raise UserError("missing or invalid recipe schema version", file=file, key="tfbuild",
                        expected=f"an integer, e.g. `tfbuild: {RECIPE_SCHEMA_VERSION}`")
    if version > RECIPE_SCHEMA_VERSION:
        raise UserError(f"recipe schema version {version} is newer than this tfbuild understands",
                        file=file, key="tfbuild", expected=f"<= {RECIPE_SCHEMA_VERSION}",
                        hint="upgrade tfbuild")
    while version < RECIPE_SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise UserError(f"recipe schema version {version} is not supported", file=file,
                            key="tfbuild", expected=f"1..{RECIPE_SCHEMA_VERSION}")
        raw = MIGRATIONS[version](raw)
        version = raw["tfbuild"]
    return raw


def validate(raw: dict, file: str) -> Recipe:
    """Turn a composed dict into a Recipe, or a UserError naming every bad key path."""
    return validated(Recipe, migrate(raw, file), file)


def located(err: UserError, recipes_dir: Path, name: str, overrides: list[str]) -> UserError:
    """A schema error with the line its key was written at: in the recipe, or in the piece its
    defaults list merged there; a missing key is shown at its parent's line. Worked out only
    when there is an error (a valid recipe may come from the composition cache unread)."""
    if err.line is not None or not err.key:
        return err
    from tfbuild import recipe_yaml

    try:
        pieces = recipe_yaml.check_pieces(recipes_dir, recipe_yaml.read_recipe(recipe_file(recipes_dir, name), err.file),
                                          overrides)
    except UserError:
        return err
    parts = err.key.split(".")
    while parts:
        file, line = recipe_yaml.locate(pieces, ".".join(parts))
        if line is not None:
            err.file, err.line = file, line
            break
        parts.pop()
    return err


def validated(model: type[BaseModel], raw: dict, file: str, prefix: str = ""):
    """`model` validated from `raw`, or a UserError naming every bad key path (under `prefix`,
    the key of the section `raw` is, in a file holding more than one)."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        problems = err.errors(include_url=False)
        for problem in problems:
            problem["loc"] = (prefix, *problem["loc"]) if prefix else problem["loc"]
        first = problems[0]
        key = ".".join(str(part) for part in first["loc"]) or None
        message = _describe(first)
        message += "".join(f"\n  also: {'.'.join(map(str, p['loc']))}: {_describe(p)}"
                           for p in problems[1:MAX_PROBLEMS_SHOWN])
        if len(problems) > MAX_PROBLEMS_SHOWN:
            message += f"\n  and {len(problems) - MAX_PROBLEMS_SHOWN} more"
        raise UserError(message, file=file, key=key) from None


def _describe(problem: dict) -> str:
    kind = problem["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    text = problem["msg"].removeprefix("Value error, ")
    if "input" in problem and kind not in ("model_type", "dict_type"):
        text += f" (got {json.dumps(problem['input'], default=str)[:80]})"
    return text


def json_schema() -> dict:
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "tfbuild recipe"
    return schema


def recipe_names(recipes_dir: Path) -> list[str]:
    """Recipes are the YAML files at the top of recipes/; sub-folders hold shared pieces."""
    if not recipes_dir.is_dir():
        return []
    return sorted(p.stem for p in recipes_dir.iterdir()
                  if p.suffix == ".yaml" and p.is_file() and not p.name.startswith("."))


def recipe_file(recipes_dir: Path, name: str) -> Path:
    """Recipes end in .yaml (Hydra composes only that suffix; a .yml file is pointed out)."""
    path = recipes_dir / f"{name}.yaml"
    if path.is_file():
        return path
    if (recipes_dir / f"{name}.yml").is_file():
        raise UserError("recipes must end in .yaml", file=str(recipes_dir / f"{name}.yml"),
                        expected=f"rename it to {name}.yaml")
    raise UserError(f"no recipe named {name!r}", file=str(recipes_dir),
                    expected=f"one of: {', '.join(recipe_names(recipes_dir)) or '(none)'}")


def compose(recipes_dir: Path, name: str, overrides: list[str], shown_as: str) -> dict:
    """Compose one recipe with Hydra (defaults lists, key=value / +key=value / ~key overrides).

    Every file Hydra will read is checked first (recipe_yaml), and whatever Hydra or OmegaConf
    still raise while composing is the recipe's or an override's fault, reported as such.
    """
    from tfbuild import recipe_yaml  # PyYAML and the checks: only when the composition cache misses

    path = recipe_file(recipes_dir, name)
    written = recipe_yaml.read_recipe(path, shown_as)
    pieces = recipe_yaml.check_pieces(recipes_dir, written, overrides)
    for override in overrides:
        recipe_yaml.check_override(override, shown_as)
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    try:
        with warnings.catch_warnings(), \
                initialize_config_dir(config_dir=str(recipes_dir.resolve()), version_base=None):
            # Hydra's upgrade notes (a defaults list without `_self_` applies the recipe's own
            # keys last, which is what a recipe means) are not the user's business.
            warnings.simplefilter("ignore", UserWarning)
            own = _without_hydra_groups()
            base = OmegaConf.to_container(hydra_compose(config_name=path.name, overrides=own),
                                          resolve=False) if overrides else {}
            cfg = hydra_compose(config_name=path.name, overrides=[*own, *(_forced(o, base) for o in overrides)])
        recipe_yaml.check_interpolations(OmegaConf.to_container(cfg, resolve=False), pieces)
        composed = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # noqa: BLE001 - sorted into user errors and bugs just below
        if not _raised_while_composing(err):
            raise
        raise _composition_error(err, overrides, pieces) from None
    finally:
        GlobalHydra.instance().clear()
    # Through JSON, as the composition cache stores it: a recipe means the same either way.
    return _in_written_order(json.loads(json.dumps(composed)), written.data)


def _without_hydra_groups() -> list[str]:
    """Overrides that delete Hydra's own config groups (its launcher, logging, help texts, as
    its HydraConf lists them) from the defaults list. Every composition loaded and merged them
    into the `hydra` node that compose() then drops, which took two thirds of composing a
    recipe; the recipe composes the same without them (recipes and overrides may not name
    `hydra`: recipe_yaml refuses it)."""
    from hydra.conf import HydraConf

    return [f"~hydra/{group}" for entry in HydraConf().defaults for group, option in entry.items()
            if option is not None]


def _raised_while_composing(err: Exception) -> bool:
    """Hydra and OmegaConf only ever see checked files, so what they raise (an assertion, a
    recursion, a KeyError as much as their own exceptions) comes from the recipe or an
    override; an exception that did not pass through them is a bug of ours."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, (HydraException, OmegaConfBaseException)):
        return True
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").split(".", 1)[0] in COMPOSING_PACKAGES:
            return True
        tb = tb.tb_next
    return False


def _in_written_order(composed: dict, written: dict) -> dict:
    """Targets in the order the recipe file lists them (defaults-list pieces merge first)."""
    targets = composed.get("targets")
    order = list(written.get("targets") or {}) if isinstance(written.get("targets"), dict) else []
    if isinstance(targets, dict):
        ranked = [k for k in order if k in targets] + [k for k in targets if k not in order]
        composed["targets"] = {k: targets[k] for k in ranked}
    return composed


def _forced(override: str, base: dict) -> str:
    """`key=value` for a field the schema knows becomes Hydra's add-or-set (`++key=value`).

    Recipes leave most fields at their defaults, and a user overriding a documented field should
    not need to know whether the YAML spelled it out. Unknown keys, and names of targets or
    registry entries the recipe does not have, stay errors (a typo must not add a target).
    """
    if override[:1] in "+~" or "=" not in override:
        return override
    key = override.split("=", 1)[0]
    return f"++{override}" if schema_knows(key.split("."), base) else override


def schema_knows(path: list[str], base: dict | None, model: type[BaseModel] = Recipe) -> bool:
    """Whether `path` names a schema field, through dict entries that exist in `base`."""
    import typing

    if not path:
        return True
    field = model.model_fields.get(path[0])
    if field is None:
        return False
    here = base.get(path[0]) if isinstance(base, dict) else None
    annotation = field.annotation
    if typing.get_origin(annotation) is not dict:  # `dict[...] | None` counts as the dict
        annotation = next((a for a in typing.get_args(annotation) if typing.get_origin(a) is dict), annotation)
    if typing.get_origin(annotation) is dict:
        if len(path) < 2 or not isinstance(here, dict) or path[1] not in here:
            return len(path) == 1
        value_type = typing.get_args(annotation)[1]
        if isinstance(value_type, type) and issubclass(value_type, BaseModel):
            return schema_knows(path[2:], here[path[1]], value_type)
        return len(path) == 2
    for arg in typing.get_args(annotation) or (annotation,):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return schema_knows(path[1:], here, arg)
    return len(path) == 1


def _composition_error(err: Exception, overrides: list[str], pieces: list[recipe_yaml.Piece]) -> UserError:
    """What Hydra or OmegaConf raised, as one line at the file (and line) it comes from."""
    while not str(err).strip() and err.__cause__ is not None:  # Hydra wraps with an empty message
        err = err.__cause__
    shown_as = pieces[0].file.shown
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    text = "; ".join(lines[:2]) if lines else type(err).__name__
    if isinstance(err, RecursionError):
        text = "values that refer to each other without end (an interpolation loop?)"
    culprit = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~") in str(err)), None)
    if culprit is None and "override" in str(err).lower() and overrides:
        culprit = overrides[0] if len(overrides) == 1 else None
    if culprit is not None:
        text = text.replace(f"++{culprit}", culprit)  # as typed, not as _forced passed it on
        return UserError(f"bad override {culprit!r}: {text}", file=shown_as,
                         key=culprit.split("=", 1)[0].lstrip("+~"),
                         expected="key=value for an existing key, +key=value to add one, ~key to delete",
                         hint="overrides apply to every selected recipe: name the recipe, "
                              "e.g. tfbuild digits KEY=VALUE")
    from tfbuild.recipe_yaml import locate

    file, line = locate(pieces, getattr(err, "full_key", None))
    return UserError(f"cannot compose recipe: {text}", file=file, line=line)
