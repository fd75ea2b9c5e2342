"""Source kind: a SavedModel directory (TF2 object graphs, and older ones by their SignatureDef)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tfbuild.conversion.source import Source, apply_output_specs, pin_batch
from tfbuild.conversion.kind import Kind
from tfbuild.conversion.tf import tensorflow
from tfbuild.conversion.tflite_converter import TFGraph, concrete_source
from tfbuild.errors import UserError, describe_exception

if TYPE_CHECKING:
    import numpy as np

    from tfbuild.recipe import ModelSection, Recipe

NOT_A_SAVED_MODEL = "directory is not a SavedModel (no saved_model.pb)"


def _matches(model: "ModelSection", path: Path | None) -> bool:
    return path is not None and path.is_dir()


def _check(path: Path) -> str | None:
    return None if (path / "saved_model.pb").is_file() else NOT_A_SAVED_MODEL


def _load(recipe: "Recipe", root: Path, file: str) -> Source:
    path = root / recipe.model.source
    problem = _check(path)
    if problem:
        raise UserError(problem, file=file, key="model.source")
    return _saved_model_source(path, recipe, file)


KIND = Kind("saved-model", "a SavedModel directory", _matches, _load, check=_check)


def _batched(call, specs, names, batch):
    """The reference run, in steps of the pinned batch (a SavedModel may accept no other)."""
    import numpy as np

    tf = tensorflow()

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
    return [(name, pin_batch(list(shape), recipe, False), dtype) for name, (shape, dtype) in sorted(found.items())]


def _unknown_signature(key: str, available, file: str) -> UserError:
    return UserError(f"the SavedModel has no signature {key!r}", file=file, key="model.signature",
                     expected=f"one of: {', '.join(sorted(available)) or '(none)'}")


def _saved_model_source(path: Path, recipe: Recipe, file: str) -> Source:
    """The object graph first (TF2 SavedModels); when TensorFlow cannot revive it (a SavedModel
    from an older TensorFlow/Keras, e.g. with a legacy optimizer and no tf-keras installed), the
    SignatureDef graph, which every SavedModel carries."""
    tf = tensorflow()
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
    return concrete_source(function.get_concrete_function(), loaded, specs, names,
                            _batched(call, specs, names, batch), kinds)


def _signature_graph_source(path: Path, recipe: Recipe, file: str, key: str, reason: str) -> Source:
    """Convert the SignatureDef's graph with the TF1 converter (it freezes the variables in a
    session, never reviving Python objects), then write the signature's own input and output
    names back into the .tflite: that converter names them after graph tensors."""
    tf = tensorflow()
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
    graph = TFGraph(make_converter, lambda: meta.graph_def, calibration_order=order, finish=finish)
    source = Source(specs, names, _batched(call, specs, names, batch), graph, kinds)
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
