"""PyTorch models as sources: load, name, run and convert them through maintained tools only.

A torch source is a `torch.nn.Module` (from a `py:package.module:factory`) or a saved
`torch.export` program (`.pt2`). Whatever torch calls its arguments and returns, the module is
wrapped so that it takes the recipe's input names as keyword arguments and returns a dict keyed by
the output names: litert-torch turns `sample_kwargs` keys into the .tflite signature's input names
and a returned dict's keys into its output names, so the names the loaders see are the recipe's.
The same wrapped module is the reference that verification compares against.

Conversion is `litert_torch.convert` for the float file; every quantized mode is an
ai-edge-quantizer recipe applied to that float file (`Quantizer`, `calibrate`, `quantize`), never
a quantizer of our own. Integer I/O types are chosen in the quantizer recipe through its virtual
INPUT/OUTPUT ops, which is also how layers are kept in float (`no_quantize`).

No TensorFlow here, and torch, litert-torch and ai-edge-quantizer are imported inside functions:
planning and no-op builds import this module's names without paying for them.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tfbuild.errors import ConversionFailed, UserError
from tfbuild.registry import load_object

SIGNATURE = "serving_default"  # litert-torch's default signature key, as for Keras files
PT2_SUFFIXES = (".pt2",)
# What a dynamic axis becomes in a sample when no data gives its size: 2, not 1, because
# torch.export specializes axes of size 0 and 1 to constants.
DYNAMIC_SAMPLE_SIZE = 2

InputSpecs = list[tuple[str, list[int | None], str]]  # (name, shape with None = dynamic, dtype)


def is_torch_source(spec: str) -> bool:
    """Whether `model.source` names a saved torch.export program (a `py:` factory is torch when the
    recipe says `model.framework: torch`: tfbuild.conversion.torch_source)."""
    return spec.endswith(PT2_SUFFIXES)


# ---------------------------------------------------------------- loading

def load_model(spec: str, root: Path, *, file: str, trust_code: bool):
    """The object a recipe's `model.source` names: an `nn.Module` from a `py:` factory (imported
    through the same registry as Keras factories), or a `torch.export.ExportedProgram` from a
    `.pt2` file. A .pt2 is unpickled by torch.export.load, which can run code, so it needs
    `trust_code: true` like a Keras Lambda layer."""
    if spec.startswith("py:"):
        factory = load_object(spec[3:], file=file, key="model.source")
        return _module_from_factory(factory, spec, file)
    if not is_torch_source(spec):
        raise UserError(f"not a PyTorch source: {spec!r}", file=file, key="model.source",
                        expected="a .pt2 file (torch.export.save) or py:package.module:factory")
    if not trust_code:
        raise UserError(f"{spec} is a pickled torch.export program: loading it can run code",
                        file=file, key="model.trust_code", expected="true, for a .pt2 you produced yourself",
                        hint="or rebuild it from a py:package.module:factory returning the nn.Module")
    return _load_pt2(root / spec, spec, file)


def _module_from_factory(factory: Callable, spec: str, file: str):
    import torch

    model = factory() if callable(factory) and not isinstance(factory, torch.nn.Module) else factory
    if not isinstance(model, torch.nn.Module):
        raise UserError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module", file=file,
                        key="model.source", expected="a factory returning a torch.nn.Module")
    return model


def _load_pt2(path: Path, spec: str, file: str):
    import torch

    try:
        return torch.export.load(str(path))
    except Exception as err:  # a damaged archive, or one from an incompatible torch
        raise UserError(f"cannot load {spec}: {summary(err)}", file=file, key="model.source",
                        expected="a file written by torch.export.save with this torch version") from None


def program_input_specs(program) -> InputSpecs:
    """The user inputs of a saved torch.export program, named as in its graph, with the axes it
    was exported dynamic as None."""
    user_inputs = program.graph_signature.user_inputs
    nodes = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    specs = []
    for name in user_inputs:
        value = nodes[name].meta["val"]
        shape = [d if isinstance(d, int) else None for d in value.shape]
        specs.append((name, shape, str(value.dtype).removeprefix("torch.")))
    return specs


# ---------------------------------------------------------------- names and specs

def recipe_input_specs(inputs: dict | None, *, file: str, fallback: InputSpecs | None = None,
                       batch_size: int | None = None) -> InputSpecs:
    """(name, shape, dtype) per input from the recipe's `model.inputs` (in call order, names as
    the recipe gives them), else from a saved program's own inputs with the batch pinned.
    A `py:` module has no shapes of its own, so it needs `model.inputs`."""
    if inputs:
        for name in inputs:
            if not name.isidentifier():
                raise UserError(f"input name {name!r} is not a Python identifier", file=file,
                                key=f"model.inputs.{name}", expected="letters, digits and _ (it names a forward() parameter)")
        return [(name, list(spec.shape), spec.dtype) for name, spec in inputs.items()]
    if fallback is None:
        raise UserError("a PyTorch module has no input shapes of its own", file=file, key="model.inputs",
                        expected="{name: {shape: [1, 3, 32, 32], dtype: float32}} per forward() argument, in order")
    if batch_size is None:
        return fallback
    return [(name, [batch_size, *shape[1:]] if shape else shape, dtype) for name, shape, dtype in fallback]


def sample_inputs(specs: InputSpecs, data: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """One batch to trace with: the first rows of the data when there is some (its sizes fill the
    dynamic axes), else zeros with every dynamic axis DYNAMIC_SAMPLE_SIZE long."""
    out = {}
    for name, shape, dtype in specs:
        if data is not None and name in data:
            rows = shape[0] if shape and shape[0] is not None else DYNAMIC_SAMPLE_SIZE
            out[name] = np.ascontiguousarray(data[name][:rows]).astype(dtype, copy=False)
        else:
            out[name] = np.zeros([DYNAMIC_SAMPLE_SIZE if d is None else d for d in shape], dtype=dtype)
    return out


def dynamic_shapes(specs: InputSpecs) -> dict[str, dict[int, Any]] | None:
    """torch.export's `dynamic_shapes` for the None axes, keyed like the wrapped module's
    keyword arguments; None when every axis is fixed (the common case on mobile)."""
    import torch

    found = {name: {axis: torch.export.Dim(f"{name}_{axis}") for axis, d in enumerate(shape) if d is None}
             for name, shape, _ in specs}
    return found if any(found.values()) else None


def _for_keywords(dims: dict | None, specs: InputSpecs) -> dict | None:
    """torch.export wants an entry per forward() parameter: None for the fixed ones."""
    return None if dims is None else {name: dims.get(name) or None for name, _, _ in specs}


def returned_names(returned) -> list[str]:
    """Names of what a module returns: a dict's keys, `output_<i>` for a tuple or list (as
    litert-torch names them), `output_0` for one tensor."""
    if isinstance(returned, dict):
        return [str(key) for key in returned]
    if isinstance(returned, (tuple, list)):
        return [f"output_{i}" for i in range(len(returned))]
    return ["output_0"]


# ---------------------------------------------------------------- the wrapped module

def wrap(model, input_names: list[str], source_names: list[str], output_names: list[str], *,
         channel_last_inputs: Sequence[str] = (), channel_last_outputs: Sequence[str] = ()):
    """The module tfbuild converts and verifies: keyword inputs named as in the recipe, a dict
    of outputs named as in the recipe. `model` is an nn.Module or an ExportedProgram (its
    `.module()` is traced again, so litert-torch sees an ordinary module). Channel-last I/O wraps
    litert-torch's own `to_channel_last_io` around the positional core: NHWC at the file's
    edges for an NCHW model, the transposes inside the graph."""
    import torch

    core = _Positional(model.module() if isinstance(model, torch.export.ExportedProgram) else model,
                       source_names)
    if channel_last_inputs or channel_last_outputs:
        from litert_torch import to_channel_last_io

        core = to_channel_last_io(core, args=[input_names.index(n) for n in channel_last_inputs],
                                  outputs=[output_names.index(n) for n in channel_last_outputs])
    return _named(core, input_names, output_names).eval()


def _Positional(model, source_names: list[str]):
    """A module that takes inputs positionally and returns a tuple in `source_names`' order,
    whatever the wrapped module returns (dict, tuple, one tensor): the shape litert-torch's
    channel-last helper expects."""
    import torch

    class Positional(torch.nn.Module):
        def __init__(self, wrapped):
            super().__init__()
            self.wrapped = wrapped

        def train(self, mode: bool = True):
            """A saved program's module refuses train()/eval() (it is always in eval mode)."""
            self.training = mode
            if not isinstance(self.wrapped, torch.fx.GraphModule):
                self.wrapped.train(mode)
            return self

        def forward(self, *args):
            returned = self.wrapped(*args)
            if isinstance(returned, dict):
                return tuple(returned[key] for key in source_names)
            return tuple(returned) if isinstance(returned, (tuple, list)) else (returned,)

    return Positional(model)


def _named(core, input_names: list[str], output_names: list[str]):
    """Named inputs in, a dict out: the names litert-torch writes into the signature. The forward
    gets an explicit signature (one parameter per input) because torch.export cannot take
    dynamic shapes for a `**kwargs` forward (an AssertionError in torch 2.13)."""
    import inspect

    import torch

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature([inspect.Parameter("self", kind),
                                   *(inspect.Parameter(name, kind) for name in input_names)])

    def forward(self, *args, **kwargs):
        given = signature.bind(self, *args, **kwargs).arguments
        return dict(zip(output_names, self.core(*(given[name] for name in input_names))))

    forward.__signature__ = signature  # type: ignore[attr-defined]
    named = type("Named", (torch.nn.Module,), {"forward": forward})()
    named.core = core
    return named


# ---------------------------------------------------------------- the source

@dataclass
class TorchModel:
    """A loaded torch source as the conversion needs it: the wrapped module, its named inputs
    (shapes with None for dynamic axes) and outputs, and the kinds the recipe declared."""
    module: Any  # the wrapped nn.Module (keyword inputs, dict outputs), in eval mode
    input_specs: InputSpecs
    output_names: list[str]
    output_kinds: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    file: str | None = None  # the recipe, for the messages of conversion-time user errors
    _float: bytes | None = field(default=None, repr=False)  # every target quantizes the same float file

    @property
    def input_names(self) -> list[str]:
        return [name for name, _, _ in self.input_specs]

    def reference(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return reference(self.module, inputs)

    def float_file(self, data: dict[str, np.ndarray] | None = None) -> bytes:
        """The float32 .tflite, converted once (traced on the first rows of `data`, if given)."""
        if self._float is None:
            self._float = convert_float(self.module, self.input_specs, data, file=self.file)
        return self._float

    def convert(self, quantize: str = "float32", io: str = "float32",
                calibration: dict[str, np.ndarray] | None = None, *, keep_float: Sequence[str] = (),
                samples: int = 200) -> bytes:
        """The .tflite bytes of one target; `calibration` is arrays per input name ([n, ...])."""
        float_bytes = self.float_file(calibration)
        if quantize == "float32":
            return float_bytes
        batches = calibration_batches(calibration, self.input_specs, samples) if calibration else None
        return quantize_model(float_bytes, quantize, io, batches, keep_float=keep_float)


def load_torch_model(spec: str, root: Path, *, file: str, trust_code: bool = False,
                     inputs: dict | None = None, batch_size: int | None = 1,
                     rename: Callable[[list[str]], tuple[list[str], dict]] | None = None,
                     channel_last: bool | list[str] = False, data: dict[str, np.ndarray] | None = None) -> TorchModel:
    """Load, name and wrap a torch source. `inputs`: the recipe's `model.inputs` (shapes as the
    .tflite exposes them, so NHWC under channel_last); `rename`: the core's `model.outputs`
    resolution (names the model gives -> (recipe names, kinds)); `channel_last`: True for every
    input and output of rank 3 or more, or the names to transpose; `data`: arrays per input
    whose first rows size the dynamic axes of the trial run."""
    import torch

    model = load_model(spec, root, file=file, trust_code=trust_code)
    if isinstance(model, torch.nn.Module):
        model.eval()
    own = program_input_specs(model) if isinstance(model, torch.export.ExportedProgram) else None
    specs = recipe_input_specs(inputs, file=file, fallback=own, batch_size=batch_size)
    last_in = _channel_last_inputs(channel_last, specs)
    returned = _trial_run(model, specs, data, last_in, file)
    source_names = returned_names(returned)
    names, kinds = rename(source_names) if rename else (source_names, {})
    last_out = _channel_last_outputs(channel_last, names, _values(returned))
    wrapped = wrap(model, [n for n, _, _ in specs], source_names, names,
                   channel_last_inputs=last_in, channel_last_outputs=last_out)
    notes = [f"channel-last I/O: {', '.join(last_in + last_out)} (NHWC at the file's edges)"] if last_in or last_out else []
    return TorchModel(wrapped, specs, names, kinds, notes, file)


def _trial_run(model, specs: InputSpecs, data, channel_last_inputs: list[str], file: str):
    """Run the unwrapped model once, to learn what it returns. Its errors (wrong argument count,
    a shape it rejects) are the user's, shown with the shapes tried; channel-last inputs are
    given to it channel-first, as the wrapper will."""
    import torch

    sample = sample_inputs(specs, data)
    target = model.module() if isinstance(model, torch.export.ExportedProgram) else model
    args = [np.moveaxis(value, -1, 1) if name in channel_last_inputs else value for name, value in sample.items()]
    try:
        with torch.no_grad():
            return target(*(torch.from_numpy(np.ascontiguousarray(a)) for a in args))
    except Exception as err:
        shown = ", ".join(f"{name} {list(value.shape)} {value.dtype}" for name, value in sample.items())
        raise UserError(f"the model's forward() failed on inputs {shown}: {summary(err)}", file=file,
                        key="model.inputs", expected="the forward() arguments' names, shapes and dtypes, in order") from None


def _values(returned) -> list:
    if isinstance(returned, dict):
        return list(returned.values())
    return list(returned) if isinstance(returned, (tuple, list)) else [returned]


def _channel_last_inputs(channel_last, specs: InputSpecs) -> list[str]:
    if not channel_last:
        return []
    if channel_last is True:
        return [name for name, shape, _ in specs if len(shape) >= 3]
    return [name for name, _, _ in specs if name in channel_last]


def _channel_last_outputs(channel_last, names: list[str], values: list) -> list[str]:
    if not channel_last:
        return []
    if channel_last is True:
        return [name for name, value in zip(names, values) if value.ndim >= 3]
    return [name for name in names if name in channel_last]


# ---------------------------------------------------------------- running and converting

def reference(module, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The torch model's outputs for named inputs ([n, ...] arrays, one batch), in eval mode
    without autograd: what each converted file is verified against."""
    import torch

    with torch.no_grad():
        returned = module(**{name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in inputs.items()})
    return {name: value.detach().cpu().numpy() for name, value in returned.items()}


def convert_float(module, specs: InputSpecs, data: dict[str, np.ndarray] | None = None, *,
                  file: str | None = None) -> bytes:
    """The float32 .tflite: torch.export then litert-torch, traced on one batch, with the
    recipe's dynamic axes as torch.export Dims. A failure says which tool failed: a
    ConversionFailed, or a UserError naming the dynamic axes to pin."""
    import litert_torch
    import torch

    sample = {name: torch.from_numpy(value) for name, value in sample_inputs(specs, data).items()}
    dims = dynamic_shapes(specs)
    try:
        edge = litert_torch.convert(module, (), sample, dynamic_shapes=_for_keywords(dims, specs))
    except Exception as err:
        raise _conversion_error(err, dims, file) from None
    return _exported_bytes(edge)


def _exported_bytes(edge) -> bytes:
    """The flatbuffer of a litert-torch model (its export writes a file; no in-memory API)."""
    with tempfile.TemporaryDirectory(prefix="tfbuild-torch-") as folder:
        path = os.path.join(folder, "model.tflite")
        edge.export(path)
        return Path(path).read_bytes()


def _conversion_error(err: BaseException, dims, file: str | None) -> Exception:
    """A located message: which tool failed and its first line. With dynamic axes in the recipe
    it is the user's to fix (torch.export or litert-torch could not keep them: a dynamic batch
    through Flatten, an LSTM's or an attention block's sequence length), so a UserError naming
    the axes and the key to pin them under."""
    text = summary(err)
    stage = "torch.export" if _raised_in(err, "torch") and not _raised_in(err, "litert_torch") else "litert-torch"
    if not dims:
        return ConversionFailed(f"{stage} failed: {text}")
    axes = ", ".join(f"{name} axis {axis}" for name, found in dims.items() for axis in found)
    first = next(iter(dims))
    return UserError(f"{stage} cannot keep {axes} dynamic ({text})", file=file, key=f"model.inputs.{first}.shape",
                     expected="a number instead of null for each axis named",
                     hint="convert one fixed size per target; only some models keep a dynamic axis")


def _raised_in(err: BaseException, package: str) -> bool:
    """Whether the innermost frame of the traceback is in `package` (to tell torch.export from
    litert-torch apart in the message)."""
    tb = err.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and f"{os.sep}{package}{os.sep}" in last


def summary(err: BaseException, limit: int = 400) -> str:
    """`Type: first line of the message`, shortened: tool errors are often pages long."""
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    text = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def calibration_batches(calibration: dict[str, np.ndarray], specs: InputSpecs, samples: int) -> list[dict]:
    """Calibration arrays ([n, ...] per input) as the quantizer takes them: a list of feeds,
    one batch each, keyed by the signature's input names."""
    batch = next((shape[0] for _, shape, _ in specs if shape and shape[0] is not None), 1)
    count = min(samples, len(next(iter(calibration.values()))))
    return [{name: np.ascontiguousarray(calibration[name][start:start + batch]).astype(dtype, copy=False)
             for name, _, dtype in specs}
            for start in range(0, count - count % batch, batch)]


# ---------------------------------------------------------------- quantization (ai-edge-quantizer)

MODES = ("float16", "dynamic", "int8", "int16x8")
IO_TYPES = {"int8": ("int8", "uint8", "float32"), "int16x8": ("int16", "float32")}


def quantization_recipe(quantize: str):
    """The ai-edge-quantizer recipe for a tfbuild mode: float16 weights (float casting, weights
    stored as fp16 and dequantized), dynamic range (int8 weights, activations quantized on the
    fly), int8 (static int8 weights and activations) and int16x8 (int16 activations)."""
    from ai_edge_quantizer import recipe as aeq_recipe
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.recipe_manager import RecipeManager

    if quantize == "float16":
        manager = RecipeManager()
        manager.add_weight_only_config(".*", "*", 16, algorithm_key=AlgorithmName.FLOAT_CASTING)
        return manager.get_quantization_recipe()
    builders = {"dynamic": aeq_recipe.dynamic_wi8_afp32, "int8": aeq_recipe.static_wi8_ai8,
                "int16x8": aeq_recipe.static_wi8_ai16}
    if quantize not in builders:
        raise ConversionFailed(f"quantize: {quantize} has no ai-edge-quantizer recipe here "
                               f"(expected one of {', '.join(MODES)})")
    return builders[quantize]()


def quantize_model(float_bytes: bytes, quantize: str, io: str = "float32",
                   batches: list[dict] | None = None, *, keep_float: Sequence[str] = (),
                   statistics: dict | None = None) -> bytes:
    """Quantize a float .tflite with ai-edge-quantizer. The static recipes quantize the model's
    edges too (int8/int16 I/O); float32 or uint8 I/O re-configures its virtual INPUT/OUTPUT ops.
    `keep_float`: op types (CONV_2D) or tensor-name patterns left unquantized (float fallback).
    `statistics`: a `calibrate_model` result to reuse (no calibration run), else `batches` are run."""
    q = _quantizer(float_bytes, quantize, io, keep_float)
    if q.need_calibration and statistics is None:
        statistics = _calibrate(q, quantize, batches)
    try:
        result = q.quantize(statistics if q.need_calibration else None, enable_progress_report=False)
    except Exception as err:
        raise ConversionFailed(f"ai-edge-quantizer failed to quantize ({quantize}): {summary(err)}") from None
    return bytes(result.quantized_model)


def calibrate_model(float_bytes: bytes, quantize: str, io: str, batches: list[dict] | None) -> dict:
    """The calibration statistics of every tensor of the float file (ai-edge-quantizer keeps them
    all), so that any set of layers kept in float quantizes from them without running the data
    again (the float-fallback search)."""
    q = _quantizer(float_bytes, quantize, io, ())
    return _calibrate(q, quantize, batches) if q.need_calibration else {}


def _quantizer(float_bytes: bytes, quantize: str, io: str, keep_float) -> Any:
    from ai_edge_quantizer import quantizer as aeq

    q = aeq.Quantizer(bytearray(float_bytes), quantization_recipe(quantize))
    if quantize in IO_TYPES:
        _set_io_type(q, quantize, io)
    for item in keep_float:
        _keep_in_float(q, item)
    return q


def _calibrate(q: Any, quantize: str, batches: list[dict] | None) -> dict:
    if not batches:
        raise ConversionFailed(f"quantize: {quantize} needs calibration data (data.calibration)")
    try:
        return q.calibrate({SIGNATURE: batches}, num_threads=1)
    except Exception as err:
        raise ConversionFailed(f"ai-edge-quantizer calibration failed: {summary(err)}") from None


def _set_io_type(q, quantize: str, io: str) -> None:
    """I/O types through the quantizer's virtual INPUT/OUTPUT ops: no_quantize keeps them float
    (a QUANTIZE after the input, a DEQUANTIZE before the output), a UINT activation config gives
    uint8 edges; int8 or int16 is what the static recipe does by itself."""
    from ai_edge_quantizer import qtyping

    if io not in IO_TYPES[quantize]:
        raise ConversionFailed(f"io: {io} is not possible with quantize: {quantize} "
                               f"(expected one of {', '.join(IO_TYPES[quantize])})")
    if io == "float32":
        for edge in ("INPUT", "OUTPUT"):
            q.update_quantization_recipe(".*", edge, None, "no_quantize")
    elif io == "uint8":
        config = qtyping.OpQuantizationConfig(
            activation_tensor_config=qtyping.TensorQuantizationConfig(
                num_bits=8, symmetric=False, granularity=qtyping.QuantGranularity.TENSORWISE,
                dtype=qtyping.TensorDataType.UINT),
            compute_precision=qtyping.ComputePrecision.INTEGER)
        for edge in ("INPUT", "OUTPUT"):
            q.update_quantization_recipe(".*", edge, config, "min_max_uniform_quantize")


def _keep_in_float(q, item: str) -> None:
    """An op type (all caps, CONV_2D) or a tensor-name pattern kept unquantized."""
    from ai_edge_quantizer import qtyping

    if item.isupper() and item in qtyping.TFLOperationName.__members__:
        q.update_quantization_recipe(".*", qtyping.TFLOperationName[item], None, "no_quantize")
    else:
        import re

        q.update_quantization_recipe(re.escape(item), "*", None, "no_quantize")
