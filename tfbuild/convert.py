"""The only module that imports TensorFlow (inside functions, in worker processes only).

One job = one recipe: its model is loaded once and every selected target is converted from
the same traced function. Every source kind (.keras, .h5, SavedModel, py: factory) becomes a
`Source`: named input specs with the batch pinned as the recipe says, a concrete function whose
outputs are a dict keyed by output name (so the .tflite signature keeps the names), and the
object that owns the variables. Passing that owner to the converter matters: without it
Keras 3 variables are not frozen and the file outputs NaN.
"""

from __future__ import annotations

import json
import os
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tfbuild import data as data_mod
from tfbuild import verify
from tfbuild.errors import UserError
from tfbuild.fingerprint import sha256_bytes
from tfbuild.recipe import Recipe, Target
from tfbuild.registry import load_object

CODE_RUNNING_LAYERS = ("Lambda", "TFOpLambda", "SlicingOpLambda")


class ConversionFailed(Exception):
    """A target could not be converted; the message says what to change."""


@dataclass
class Source:
    input_specs: list[tuple[str, list[int | None], str]]
    output_names: list[str]
    concrete: object
    owner: object
    reference: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

    @property
    def input_names(self) -> list[str]:
        return [name for name, _, _ in self.input_specs]


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def warm_up() -> None:
    """Import what every job needs, before the job is known."""
    _tf()
    import keras  # noqa: F401

    verify.load_runtime()


# ---------------------------------------------------------------- loading

def _config_mentions_code(config_text: str) -> list[str]:
    found = set(re.findall(r'"class_name":\s*"(\w+)"', config_text))
    return sorted(found.intersection(CODE_RUNNING_LAYERS))


def _saved_config(path: Path, file: str) -> str:
    """The model's architecture JSON, read without deserializing anything."""
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                return archive.read("config.json").decode()
        import h5py

        with h5py.File(path, "r") as handle:
            config = handle.attrs.get("model_config", "")
            return config.decode() if isinstance(config, bytes) else str(config)
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        raise UserError(f"not a readable {path.suffix} model: {err}", file=file, key="model.source",
                        hint="a Git LFS pointer? run `git lfs pull`") from None


def _refuse_code_without_trust(path: Path, recipe: Recipe, file: str) -> None:
    """Read the architecture (a clear error for a file that is no model at all) and refuse
    code-carrying layers unless the recipe trusts the model."""
    layers = _config_mentions_code(_saved_config(path, file))
    if layers and not recipe.model.trust_code:
        raise UserError(
            f"the model contains {', '.join(layers)} layer(s), whose loading runs Python code "
            "stored in the model file", file=file, key="model.trust_code",
            expected="trust_code: true, only for a model you produced yourself",
            hint="or replace the Lambda with a registered custom layer (model.custom_objects)")


def _custom_objects(recipe: Recipe, file: str) -> dict:
    objects = {}
    for name, spec in recipe.model.custom_objects.items():
        obj = load_object(spec, file=file, key=f"model.custom_objects.{name}")
        objects[name] = obj
        objects.setdefault(name.rsplit(">", 1)[-1], obj)
    return objects


def _load_keras_file(path: Path, recipe: Recipe, file: str):
    import keras

    _refuse_code_without_trust(path, recipe, file)
    objects = _custom_objects(recipe, file)
    try:
        with keras.saving.custom_object_scope(objects):
            return keras.saving.load_model(path, custom_objects=objects, compile=False,
                                           safe_mode=not recipe.model.trust_code)
    except (TypeError, ValueError) as err:
        raise _load_error(err, file) from None


def _load_error(err: Exception, file: str) -> UserError:
    text = str(err)
    missing = re.search(r"Could not locate (?:class|function) '([^']+)'|Unknown (?:layer|object)[^']*'([^']+)'", text)
    if missing:
        name = missing.group(1) or missing.group(2)
        registered = re.findall(r"'registered_name': '([^']+)'", text[missing.end():])
        name = next((r for r in registered if r.rsplit(">", 1)[-1] == name), name)
        return UserError(f"the model uses {name!r}, which is not registered", file=file,
                         key=f"model.custom_objects.{name}",
                         expected=f"{name}: package.module:{name.rsplit('>', 1)[-1]}")
    if "safe_mode" in text or "lambda" in text.lower():
        return UserError("loading the model would run code stored in it", file=file, key="model.trust_code",
                         expected="trust_code: true, only for a model you produced yourself")
    return UserError(f"cannot load the model: {text.splitlines()[0][:300]}", file=file, key="model.source")


def _keras_input_specs(model, recipe: Recipe, file: str) -> list[tuple[str, list, str]]:
    declared = recipe.model.inputs
    if declared:
        specs = [(name, list(spec.shape), spec.dtype) for name, spec in declared.items()]
    else:
        try:
            tensors = list(model.inputs)
        except (AttributeError, ValueError):
            tensors = []
        if not tensors:
            raise UserError("the model does not declare its inputs (a subclassed model?)", file=file,
                            key="model.inputs",
                            expected="inputs: {name: {shape: [1, 28, 28], dtype: float32}}")
        specs = [(t.name, list(t.shape), str(t.dtype)) for t in tensors]
    return [(name, _pin_batch(shape, recipe, declared is not None), dtype) for name, shape, dtype in specs]


def _pin_batch(shape: list, recipe: Recipe, declared: bool) -> list:
    if declared or not shape:
        return shape
    return [recipe.model.batch_size, *shape[1:]]


def _output_names(model, outputs) -> list[str]:
    if isinstance(outputs, dict):
        return list(outputs)
    count = len(outputs) if isinstance(outputs, (list, tuple)) else 1
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != count:
        try:
            names = [t._keras_history.operation.name for t in model.outputs]
        except (AttributeError, ValueError, TypeError):
            names = []
    if len(names) != count or len(set(names)) != count:
        names = [f"output_{i}" for i in range(count)]
    return names


def _keras_source(model, recipe: Recipe, file: str) -> Source:
    tf = _tf()
    specs = _keras_input_specs(model, recipe, file)
    probe = [np.zeros([1 if d is None else d for d in shape], dtype=dtype) for _, shape, dtype in specs]
    outputs = model(probe[0] if len(probe) == 1 else probe, training=False)
    names = _output_names(model, outputs)

    def call(*args):
        result = model(args[0] if len(args) == 1 else list(args), training=False)
        flat = list(result.values()) if isinstance(result, dict) else tf.nest.flatten(result)
        return dict(zip(names, flat))

    signature = [tf.TensorSpec(shape, dtype, name=name) for name, shape, dtype in specs]
    function = tf.function(call, input_signature=signature)
    owner = tf.Module()
    owner.variables_of_model = [getattr(v, "value", v) for v in model.variables]
    owner.serve = function

    def reference(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = call(*[tf.constant(inputs[name]) for name, _, _ in specs])
        return {name: np.asarray(value) for name, value in result.items()}

    return Source(specs, names, function.get_concrete_function(), owner, reference)


def _saved_model_source(path: Path, recipe: Recipe, file: str) -> Source:
    tf = _tf()
    loaded = tf.saved_model.load(str(path))
    key = recipe.model.signature or "serving_default"
    if key not in loaded.signatures:
        raise UserError(f"the SavedModel has no signature {key!r}", file=file, key="model.signature",
                        expected=f"one of: {', '.join(loaded.signatures) or '(none)'}")
    fn = loaded.signatures[key]
    kwargs = fn.structured_input_signature[1]
    declared = recipe.model.inputs
    if declared:
        specs = [(name, list(spec.shape), spec.dtype) for name, spec in declared.items()]
    else:
        specs = [(name, _pin_batch(list(spec.shape), recipe, False), spec.dtype.name)
                 for name, spec in sorted(kwargs.items())]
    names = list(fn.structured_outputs)

    def call(*args):
        return fn(**{name: arg for (name, _, _), arg in zip(specs, args)})

    signature = [tf.TensorSpec(shape, dtype, name=name) for name, shape, dtype in specs]
    function = tf.function(call, input_signature=signature)
    batch = specs[0][1][0] if specs and specs[0][1] else None

    def reference(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = len(next(iter(inputs.values())))
        step = batch or count
        parts = [call(*[tf.constant(inputs[n][i:i + step]) for n, _, _ in specs])
                 for i in range(0, count - count % step, step)]
        return {n: np.concatenate([np.asarray(p[n]) for p in parts]) for n in names}

    return Source(specs, names, function.get_concrete_function(), loaded, reference)


def load_source(recipe: Recipe, root: Path, file: str) -> Source:
    spec = recipe.model.source
    if spec.startswith("py:"):
        factory = load_object(spec[3:], file=file, key="model.source")
        return _keras_source(factory(), recipe, file)
    path = root / spec
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return _saved_model_source(path, recipe, file)
        raise UserError("directory is not a SavedModel (no saved_model.pb)", file=file, key="model.source")
    if path.suffix in (".keras", ".h5", ".hdf5"):
        return _keras_source(_load_keras_file(path, recipe, file), recipe, file)
    raise UserError(f"unsupported model source {spec!r}", file=file, key="model.source",
                    expected=".keras, .h5, a SavedModel directory, or py:package.module:function")


# ---------------------------------------------------------------- converting

def _converter(source: Source, target: Target, calibration: dict[str, np.ndarray] | None):
    tf = _tf()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([source.concrete], source.owner)
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if target.quantize != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if target.quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if target.quantize in ("int8", "int16x8"):
        converter.representative_dataset = _representative(source, calibration)
        ops = ([tf.lite.OpsSet.TFLITE_BUILTINS_INT8] if target.quantize == "int8" else
               [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8])
        io_type = {"int8": tf.int8, "uint8": tf.uint8, "int16": tf.int16}.get(target.io)
        if io_type is not None:
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
    if target.select_tf_ops:
        ops = [*ops, tf.lite.OpsSet.SELECT_TF_OPS]
        if tf.lite.OpsSet.TFLITE_BUILTINS not in ops:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
    converter.target_spec.supported_ops = ops
    return converter


def _representative(source: Source, calibration: dict[str, np.ndarray]):
    step = _batch(source)
    count = len(next(iter(calibration.values())))

    def samples():
        for start in range(0, count - count % step, step):
            yield [calibration[name][start:start + step].astype(dtype)
                   for name, _, dtype in source.input_specs]
    return samples


def explain_converter_error(text: str) -> str:
    """Turn the converter's MLIR dump into which op/layer failed and what to change."""
    unsupported = sorted(set(re.findall(r"'(tf\.\w+)' op is neither a custom op nor a flex op", text)))
    layers = sorted({node.rsplit("/", 1)[0] for _, node in
                     re.findall(r'fused\["(\w+):", callsite\("([^"@]+)@', text) if "/" in node})
    where = f" (in layer {', '.join(layers[:3])})" if layers else ""
    if "tensor list" in text.lower() or "TensorList" in text:
        return (f"a recurrent layer{where} needs TensorList ops, which have no builtin LiteRT kernel: "
                "pin the batch (model.batch_size: 1) and static sequence length in model.inputs, "
                "or set select_tf_ops: true (the app then needs the Flex runtime)")
    if unsupported:
        return (f"ops with no builtin LiteRT kernel: {', '.join(unsupported)}{where}: set "
                "select_tf_ops: true on this target (the app then needs the Flex runtime), "
                "or replace the layer")
    if "quantiz" in text.lower():
        line = next((l for l in text.splitlines() if "error" in l.lower()), text.splitlines()[0])
        return (f"integer quantization failed{where}: {line.strip()[:240]}; try quantize: dynamic, "
                "or io: float32, or check the calibration data")
    errors = [l.split("error:", 1)[1].strip() for l in text.splitlines() if "error:" in l]
    return f"conversion failed{where}: {(errors[0] if errors else text.strip().splitlines()[0])[:300]}"


def convert_target(source: Source, target: Target, calibration) -> bytes:
    try:
        return _converter(source, target, calibration).convert()
    except Exception as err:  # the converter raises many types, all with the same MLIR text
        raise ConversionFailed(explain_converter_error(str(err))) from None


# ---------------------------------------------------------------- one job

def _data(recipe: Recipe, root: Path, file: str, source: Source, which: str) -> tuple[dict | None, object]:
    spec = getattr(recipe.data, which)
    if spec is None:
        return None, None
    key = f"data.{which}"
    arrays = data_mod.load_arrays(spec, root, file=file, key=key)
    inputs, labels = data_mod.match_inputs(arrays, source.input_names, file=file, key=key)
    inputs = data_mod.conform(data_mod.take(inputs, getattr(recipe.data, f"{which}_samples")),
                              source.input_specs, _batch(source), file=file, key=key)
    count = len(next(iter(inputs.values())))
    return inputs, data_mod.conform_labels(labels, count, file=file, key=key)


def _evaluation_set(recipe: Recipe, root: Path, file: str, source: Source):
    inputs, labels = _data(recipe, root, file, source, "evaluation")
    if inputs is not None:
        return inputs, labels, "evaluation"
    inputs, labels = _data(recipe, root, file, source, "calibration")
    if inputs is not None:
        return inputs, labels, "calibration (no evaluation data)"
    count = max(min(recipe.data.evaluation_samples, 32), _batch(source))
    return data_mod.generated_samples(source.input_specs, count), None, "generated random samples (no data)"


def run_job(job: dict, emit: Callable[[dict], None]) -> None:
    """Convert, verify and stage every target of one recipe; report each as it finishes."""
    recipe = Recipe.model_validate(job["recipe"])
    root, file = Path(job["root"]), job["file"]
    started = time.perf_counter()
    emit({"event": "phase", "target": None, "phase": "loading the model"})
    source = load_source(recipe, root, file)
    calibration, _ = _data(recipe, root, file, source, "calibration")
    eval_inputs, labels, eval_from = _evaluation_set(recipe, root, file, source)
    loaded = time.perf_counter()
    emit({"event": "phase", "target": None, "phase": "running the source model on the evaluation data"})
    verify.load_runtime()
    imported = time.perf_counter()
    reference = source.reference(eval_inputs)
    shared = {"load_s": round(loaded - started, 3), "runtime_import_s": round(imported - loaded, 3),
              "reference_s": round(time.perf_counter() - imported, 3)}
    for item in job["targets"]:
        emit({"event": "started", "target": item["name"]})
        try:
            result = _build_target(recipe, item, source, calibration, eval_inputs, labels, eval_from,
                                   reference, shared, emit)
            emit({"event": "done", "target": item["name"], "result": result})
        except ConversionFailed as err:
            emit({"event": "failed", "target": item["name"], "message": str(err)})


def _build_target(recipe: Recipe, item: dict, source: Source, calibration, eval_inputs, labels,
                  eval_from: str, reference, shared_timings: dict, emit: Callable[[dict], None]) -> dict:
    """Convert, verify and stage one target. Shared timings (model load, source-model run on the
    evaluation data) are paid once per recipe and reported with every target."""
    target = recipe.targets[item["name"]]
    started = time.perf_counter()
    model_bytes = convert_target(source, target, calibration)
    convert_s = time.perf_counter() - started
    thresholds, user_set = verify.effective_thresholds(
        target.quantize, recipe.accept and recipe.accept.model_dump(), target.accept and target.accept.model_dump())
    stage = Path(item["stage"])
    stage.mkdir(parents=True, exist_ok=True)
    (stage / target.output).write_bytes(model_bytes)
    emit({"event": "phase", "target": item["name"], "phase": "verifying in LiteRT"})
    golden_count = recipe.mobile.golden_samples if recipe.mobile else 3
    report = verify_model(model_bytes, eval_inputs, labels, reference, thresholds, user_set,
                          batch=_batch(source), golden_count=golden_count)
    report.update({
        "recipe": item["recipe"], "target": item["name"], "quantize": target.quantize, "io": target.io,
        "select_tf_ops": target.select_tf_ops, "evaluated_on": eval_from, "versions": item["versions"],
        "model_file": target.output, "model_sha256": sha256_bytes(model_bytes),
        "size_bytes": len(model_bytes), "thresholds": thresholds,
    })
    report["timings"] = {"convert_s": round(convert_s, 3),
                         "verify_s": round(time.perf_counter() - started - convert_s, 3), **shared_timings}
    golden = report.pop("golden", None)
    files = [target.output, "report.json"]
    (stage / "report.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    if golden is not None:
        (stage / "golden.json").write_text(json.dumps(golden) + "\n")
        files.append("golden.json")
    return {"files": files, "verdict": report["verdict"], "failures": report["failures"],
            "warnings": report["warnings"], "timings": report["timings"]}


def _batch(source: Source) -> int:
    shape = source.input_specs[0][1]
    return (shape[0] if shape else None) or 1


def verify_model(model_bytes: bytes, eval_inputs, labels, reference, thresholds: dict,
                 user_set: bool, batch: int, golden_count: int = 3) -> dict:
    """Report dict with verdict passed / rejected / unverified, and its failures and warnings."""
    size_kb = len(model_bytes) / 1024
    warnings: list[str] = []
    signature = verify.signature(model_bytes)
    if verify.uses_flex(signature):
        warnings.append("uses select TF ops: the app needs the Flex runtime "
                        "(org.tensorflow:tensorflow-lite-select-tf-ops / TensorFlowLiteSelectTfOps)")
        failures = verify.judge({}, thresholds, size_kb, None)
        if user_set and not thresholds.get("waive"):
            failures.append("not verified: Flex ops cannot run in the local LiteRT interpreter; "
                            "set accept.waive: '<reason>' to accept this target unverified")
        verdict = "rejected" if failures else "unverified"
        if thresholds.get("waive"):
            warnings.append(f"verification waived: {thresholds['waive']}")
        return {"verdict": verdict, "failures": failures, "warnings": warnings, "metrics": {},
                "latency_ms": None, "signature": signature, "uses_flex": True, "golden": None}
    candidate, raw_in, raw_out = verify.run(model_bytes, signature, eval_inputs, batch)
    used = len(next(iter(candidate.values())))
    metrics = verify.compare({k: v[:used] for k, v in reference.items()}, candidate,
                             labels[:used] if labels is not None else None)
    latency = verify.median_latency_ms(model_bytes, signature, eval_inputs, int(thresholds["latency_runs"]),
                                       int(thresholds["latency_threads"]))
    failures = verify.judge(metrics, thresholds, size_kb, latency)
    golden_count = min(golden_count, used)
    golden = {"count": golden_count,
              "inputs": {k: v[:golden_count].tolist() for k, v in raw_in.items()},
              "outputs": {k: v[:golden_count].tolist() for k, v in raw_out.items()}}
    return {"verdict": "rejected" if failures else "passed", "failures": failures, "warnings": warnings,
            "metrics": metrics, "latency_ms": round(latency, 4), "signature": signature,
            "uses_flex": False, "golden": golden}
