"""The only module that imports TensorFlow (inside functions, in worker processes only).

One job = one recipe: its model is loaded once and every selected target is converted from
the same traced function. Every source kind (.keras, .h5, SavedModel, py: factory) becomes a
`Source`: named input specs with the batch pinned as the recipe says, a concrete function whose
outputs are a dict keyed by output name (so the .tflite signature keeps the names), and the
object that owns the variables. Passing that owner to the converter matters: without it
Keras 3 variables are not frozen and the file outputs NaN.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tfbuild import data as data_mod
from tfbuild import fallback, keras2, metadata, verify
from tfbuild.errors import ConversionFailed, UserError, machine_fault
from tfbuild.fingerprint import sha256_bytes
from tfbuild.recipe import Recipe, Target
from tfbuild.registry import load_object

CODE_RUNNING_LAYERS = ("Lambda", "TFOpLambda", "SlicingOpLambda")


# What the worker is doing now, so that a crash (an exception from user code or TensorFlow, or a
# signal the parent sees) is reported with its stage instead of as a bare exception.
STAGE = {"now": "starting"}


def enter_stage(stage: str) -> None:
    STAGE["now"] = stage


@dataclass
class Source:
    """A loaded model, whatever its kind: named inputs (batch pinned as the recipe says), named
    outputs, how to make a converter for it, and the reference it is verified against."""
    input_specs: list[tuple[str, list[int | None], str]]
    output_names: list[str]
    make_converter: Callable[[], object]  # a fresh TFLiteConverter, before any settings
    graph_def: Callable[[], object]  # the TensorFlow graph the converter reads
    reference: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    output_kinds: dict[str, str] = field(default_factory=dict)  # scores | values, where known
    # A twin whose recurrent layers are unrolled (static sequence length): plain ops that integer
    # calibration can run, where a WHILE loop crashes the calibrator.
    unrolled: Callable[[], "Source | None"] | None = None
    # Converters that lose names (the TF1 SignatureDef path) yield positional samples in this order
    # and get their signature written back by `finish`.
    calibration_order: list[str] | None = None
    finish: Callable[[bytes], bytes] = field(default=lambda model_bytes: model_bytes)
    notes: list[str] = field(default_factory=list)  # said once in the build output and the report
    warnings: list[str] = field(default_factory=list)  # added to each target converted from it
    keras3_twin: Callable[[], object] | None = None  # a Keras 2 file as Keras 3 reads it (drift check)

    @property
    def input_names(self) -> list[str]:
        return [name for name, _, _ in self.input_specs]

    @functools.cached_property
    def has_loop(self) -> bool:
        """Whether the graph (or a function it calls) holds a While loop (walked once per source,
        however many integer targets ask)."""
        graph = self.graph_def()
        ops = {node.op for node in graph.node}
        for function in graph.library.function:
            ops.update(node.op for node in function.node_def)
        return bool(ops & {"While", "StatelessWhile"})


def _concrete_source(concrete, owner, specs, names, reference, kinds) -> Source:
    """A source traced to one concrete function: the converter reads it with the object that owns
    its variables (without the owner, Keras 3 variables are not frozen and the file outputs NaN)."""
    def make_converter():
        return _tf().lite.TFLiteConverter.from_concrete_functions([concrete], owner)
    return Source(specs, names, make_converter, concrete.graph.as_graph_def, reference, kinds)


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


def _refuse_code_without_trust(config_text: str, recipe: Recipe, file: str) -> None:
    """Refuse code-carrying layers unless the recipe trusts the model."""
    layers = _config_mentions_code(config_text)
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


@dataclass
class Loaded:
    """A Keras model read from a file, and how: by Keras 3 (`keras`) or by Keras 2 (`tf_keras`),
    with what the build should say about it."""
    model: object
    keras: object  # the module that read it: its custom_object_scope rebuilds twins
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    keras3_twin: Callable[[], object] | None = None  # Keras 3's reading of a Keras 2 file, to compare


def _load_keras_file(path: Path, recipe: Recipe, file: str) -> Loaded:
    """Keras 3 files by Keras 3; Keras 2 files by Keras 2 (tf-keras) where installed, else by
    Keras 3 when nothing in their config changed meaning (keras2.py)."""
    import keras

    config_text = _saved_config(path, file)
    _refuse_code_without_trust(config_text, recipe, file)
    objects = _custom_objects(recipe, file)
    warnings = _registry_warnings(recipe, config_text)
    writer = keras2.writer_version(path)
    if keras2.is_keras2(writer):
        loaded = _load_keras2_file(path, recipe, file, writer, config_text, objects)
        loaded.warnings += warnings
        return loaded
    return Loaded(_keras3_load(path, recipe, file, objects), keras, warnings=warnings)


def _keras3_load(path: Path, recipe: Recipe, file: str, objects: dict, *, writer: str | None = None):
    import keras

    try:
        with keras.saving.custom_object_scope(objects):
            return keras.saving.load_model(path, custom_objects=objects, compile=False,
                                           safe_mode=not recipe.model.trust_code)
    except Exception as err:  # Keras raises many types for a model it cannot rebuild
        raise _load_error(err, file, writer=writer) from None


def _tf_keras():
    """tf-keras (Keras 2 as TensorFlow ships it), or None when it is not installed."""
    _tf()
    try:
        import tf_keras
    except ImportError:
        return None
    return tf_keras


def _load_keras2_file(path: Path, recipe: Recipe, file: str, writer: str, config_text: str,
                      objects: dict) -> Loaded:
    changes = keras2.meaning_changes(config_text)
    tf_keras = _tf_keras()
    if tf_keras is None:
        if changes:
            raise UserError(
                f"written by Keras {writer}, and Keras 3 would compute it differently: {changes[0]}"
                f"{f' (and {len(changes) - 1} more)' if len(changes) > 1 else ''}; "
                f"{keras2.REDEFINED[changes[0].rsplit(': ', 1)[1]]}", file=file, key="model.source",
                expected=f"tf-keras installed to read it as Keras 2 does: {keras2.INSTALL}")
        import keras

        model = _keras3_load(path, recipe, file, objects, writer=writer)
        return Loaded(model, keras, notes=[
            f"written by Keras {writer}, read by Keras 3 (nothing in its config changed meaning "
            f"between them; {keras2.INSTALL} reads it with Keras 2 itself)"])
    try:
        with tf_keras.utils.custom_object_scope(objects):
            model = tf_keras.models.load_model(path, custom_objects=objects, compile=False,
                                               safe_mode=not recipe.model.trust_code)
    except Exception as err:  # as in _keras3_load: many types, one meaning
        raise _load_error(err, file, writer=writer) from None
    note = f"written by Keras {writer}: read by tf-keras {tf_keras.__version__}, as its authors' Keras computed it"
    if changes:
        note += f" (Keras 3 would change {len(changes)} use(s) of {', '.join(sorted({c.rsplit(': ', 1)[1] for c in changes}))})"
    return Loaded(model, tf_keras, notes=[note],
                  keras3_twin=lambda: _keras3_load(path, recipe, file, objects, writer=writer))


def _registry_warnings(recipe: Recipe, config_text: str) -> list[str]:
    """Entries of model.custom_objects that the model never names: Keras ignores them silently."""
    return [f"model.custom_objects.{name} is not used: the model's config never names "
            f"{name.rsplit('>', 1)[-1]!r}, so Keras ignores the entry"
            for name in keras2.unused_entries(list(recipe.model.custom_objects), config_text)]


def _load_error(err: Exception, file: str, *, writer: str | None = None) -> UserError:
    text = str(err)
    cause = describe_exception(err)
    keras2_file = keras2.is_keras2(writer)
    missing = re.search(r"Could not locate (?:class|function) '([^']+)'|Unknown (?:layer|object)[^']*'([^']+)'", text)
    if missing:
        name = missing.group(1) or missing.group(2)
        registered = re.findall(r"'registered_name': '([^']+)'", text[missing.end():])
        name = next((r for r in registered if r.rsplit(">", 1)[-1] == name), name)
        if _keras_builtin(name):
            return UserError(f"Keras 3 cannot rebuild the built-in {name!r} from this file's config "
                             f"(written by Keras {writer or 'an older version'}): {cause}",
                             file=file, key="model.source",
                             expected=f"tf-keras to read Keras 2 files: {keras2.INSTALL}")
        return UserError(f"the model uses {name!r}, which is not registered", file=file,
                         key=f"model.custom_objects.{name}",
                         expected=f"{name}: package.module:{name.rsplit('>', 1)[-1]}")
    if "safe_mode" in text or "lambda" in text.lower():
        return UserError("loading the model would run code stored in it", file=file, key="model.trust_code",
                         expected="trust_code: true, only for a model you produced yourself")
    if keras2_file:
        return UserError(f"cannot load this Keras {writer} file with Keras 3: {cause}", file=file,
                         key="model.source", expected=f"tf-keras to read Keras 2 files: {keras2.INSTALL}")
    return UserError(f"cannot load the model: {cause}", file=file, key="model.source",
                     hint="was it saved completely, by Keras 3 (.keras) or Keras 2 (.h5)?")


def _keras_builtin(name: str) -> bool:
    """A layer or function Keras itself provides (a GRU inside Bidirectional, a Dense inside
    TimeDistributed): never a registry entry the user forgot."""
    import keras

    return hasattr(keras.layers, name) or hasattr(keras.activations, name)


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
        specs = [(t.name, list(t.shape), getattr(t.dtype, "name", str(t.dtype))) for t in tensors]
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


def apply_output_specs(names: list[str], recipe: Recipe, file: str) -> tuple[list[str], dict[str, str]]:
    """The recipe's `model.outputs`: new names (positional list, or a mapping from the names the
    model gives) and the kinds the user declared, by new name."""
    declared = recipe.model.outputs
    if declared is None:
        return names, {}
    if isinstance(declared, list):
        if len(declared) != len(names):
            raise UserError(f"{len(declared)} output(s) named, but the model has {len(names)}: "
                            f"{', '.join(names)}", file=file, key="model.outputs",
                            expected=f"a list of {len(names)} names in the model's output order")
        pairs = list(zip(names, declared))
    else:
        unknown = [name for name in declared if name not in names]
        if unknown:
            raise UserError(f"the model has no output {unknown[0]!r}", file=file,
                            key=f"model.outputs.{unknown[0]}", expected=f"one of: {', '.join(names)}")
        pairs = [(name, declared.get(name)) for name in names]
    renamed, kinds = [], {}
    for original, spec in pairs:
        new = spec if isinstance(spec, str) else (spec.name if spec is not None and spec.name else original)
        renamed.append(new)
        if spec is not None and not isinstance(spec, str) and spec.kind:
            kinds[new] = spec.kind
    if len(set(renamed)) != len(renamed):
        raise UserError(f"output names repeat: {', '.join(renamed)}", file=file, key="model.outputs",
                        expected="a distinct name for every output")
    return renamed, kinds


SCORE_ACTIVATIONS = ("softmax", "sigmoid")


def _keras_output_kinds(model, names: list[str], original: list[str]) -> dict[str, str]:
    """`scores` for outputs a softmax or sigmoid produces (read from the layers; None elsewhere)."""
    def kind_of(layer) -> str | None:
        inner = getattr(layer, "layer", None) or layer  # TimeDistributed, Bidirectional: the wrapped layer
        activation = getattr(getattr(inner, "activation", None), "__name__", None)
        if "Softmax" in (type(layer).__name__, type(inner).__name__) or activation in SCORE_ACTIVATIONS:
            return "scores"
        return None
    try:
        producers = [_producer(t) for t in model.outputs]
    except (AttributeError, ValueError, TypeError):
        return {}
    by_layer = {layer.name: layer for layer in producers}
    kinds = {}
    for index, (new, old) in enumerate(zip(names, original)):
        layer = by_layer.get(old) or (producers[index] if len(producers) == len(names) else None)
        if layer is not None and kind_of(layer):
            kinds[new] = kind_of(layer)
    return kinds


def _producer(tensor):
    """The layer that made a symbolic output: `operation` in Keras 3, `layer` in Keras 2."""
    history = tensor._keras_history
    return getattr(history, "operation", None) or history.layer


DYNAMIC_PROBE = 32  # length given to a dynamic axis when a model must be called to be built


def _build_if_needed(model, specs) -> None:
    """Subclassed models create their weights on the first call: make it eagerly, with a size for
    dynamic axes that convolutions and pooling accept (1 would not)."""
    if getattr(model, "built", True):
        return
    probe = [np.zeros([1 if i == 0 and d is None else (d or DYNAMIC_PROBE) for i, d in enumerate(shape)],
                      dtype=dtype) for _, shape, dtype in specs]
    model(probe[0] if len(probe) == 1 else probe, training=False)


def _keras_source(model, recipe: Recipe, file: str, *, objects: dict | None = None, keras_module=None) -> Source:
    """Trace the model symbolically with the recipe's input signature: dynamic axes stay dynamic
    (a probe call with made-up sizes would break convolutions on a length-1 axis)."""
    tf = _tf()
    specs = _keras_input_specs(model, recipe, file)
    enter_stage("tracing the model")
    _build_if_needed(model, specs)
    signature = [tf.TensorSpec(shape, dtype, name=name) for name, shape, dtype in specs]

    def raw(*args):
        return model(args[0] if len(args) == 1 else list(args), training=False)

    structure = tf.function(raw, input_signature=signature).get_concrete_function().structured_outputs
    original = _output_names(model, structure)
    names, declared_kinds = apply_output_specs(original, recipe, file)

    def call(*args):
        result = raw(*args)
        flat = list(result.values()) if isinstance(result, dict) else tf.nest.flatten(result)
        return dict(zip(names, flat))

    function = tf.function(call, input_signature=signature)
    owner = tf.Module()
    # Keras 3 variables wrap a tf.Variable (`.value`); Keras 2's are tf.Variables (whose `.value` is a method)
    owner.variables_of_model = [v if isinstance(v, tf.Variable) else getattr(v, "value", v) for v in model.variables]
    owner.serve = function

    def reference(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = call(*[tf.constant(inputs[name]) for name, _, _ in specs])
        return {name: np.asarray(value) for name, value in result.items()}

    kinds = {**_keras_output_kinds(model, names, original), **declared_kinds}
    source = _concrete_source(function.get_concrete_function(), owner, specs, names, reference, kinds)
    if _recurrent_layers(model) and all(d is not None for _, shape, _ in specs for d in shape):
        source.unrolled = functools.cache(lambda: _unrolled_source(model, recipe, file, objects or {}, keras_module))
    return source


RECURRENT_LAYERS = ("LSTM", "GRU", "SimpleRNN", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D")


def _recurrent_layers(model) -> list[str]:
    try:
        return [layer.name for layer in model._flatten_layers() if type(layer).__name__ in RECURRENT_LAYERS]
    except AttributeError:
        return []


def _set_unroll(config):
    if isinstance(config, dict):
        if config.get("class_name") in RECURRENT_LAYERS and isinstance(config.get("config"), dict):
            config["config"]["unroll"] = True
        for value in config.values():
            _set_unroll(value)
    elif isinstance(config, list):
        for value in config:
            _set_unroll(value)


def _unrolled_source(model, recipe: Recipe, file: str, objects: dict, keras_module=None) -> "Source | None":
    """The same model rebuilt from its config with `unroll=True` on every recurrent layer and the
    same weights, by the Keras that read it. None when the model cannot be rebuilt from its config
    (subclassed)."""
    if keras_module is None:
        import keras as keras_module

    try:
        config = model.get_config()
        _set_unroll(config)
        with keras_module.utils.custom_object_scope(objects):
            twin = type(model).from_config(config)
        twin.set_weights(model.get_weights())
    except (NotImplementedError, TypeError, ValueError, KeyError):
        return None
    return _keras_source(twin, recipe, file, objects=objects, keras_module=keras_module)


def _batched(call, specs, names, batch):
    """The reference run, in steps of the pinned batch (a SavedModel may accept no other)."""
    tf = _tf()

    def reference(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = len(next(iter(inputs.values())))
        step = batch or count
        parts = [call(*[tf.constant(inputs[n][i:i + step]) for n, _, _ in specs])
                 for i in range(0, count - count % step, step)]
        return {n: np.concatenate([np.asarray(p[n]) for p in parts]) for n in names}
    return reference


def _saved_input_specs(recipe: Recipe, found: dict) -> list:
    """Inputs declared in the recipe, else the signature's own (name -> (shape, dtype)), sorted."""
    declared = recipe.model.inputs
    if declared:
        return [(name, list(spec.shape), spec.dtype) for name, spec in declared.items()]
    return [(name, _pin_batch(list(shape), recipe, False), dtype) for name, (shape, dtype) in sorted(found.items())]


def _unknown_signature(key: str, available, file: str) -> UserError:
    return UserError(f"the SavedModel has no signature {key!r}", file=file, key="model.signature",
                     expected=f"one of: {', '.join(sorted(available)) or '(none)'}")


def _saved_model_source(path: Path, recipe: Recipe, file: str) -> Source:
    """The object graph first (TF2 SavedModels); when TensorFlow cannot revive it (a SavedModel
    from an older TensorFlow/Keras, e.g. with a legacy optimizer and no tf-keras installed), the
    SignatureDef graph, which every SavedModel carries."""
    tf = _tf()
    key = recipe.model.signature or "serving_default"
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as err:  # TensorFlow raises many kinds here, all meaning "cannot revive"
        reason = describe_exception(err)
        return _signature_graph_source(path, recipe, file, key, reason)
    if key not in loaded.signatures:
        raise _unknown_signature(key, loaded.signatures, file)
    fn = loaded.signatures[key]
    found = {name: (list(spec.shape), spec.dtype.name) for name, spec in fn.structured_input_signature[1].items()}
    specs = _saved_input_specs(recipe, found)
    original = list(fn.structured_outputs)
    names, kinds = apply_output_specs(original, recipe, file)

    def call(*args):
        result = fn(**{name: arg for (name, _, _), arg in zip(specs, args)})
        return {new: result[old] for new, old in zip(names, original)}

    signature = [tf.TensorSpec(shape, dtype, name=name) for name, shape, dtype in specs]
    function = tf.function(call, input_signature=signature)
    batch = specs[0][1][0] if specs and specs[0][1] else None
    return _concrete_source(function.get_concrete_function(), loaded, specs, names,
                            _batched(call, specs, names, batch), kinds)


def _signature_graph_source(path: Path, recipe: Recipe, file: str, key: str, reason: str) -> Source:
    """Convert the SignatureDef's graph with the TF1 converter (it freezes the variables in a
    session, never reviving Python objects), then write the signature's own input and output
    names back into the .tflite: that converter names them after graph tensors."""
    tf = _tf()
    from tensorflow.python.saved_model import load_v1_in_v2, loader_impl

    try:
        saved = loader_impl.parse_saved_model(str(path))
        meta = next((m for m in saved.meta_graphs if "serve" in m.meta_info_def.tags), saved.meta_graphs[0])
        tags = list(meta.meta_info_def.tags)
        if key not in meta.signature_def:
            raise _unknown_signature(key, meta.signature_def, file)
        signature_def = meta.signature_def[key]
        loaded = load_v1_in_v2.load(str(path), tags)
        fn = loaded.signatures[key]
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"cannot load the SavedModel: as an object graph, {reason}; as a "
                        f"SignatureDef graph, {describe_exception(err)}", file=file, key="model.source",
                        hint="is the variables/ folder complete? was it written by this TensorFlow "
                             "or an older one?") from None
    found = {name: ([None if d.size < 0 else d.size for d in info.tensor_shape.dim],
                    tf.dtypes.as_dtype(info.dtype).name) for name, info in signature_def.inputs.items()}
    specs = _saved_input_specs(recipe, found)
    original = sorted(signature_def.outputs)
    names, kinds = apply_output_specs(original, recipe, file)
    tensor_of = {name: signature_def.inputs[name].name.split(":")[0] for name, _, _ in specs}

    def call(*args):
        result = fn(**{name: arg for (name, _, _), arg in zip(specs, args)})
        return {new: result[old] for new, old in zip(names, original)}

    def make_converter():
        return tf.compat.v1.lite.TFLiteConverter.from_saved_model(
            str(path), input_shapes={tensor_of[n]: shape for n, shape, _ in specs},
            signature_key=key, tag_set=set(tags))

    order = [next(n for n, t in tensor_of.items() if t == array) for array in make_converter().get_input_arrays()]
    output_tensor = {_tflite_tensor_name(signature_def.outputs[old].name): new for new, old in zip(names, original)}

    def finish(model_bytes: bytes) -> bytes:
        return write_signature(model_bytes, key, order, output_tensor)

    batch = specs[0][1][0] if specs and specs[0][1] else None
    source = Source(specs, names, make_converter, lambda: meta.graph_def,
                    _batched(call, specs, names, batch), kinds, calibration_order=order, finish=finish)
    source.notes.append(f"TensorFlow {tf.__version__} cannot revive this SavedModel's objects ({reason}): "
                        f"converted from its SignatureDef graph {key!r} instead, keeping its names")
    return source


def _tflite_tensor_name(graph_tensor: str) -> str:
    """`StatefulPartitionedCall:0` in the graph is `StatefulPartitionedCall` in the .tflite."""
    name, _, index = graph_tensor.partition(":")
    return name if index in ("", "0") else graph_tensor


def write_signature(model_bytes: bytes, key: str, inputs: list[str], outputs: dict[str, str]) -> bytes:
    """A copy of the model with one SignatureDef: subgraph inputs in order take the names in
    `inputs`; outputs are renamed by their current tensor name (`outputs`: tensor -> new name)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    graph = model.subgraphs[0]

    def tensor_map(name: str, index: int):
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = name, int(index)
        graph.tensors[int(index)].name = name
        return entry

    current = [graph.tensors[int(i)].name.decode() if isinstance(graph.tensors[int(i)].name, bytes)
               else graph.tensors[int(i)].name for i in graph.outputs]
    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = key, 0
    signature.inputs = [tensor_map(name, index) for name, index in zip(inputs, graph.inputs)]
    signature.outputs = [tensor_map(outputs.get(name, name), index) for name, index in zip(current, graph.outputs)]
    model.signatureDefs = [signature]
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def load_source(recipe: Recipe, root: Path, file: str) -> Source:
    spec = recipe.model.source
    enter_stage("loading the model")
    if spec.startswith("py:"):
        factory = load_object(spec[3:], file=file, key="model.source")
        return _keras_source(factory(), recipe, file, objects=_custom_objects(recipe, file))
    path = root / spec
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return _saved_model_source(path, recipe, file)
        raise UserError("directory is not a SavedModel (no saved_model.pb)", file=file, key="model.source")
    if path.suffix in (".keras", ".h5", ".hdf5"):
        loaded = _load_keras_file(path, recipe, file)
        source = _keras_source(loaded.model, recipe, file, objects=_custom_objects(recipe, file),
                               keras_module=loaded.keras)
        source.notes += loaded.notes
        source.warnings += loaded.warnings
        source.keras3_twin = loaded.keras3_twin
        return source
    raise UserError(f"unsupported model source {spec!r}", file=file, key="model.source",
                    expected=".keras, .h5, a SavedModel directory, or py:package.module:function")


# ---------------------------------------------------------------- converting

def _converter(source: Source, target: Target, calibration: dict[str, np.ndarray] | None):
    tf = _tf()
    converter = source.make_converter()
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
    """Calibration samples keyed by input name, so that each reaches its own input whatever order
    the converter gives the inputs (positional, in the converter's order, where it lost names)."""
    step = _batch(source)
    count = len(next(iter(calibration.values())))
    dtypes = {name: dtype for name, _, dtype in source.input_specs}

    def samples():
        for start in range(0, count - count % step, step):
            sample = {name: calibration[name][start:start + step].astype(dtypes[name]) for name in dtypes}
            yield sample if source.calibration_order is None else [sample[n] for n in source.calibration_order]
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
        return (f"integer quantization failed{where}: {line.strip()}; try quantize: dynamic, "
                "or io: float32, or check the calibration data")
    errors = [l.split("error:", 1)[1].strip() for l in text.splitlines() if "error:" in l]
    return f"conversion failed{where}: {errors[0] if errors else text.strip().splitlines()[0]}"


FLEX_CALIBRATION = "not supported by this interpreter"


def convert_target(source: Source, target: Target, calibration, target_name: str) -> tuple[bytes, list[str]]:
    """The .tflite bytes, and warnings about how they were made (integer targets: every layer
    quantized)."""
    if target.quantize in ("int8", "int16x8"):
        calibrated = calibrate_target(source, target, calibration, target_name)
        return calibrated.quantize(), calibrated.warnings
    enter_stage("converting")
    with _conversion_errors(target, target_name):
        return source.finish(_converter(source, target, calibration).convert()), source.warnings


@contextlib.contextmanager
def _conversion_errors(target: Target, target_name: str):
    """The converter raises many types, all with the same MLIR text: one ConversionFailed that
    says what to change."""
    try:
        yield
    except ConversionFailed:
        raise
    except Exception as err:
        text = str(err)
        if target.quantize in ("int8", "int16x8") and FLEX_CALIBRATION in text and "Select TensorFlow op" in text:
            raise ConversionFailed(
                f"quantize: {target.quantize} needs calibration, which runs the model in LiteRT's "
                "builtin interpreter, and this model needs Flex (select TF) ops it cannot run: set "
                f"targets.{target_name}.quantize to dynamic or float16 (Flex ops stay float), or "
                "replace the op") from None
        raise ConversionFailed(explain_converter_error(text)) from None


@dataclass
class Calibrated:
    """An integer target calibrated once and quantized as often as asked: calibration (running
    the calibration data through the model) is what a conversion costs, a quantization pass is
    milliseconds, so the float-fallback search tries sets of float layers for little."""
    model: bytes  # float ops carrying calibration statistics: the per-layer reference
    quantize: Callable[..., bytes]  # (ops kept in float, op types kept in float) -> .tflite bytes
    warnings: list[str]


def calibrate_target(source: Source, target: Target, calibration, target_name: str) -> Calibrated:
    """TensorFlow's own calibrate-only switch (what tf.lite.experimental.QuantizationDebugger
    uses), then the quantizer the converter itself would call on the result."""
    tf = _tf()
    enter_stage("converting and calibrating")
    source = _calibratable(source, target, target_name)
    with _conversion_errors(target, target_name):
        converter = _converter(source, target, calibration)
        converter._experimental_calibrate_only = True
        converter.inference_input_type = converter.inference_output_type = tf.float32  # float ops
        calibrated = converter.convert()

    def quantize(nodes=(), op_types=()) -> bytes:
        with _conversion_errors(target, target_name):
            return source.finish(_quantize(calibrated, target, list(nodes), list(op_types)))
    return Calibrated(calibrated, quantize, source.warnings)


def _quantize(calibrated: bytes, target: Target, nodes: list[str], op_types: list[str]) -> bytes:
    """The calibrated model quantized as `TFLiteConverter.convert` does it: the MLIR quantizer for
    int8 (which keeps the denylisted ops and op types in float), TensorFlow's older quantizer for
    int16x8 (the MLIR one writes int16 zero points LiteRT refuses, and it has no denylist)."""
    tf = _tf()
    from tensorflow.lite.python import convert as tf_convert
    from tensorflow.lite.python import util
    from tensorflow.lite.python.lite import _deduplicate_readonly_buffers

    io = {"int8": tf.int8, "uint8": tf.uint8, "int16": tf.int16}.get(target.io, tf.float32)
    if target.quantize == "int8":
        model = tf_convert.mlir_quantize(calibrated, False, input_data_type=io, output_data_type=io,
                                         denylisted_nodes=nodes or None, denylisted_ops=op_types or None)
    else:
        from tensorflow.lite.python.optimize import calibrator

        def number(dtype) -> int:
            return np.dtype(dtype.as_numpy_dtype()).num
        wrapper = calibrator.Calibrator(calibrated)._calibrator  # the statistics are in the model
        model = wrapper.QuantizeModel(number(io), number(io), target.select_tf_ops, number(tf.int16),
                                      number(tf.int64), False, False)
        if io == tf.int16:
            model = util.modify_model_io_type(model, io, io)
    return _deduplicate_readonly_buffers(model)


def _calibratable(source: Source, target: Target, target_name: str) -> Source:
    """Integer calibration runs the float model in LiteRT, whose calibrator crashes (SIGSEGV) on
    WHILE loops. Recurrent Keras layers are unrolled when the sequence length is static; any other
    loop is refused here, before converting, with the settings that do work."""
    if not source.has_loop:
        return source
    twin = source.unrolled() if source.unrolled is not None else None
    if twin is not None and not twin.has_loop:
        unrolled = ("recurrent layers were unrolled over their fixed sequence length so that "
                    "integer calibration can run; the file grows with that length")
        if unrolled not in twin.warnings:  # the twin is shared by the recipe's integer targets
            twin.warnings.append(unrolled)
        return twin
    dynamic = [(name, shape) for name, shape, _ in source.input_specs if None in shape[1:]]
    fix = f"set targets.{target_name}.quantize to dynamic or float16"
    if dynamic:
        pins = ", ".join(f"{name}: {{shape: [1, {', '.join('N' if d is None else str(d) for d in shape[1:])}]}}"
                         for name, shape in dynamic)
        fix = (f"pin the sequence length in model.inputs ({pins}, N the length the app feeds) so that "
               f"recurrent layers are unrolled, or {fix}")
    raise ConversionFailed(f"quantize: {target.quantize} cannot calibrate a model with a loop (a "
                           f"recurrent layer or tf.while_loop): LiteRT's calibrator does not run "
                           f"WHILE ops; {fix}")


# ---------------------------------------------------------------- one job

def _data(recipe: Recipe, root: Path, file: str, source: Source, which: str) -> tuple[dict | None, object]:
    return data_mod.recipe_arrays(recipe, root, file, source.input_specs, _batch(source), which)


def _evaluation_set(recipe: Recipe, root: Path, file: str, source: Source):
    return data_mod.evaluation_set(recipe, root, file, source.input_specs, _batch(source))


def describe_exception(err: BaseException) -> str:
    """`Type: the first line that says something`, whole, never cut mid-word. Skips Keras'
    `Exception encountered when calling X.call().` preamble (kept as `in X.call()`), its
    `Error when deserializing class X using config=...` preamble (whose `Exception encountered:`
    line is the cause) and autograph's `in user code:` stack, whose last `SomeError: ...` line is
    the real cause."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # Keras bolds names with terminal escapes
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    kind = type(err).__name__
    if lines and lines[0] == "in user code:":
        causes = [re.match(r"^(\w+(?:Error|Exception)): (.*)$", line) for line in lines[1:]]
        found = [match for match in causes if match]
        if found:
            kind, rest = found[-1].group(1), found[-1].group(2)
            lines = [rest] + lines[lines.index(found[-1].group(0)) + 1:]
    where = ""
    deserializing = re.match(r"^Error when deserializing class '([^']+)'", lines[0]) if lines else None
    inner = [line for line in lines if line.startswith("Exception encountered: ")]
    if deserializing and inner:  # Keras' own cause is the last `Exception encountered:` of the chain
        lines = [inner[-1].removeprefix("Exception encountered: ")]
        where = f" (rebuilding a {deserializing.group(1)})"
    if lines and lines[0].startswith("Exception encountered when calling"):
        where = " (in " + lines.pop(0).removeprefix("Exception encountered when calling").strip(" .") + ")"
    meaningful = next((line for line in lines if not line.startswith(("Arguments received", "•"))), "")
    return f"{kind}: {meaningful}{where}" if meaningful else f"{kind}{where}"


def _keras3_drift(source: Source, inputs: dict[str, np.ndarray], reference: dict, kinds: dict) -> str:
    """How far Keras 3's reading of a Keras 2 file is from Keras 2's, on the evaluation data: the
    difference a build with Keras 3 would have verified against, and passed."""
    tf = _tf()
    try:
        twin = source.keras3_twin()
        args = [inputs[name] for name in source.input_names]
        result = twin(args[0] if len(args) == 1 else args, training=False)
        flat = list(result.values()) if isinstance(result, dict) else tf.nest.flatten(result)
        theirs = {name: np.asarray(value) for name, value in zip(source.output_names, flat)}
        metrics = verify.compare(reference, theirs, None, kinds)["outputs"]
    except Exception as err:  # Keras 3 cannot read or run it: only tf-keras's reading exists
        cause = err.message if isinstance(err, UserError) else f"Keras 3 cannot run it: {describe_exception(err)}"
        return f"{cause}; built from tf-keras's reading"
    worst = max(m["max_abs_error"] for m in metrics.values())
    agreement = [f"top-1 agreement{' per frame' if m.get('positions') else ''} {m['top1_agreement']:.3f}"
                 for m in metrics.values() if "top1_agreement" in m]
    if worst <= 1e-4:
        return f"Keras 3 reads this Keras 2 file the same way (max difference {worst:.2g})"
    return (f"Keras 3 reads this Keras 2 file differently: max difference {worst:.3g}"
            f"{', ' + ', '.join(agreement) if agreement else ''} on the evaluation data; built from "
            "tf-keras's reading, which is what its authors' Keras computed")


def _labels_count(recipe: Recipe, root: Path) -> int | None:
    if recipe.mobile is None or recipe.mobile.labels is None:
        return None
    try:
        text = (root / recipe.mobile.labels).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return len([line for line in text.splitlines() if line.strip()])


def run_job(job: dict, emit: Callable[[dict], None]) -> None:
    """Convert, verify and stage every target of one recipe; report each as it finishes."""
    recipe = Recipe.model_validate(job["recipe"])
    root, file = Path(job["root"]), job["file"]
    started = time.perf_counter()

    def phase(target: str | None, what: str) -> None:
        enter_stage(what)
        emit({"event": "phase", "target": target, "phase": what})

    phase(None, "loading the model")
    source = load_source(recipe, root, file)
    for note in source.notes:
        emit({"event": "note", "message": note})
    enter_stage("reading the data")
    calibration, _ = _data(recipe, root, file, source, "calibration")
    eval_inputs, labels, eval_from = _evaluation_set(recipe, root, file, source)
    loaded = time.perf_counter()
    phase(None, "running the source model on the evaluation data")
    verify.load_runtime()
    imported = time.perf_counter()
    reference = source.reference(eval_inputs)
    kinds = verify.output_kinds(reference, source.output_kinds, _labels_count(recipe, root))
    if source.keras3_twin is not None:
        phase(None, "comparing with Keras 3's reading of the file")
        note = _keras3_drift(source, eval_inputs, reference, kinds)
        source.notes.append(note)
        emit({"event": "note", "message": note})
    shared = {"load_s": round(loaded - started, 3), "runtime_import_s": round(imported - loaded, 3),
              "reference_s": round(time.perf_counter() - imported, 3)}
    described = {item["name"]: metadata.prepare(recipe, item["recipe"], item["name"], source.input_specs,
                                                reference, kinds, root, file)
                 for item in job["targets"]}  # a metadata mistake stops the job before any conversion
    for item in job["targets"]:
        emit({"event": "started", "target": item["name"]})
        began = time.perf_counter()
        try:
            result = _build_target(recipe, item, source, calibration, (eval_inputs, labels, eval_from),
                                   reference, kinds, shared, phase, (root, file), described[item["name"]])
            emit({"event": "done", "target": item["name"], "result": result,
                  "seconds": time.perf_counter() - began})
        except ConversionFailed as err:
            emit({"event": "failed", "target": item["name"], "message": f"while {STAGE['now']}: {err}",
                  "seconds": time.perf_counter() - began})
        except UserError:
            raise
        except Exception as err:  # a bug, or TensorFlow failing on this model: this target only
            fault = machine_fault(err, root, item["stage"])
            if fault is not None:  # a full disk or a read-only folder: not the converter's crash
                emit({"event": "failed", "target": item["name"], "message": f"while {STAGE['now']}: {fault}",
                      "seconds": time.perf_counter() - began, "machine_fault": True})
                continue
            traceback.print_exc()
            emit({"event": "crashed", "target": item["name"], "stage": STAGE["now"],
                  "message": describe_exception(err)})


def _build_target(recipe: Recipe, item: dict, source: Source, calibration, evaluation: tuple,
                  reference, kinds: dict[str, str], shared_timings: dict, phase: Callable,
                  where: tuple[Path, str] = (Path("."), ""), described: metadata.Prepared | None = None) -> dict:
    """Convert, verify and stage one target. Shared timings (model load, source-model run on the
    evaluation data) are paid once per recipe and reported with every target. Integer targets are
    calibrated once, measured layer by layer, and given their float fallback (fallback.apply).
    TFLite metadata is written before the file is staged and verified: what ships is what passed."""
    target = recipe.targets[item["name"]]
    eval_inputs, labels, eval_from = evaluation
    thresholds, user_set = verify.effective_thresholds(
        target.quantize, recipe.accept and recipe.accept.model_dump(), target.accept and target.accept.model_dump())
    started = time.perf_counter()
    timings: dict = {}
    extra: dict = {}
    fallback_failures: list[str] = []
    if target.quantize in ("int8", "int16x8"):
        calibrated = calibrate_target(source, target, calibration, item["name"])
        conversion_warnings = calibrated.warnings
        timings["convert_s"] = time.perf_counter() - started
        phase(item["name"], "quantizing" if target.float_fallback != "auto" else "choosing float layers")

        def check(candidate: bytes) -> tuple[dict, list[str]]:
            metrics, _, _ = verify.measure(candidate, verify.signature(candidate), eval_inputs, labels,
                                           reference, _batch(source), kinds)
            metrics["float_ops"] = verify.float_ops(candidate)
            return metrics, verify.judge(metrics, thresholds, len(candidate) / 1024, None)
        context = fallback.Context(where[1], item["recipe"], recipe, item["name"], item["key"],
                                   item.get("float_fallback_before"))
        model_bytes, extra, fallback_failures = fallback.apply(calibrated, check, eval_inputs, _batch(source),
                                                               context)
        timings["layers_and_fallback_s"] = time.perf_counter() - started - timings["convert_s"]
    else:
        model_bytes, conversion_warnings = convert_target(source, target, calibration, item["name"])
        timings["convert_s"] = time.perf_counter() - started
    model_bytes, metadata_report, metadata_warnings = metadata.embed(model_bytes, described)
    enter_stage("writing the outputs")
    stage = Path(item["stage"])
    stage.mkdir(parents=True, exist_ok=True)
    (stage / target.output).write_bytes(model_bytes)
    phase(item["name"], "verifying in LiteRT")
    verify_started = time.perf_counter()
    golden_count = recipe.mobile.golden_samples if recipe.mobile else 3
    report = verify_model(model_bytes, eval_inputs, labels, reference, thresholds, user_set,
                          batch=_batch(source), golden_count=golden_count, kinds=kinds,
                          integer=target.quantize in ("int8", "int16x8"))
    report.update({
        "recipe": item["recipe"], "target": item["name"], "quantize": target.quantize, "io": target.io,
        "select_tf_ops": target.select_tf_ops, "evaluated_on": eval_from, "versions": item["versions"],
        "model_file": target.output, "model_sha256": sha256_bytes(model_bytes),
        "size_bytes": len(model_bytes), "thresholds": thresholds, "output_kinds": kinds,
        "notes": source.notes, **extra,
    })
    if metadata_report is not None:
        report["metadata"] = metadata_report
        conversion_warnings = conversion_warnings + metadata_warnings
    if "float_fallback" in extra:
        if report["float_fallback"]["mode"] == "auto":  # what the state and the lock may record
            report["float_fallback"]["passed"] = report["verdict"] == "passed" and not fallback_failures
        kept = fallback.describe(report["float_fallback"], report.get("layer_errors") or [])
        if kept and not fallback_failures:
            conversion_warnings = conversion_warnings + [kept]
    if fallback_failures:
        report["verdict"] = "rejected"
        report["failures"] = report["failures"] + fallback_failures
    report["warnings"] = conversion_warnings + report["warnings"]
    timings["verify_s"] = time.perf_counter() - verify_started
    private: list[str] = []
    if target.quantize in ("int8", "int16x8"):
        private = _analysis_inputs(stage, calibrated, report)
        if report["verdict"] == "rejected" and "layer_errors" not in report:  # the diagnosis it needs
            phase(item["name"], "measuring per-layer errors")
            layers_started = time.perf_counter()
            report["layer_errors"] = fallback.layer_rows(calibrated.model, calibrated.quantize(), eval_inputs,
                                                         _batch(source), report["float_fallback"]["layers"])
            timings["layers_s"] = time.perf_counter() - layers_started
    report["timings"] = {**{k: round(v, 3) for k, v in timings.items()}, **shared_timings}
    golden = report.pop("golden", None)
    files = [target.output, "report.json"]
    (stage / "report.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    if golden is not None:
        (stage / "golden.json").write_text(json.dumps(golden) + "\n")
        files.append("golden.json")
    return {"files": files, "verdict": report["verdict"], "failures": report["failures"],
            "warnings": report["warnings"], "timings": report["timings"], "private": private}


def _analysis_inputs(stage: Path, calibrated: Calibrated, report: dict) -> list[str]:
    """What per-layer figures measured later need, written beside the outputs for the parent to
    keep under .tfbuild/ (never shipped): the calibrated float model, and the fully quantized one
    when the shipped file keeps layers in float."""
    from tfbuild.analysis import CALIBRATED, FULLY_QUANTIZED

    (stage / CALIBRATED).write_bytes(calibrated.model)
    if not report["float_fallback"]["layers"]:
        return [CALIBRATED]
    (stage / FULLY_QUANTIZED).write_bytes(calibrated.quantize())
    return [CALIBRATED, FULLY_QUANTIZED]


def _batch(source: Source) -> int:
    shape = source.input_specs[0][1]
    return (shape[0] if shape else None) or 1


def verify_model(model_bytes: bytes, eval_inputs, labels, reference, thresholds: dict,
                 user_set: bool, batch: int, golden_count: int = 3, kinds: dict | None = None,
                 integer: bool = False) -> dict:
    """Report dict with verdict passed / rejected / unverified, and its failures and warnings.
    An integer target also says which of its ops still compute in float (`float_ops`)."""
    size_kb = len(model_bytes) / 1024
    warnings: list[str] = []
    signature = verify.signature(model_bytes)
    if integer:
        found = verify.float_ops(model_bytes)
        warnings += _float_ops_warning(found)
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
    metrics, raw_in, raw_out = verify.measure(model_bytes, signature, eval_inputs, labels, reference, batch, kinds)
    if integer:
        metrics["float_ops"] = found
    used = metrics["samples"]
    latency = verify.median_latency_ms(model_bytes, signature, eval_inputs, int(thresholds["latency_runs"]),
                                       int(thresholds["latency_threads"]))
    failures = verify.judge(metrics, thresholds, size_kb, latency)
    golden_count = min(golden_count, used)
    golden = {"count": golden_count,
              "inputs": {k: v[:golden_count].tolist() for k, v in raw_in.items()},
              "outputs": {k: v[:golden_count].tolist() for k, v in raw_out.items()}}
    return {"verdict": "rejected" if failures else "passed", "failures": failures, "warnings": warnings,
            "metrics": metrics, "latency_ms": round(latency, 4), "signature": signature,
            "uses_flex": False, "golden": golden, **({"float_ops": found} if integer else {})}


def _float_ops_warning(found: dict) -> list[str]:
    if not found["count"]:
        return []
    return [f"{found['count']} op(s) still compute in float ({verify.float_op_types(found)}): an int8-only NPU, DSP, Edge TPU "
            "or microcontroller runs them on the CPU or refuses the model; accept.max_float_ops: 0 "
            "makes that a failure"]
