"""A Keras model (Keras 3, or Keras 2 read by tf-keras) traced into a `Source`.

Shared by the source kinds that produce Keras models: Keras files (keras_file) and py: factories
(factory). Tracing uses the recipe's input signature so that dynamic axes stay dynamic; outputs
become a dict keyed by output name, so the .tflite signature keeps the names; and the object
that owns the variables is handed to the converter (without it Keras 3 variables are not frozen
and the file outputs NaN). Recurrent models get an unrolled twin for integer calibration.
"""

from __future__ import annotations

import functools

import numpy as np

from tfbuild.conversion.source import Source, apply_output_specs, pin_batch
from tfbuild.conversion.tf import tensorflow
from tfbuild.conversion.tflite_converter import concrete_source
from tfbuild.errors import UserError
from tfbuild.jobs import enter_stage
from tfbuild.recipe import Recipe
from tfbuild.registry import load_object


def custom_objects(recipe: Recipe, file: str) -> dict:
    objects = {}
    for name, spec in recipe.model.custom_objects.items():
        obj = load_object(spec, file=file, key=f"model.custom_objects.{name}")
        objects[name] = obj
        objects.setdefault(name.rsplit(">", 1)[-1], obj)
    return objects


def keras_builtin(name: str) -> bool:
    """A layer or function Keras itself provides (a GRU inside Bidirectional, a Dense inside
    TimeDistributed): never a registry entry the user forgot."""
    import keras

    return hasattr(keras.layers, name) or hasattr(keras.activations, name)


def _keras_input_specs(model, recipe: Recipe, file: str) -> list[tuple[str, list, str]]:
    declared = recipe.model.inputs
    if declared:
        specs: list[tuple[str, list, str]] = [(name, list(spec.shape), spec.dtype) for name, spec in declared.items()]
    else:
        try:
            tensors = list(model.inputs)
        except (AttributeError, ValueError):
            tensors = []
        if not tensors:
            raise UserError("the model does not declare its inputs (a subclassed model?)", file=file,
                            key="model.inputs",
                            expected="inputs: {name: {shape: [1, 28, 28], dtype: float32}}")
        specs = [(t.name, list(t.shape), str(getattr(t.dtype, "name", t.dtype))) for t in tensors]
    return [(name, pin_batch(shape, recipe, declared is not None), dtype) for name, shape, dtype in specs]



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
    kinds: dict[str, str] = {}
    for index, (new, old) in enumerate(zip(names, original)):
        layer = by_layer.get(old) or (producers[index] if len(producers) == len(names) else None)
        kind = kind_of(layer) if layer is not None else None
        if kind:
            kinds[new] = kind
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


def keras_source(model, recipe: Recipe, file: str, *, objects: dict | None = None, keras_module=None) -> Source:
    """Trace the model symbolically with the recipe's input signature: dynamic axes stay dynamic
    (a probe call with made-up sizes would break convolutions on a length-1 axis)."""
    tf = tensorflow()
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
    unrolled = None
    if _recurrent_layers(model) and all(d is not None for _, shape, _ in specs for d in shape):
        unrolled = functools.cache(lambda: _unrolled_source(model, recipe, file, objects or {}, keras_module))
    return concrete_source(function.get_concrete_function(), owner, specs, names, reference, kinds,
                           unrolled=unrolled)


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
        import keras

        keras_module = keras
    try:
        config = model.get_config()
        _set_unroll(config)
        with keras_module.utils.custom_object_scope(objects):
            twin = type(model).from_config(config)
        twin.set_weights(model.get_weights())
    except (NotImplementedError, TypeError, ValueError, KeyError):
        return None
    return keras_source(twin, recipe, file, objects=objects, keras_module=keras_module)
