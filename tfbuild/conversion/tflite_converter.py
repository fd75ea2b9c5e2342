"""TensorFlow's converter and quantizers, driven by a quantization mode (conversion.modes).

`TFGraph` is the backend of every TensorFlow source kind (Keras files, SavedModels, py:
factories): the converter reads a traced graph, a mode's settings say how to quantize it, and
integer modes are calibrated once (`Calibrated`) so that the float-fallback search can quantize
the same statistics many times for little.
"""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from tfbuild.conversion import modes
from tfbuild.conversion.source import Arrays, Calibrated, Source
from tfbuild.conversion.tf import tensorflow
from tfbuild.errors import ConversionFailed
from tfbuild.jobs import enter_stage
from tfbuild.recipe import Target


@dataclass
class TFGraph:
    """A source as TensorFlow's converter reads it."""
    make_converter: Callable[[], Any]  # a fresh TFLiteConverter, before any settings
    graph_def: Callable[[], Any]  # the TensorFlow graph the converter reads
    # A twin source whose recurrent layers are unrolled (static sequence length): plain ops that
    # integer calibration can run, where a WHILE loop crashes the calibrator.
    unrolled: Callable[[], "Source | None"] | None = None
    # Converters that lose names (the TF1 SignatureDef path) take positional samples in this order
    # and get their signature written back by `finish`.
    calibration_order: list[str] | None = None
    finish: Callable[[bytes], bytes] = field(default=lambda model_bytes: model_bytes)

    @functools.cached_property
    def has_loop(self) -> bool:
        """Whether the graph (or a function it calls) holds a While loop (walked once per source,
        however many integer targets ask)."""
        graph = self.graph_def()
        ops = {node.op for node in graph.node}
        for function in graph.library.function:
            ops.update(node.op for node in function.node_def)
        return bool(ops & {"While", "StatelessWhile"})

    def convert(self, source: Source, target: Target, calibration: Arrays | None,
                target_name: str) -> tuple[bytes, list[str]]:
        """The .tflite bytes, and warnings about how they were made (a calibrating mode: every
        layer quantized)."""
        if modes.mode(target.quantize).calibrates:
            calibrated = self.calibrate(source, target, calibration, target_name)
            return calibrated.quantize(), calibrated.warnings
        enter_stage("converting")
        with _conversion_errors(target, target_name):
            return self.finish(_converter(source, target, calibration).convert()), source.warnings

    def calibrate(self, source: Source, target: Target, calibration: Arrays | None,
                  target_name: str) -> Calibrated:
        """TensorFlow's own calibrate-only switch (what tf.lite.experimental.QuantizationDebugger
        uses), then the quantizer the converter itself would call on the result."""
        tf = tensorflow()
        enter_stage("converting and calibrating")
        source = _calibratable(source, self, target, target_name)
        graph = _graph(source)
        with _conversion_errors(target, target_name):
            converter = _converter(source, target, calibration)
            converter._experimental_calibrate_only = True
            converter.inference_input_type = converter.inference_output_type = tf.float32  # float ops
            calibrated = converter.convert()

        def quantize(nodes=(), op_types=()) -> bytes:
            with _conversion_errors(target, target_name):
                return graph.finish(_quantize(calibrated, target, list(nodes), list(op_types)))
        return Calibrated(calibrated, quantize, source.warnings)


def _graph(source: Source) -> TFGraph:
    assert isinstance(source.backend, TFGraph), "a TensorFlow source"
    return source.backend


def concrete_source(concrete, owner, specs, names, reference, kinds, *,
                    unrolled: Callable[[], Source | None] | None = None) -> Source:
    """A source traced to one concrete function: the converter reads it with the object that owns
    its variables (without the owner, Keras 3 variables are not frozen and the file outputs NaN)."""
    def make_converter():
        return tensorflow().lite.TFLiteConverter.from_concrete_functions([concrete], owner)
    return Source(specs, names, reference, TFGraph(make_converter, concrete.graph.as_graph_def, unrolled), kinds)


def _converter(source: Source, target: Target, calibration: Arrays | None):
    """A fresh converter with the target's mode settings, calibration data and I/O types."""
    tf = tensorflow()
    mode = modes.mode(target.quantize)
    graph = _graph(source)
    converter = graph.make_converter()
    ops = mode.settings(converter, tf)
    if mode.calibrates:
        converter.representative_dataset = _representative(source, graph, calibration or {})
        io_type = _io_dtype(target.io)
        if io_type is not None:
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
    if target.select_tf_ops:
        ops = [*ops, tf.lite.OpsSet.SELECT_TF_OPS]
        if tf.lite.OpsSet.TFLITE_BUILTINS not in ops:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
    converter.target_spec.supported_ops = ops
    return converter


def _io_dtype(io: str):
    """TensorFlow's dtype for an integer I/O type (None for float32)."""
    tf = tensorflow()
    return {"int8": tf.int8, "uint8": tf.uint8, "int16": tf.int16}.get(io)


def _representative(source: Source, graph: TFGraph, calibration: Arrays):
    """Calibration samples keyed by input name, so that each reaches its own input whatever order
    the converter gives the inputs (positional, in the converter's order, where it lost names)."""
    step = source.batch
    count = len(next(iter(calibration.values())))
    dtypes = {name: dtype for name, _, dtype in source.input_specs}

    def samples():
        for start in range(0, count - count % step, step):
            sample = {name: calibration[name][start:start + step].astype(dtypes[name]) for name in dtypes}
            yield sample if graph.calibration_order is None else [sample[n] for n in graph.calibration_order]
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
        if modes.mode(target.quantize).calibrates and FLEX_CALIBRATION in text and "Select TensorFlow op" in text:
            raise ConversionFailed(
                f"quantize: {target.quantize} needs calibration, which runs the model in LiteRT's "
                "builtin interpreter, and this model needs Flex (select TF) ops it cannot run: set "
                f"targets.{target_name}.quantize to dynamic or float16 (Flex ops stay float), or "
                "replace the op") from None
        raise ConversionFailed(explain_converter_error(text)) from None


def _quantize(calibrated: bytes, target: Target, nodes: list[str], op_types: list[str]) -> bytes:
    """The calibrated model quantized as `TFLiteConverter.convert` does it: the MLIR quantizer for
    int8 (which keeps the denylisted ops and op types in float), TensorFlow's older quantizer for
    int16x8 (the MLIR one writes int16 zero points LiteRT refuses, and it has no denylist)."""
    tf = tensorflow()
    from tensorflow.lite.python import convert as tf_convert
    from tensorflow.lite.python import util
    from tensorflow.lite.python.lite import _deduplicate_readonly_buffers
    import numpy as np

    io = _io_dtype(target.io) or tf.float32
    if modes.mode(target.quantize).quantizer == "mlir":
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


def _calibratable(source: Source, graph: "TFGraph", target: Target, target_name: str) -> Source:
    """Integer calibration runs the float model in LiteRT, whose calibrator crashes (SIGSEGV) on
    WHILE loops. Recurrent Keras layers are unrolled when the sequence length is static; any other
    loop is refused here, before converting, with the settings that do work."""
    if not graph.has_loop:
        return source
    twin = graph.unrolled() if graph.unrolled is not None else None
    if twin is not None and not _graph(twin).has_loop:
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
