"""Per-layer quantization error, measured in LiteRT: where an integer model loses its accuracy.

No TensorFlow here. The float model is the converter's calibrated model (float ops, the same
tensor names as the integer model it is quantized into); both run on the same samples with every
intermediate tensor kept (`experimental_preserve_all_tensors`), and each op's output in the
integer model, dequantized with its own scale, is compared with the float model's tensor of the
same name. Statistics are accumulated sample by sample, so a large model never holds more than
one sample's tensors.

Per layer (an op, named by its output tensor) the report gets:
- `rmse_scale`: RMSE against the float model in units of the tensor's quantization step, as in
  TensorFlow's QuantizationDebugger (about 0.29 is plain rounding; much more is accumulated
  error or clipping). None for a layer that runs in float.
- `error`: the error relative to the signal, per channel (last axis), averaged over channels:
  what the accumulated quantization error costs here (0.01 is 1%).
- `local_error`: the same, for quantizing this tensor alone (the float values rounded to the
  tensor's own grid). It finds outlier activations: one huge channel stretches the scale until
  every other channel rounds to zero, an error `rmse_scale` cannot see (each value is within half
  a step) while `local_error` is near 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tfbuild import verify

LAYER_SAMPLES = 32  # evaluation samples the per-layer figures are measured on
EPSILON = 1e-12


@dataclass
class Graph:
    """The ops of a model's signature subgraph, in execution order, by tensor name."""
    tensors: list[dict]  # verify.tensor_info of each tensor, by index
    ops: list[dict]  # {"type", "inputs": [index], "outputs": [index]}
    inputs: list[int]

    def name(self, index: int) -> str:
        return self.tensors[index]["name"]

    def consumers(self) -> dict[int, list[int]]:
        """Tensor index -> indices of the ops that read it."""
        found: dict[int, list[int]] = {}
        for number, op in enumerate(self.ops):
            for tensor in op["inputs"]:
                found.setdefault(tensor, []).append(number)
        return found


def graph(model_bytes: bytes) -> Graph:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(model_bytes, 0)
    sub = model.Subgraphs(model.SignatureDefs(0).SubgraphIndex() if model.SignatureDefsLength() else 0)
    codes = verify.opcode_names(model, schema)
    tensors = [verify.tensor_info(sub.Tensors(i).Name().decode(), sub.Tensors(i), schema)
               for i in range(sub.TensorsLength())]
    ops = []
    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        ops.append({"type": codes[op.OpcodeIndex()],
                    "inputs": [int(t) for t in op.InputsAsNumpy() if t >= 0] if op.InputsLength() else [],
                    "outputs": [int(t) for t in op.OutputsAsNumpy()] if op.OutputsLength() else []})
    return Graph(tensors, ops, [int(t) for t in sub.InputsAsNumpy()] if sub.InputsLength() else [])


@dataclass
class _Stats:
    """Per-channel sums for one tensor: signal energy, accumulated error, local (rounding) error."""
    signal: np.ndarray | None = None
    error: np.ndarray | None = None
    local: np.ndarray | None = None
    squared: float = 0.0  # accumulated squared error, all elements
    count: int = 0

    def add(self, ref: np.ndarray, got: np.ndarray, rounded: np.ndarray | None) -> None:
        ref = ref.astype(np.float64).reshape(-1, ref.shape[-1] if ref.ndim else 1)
        got = got.astype(np.float64).reshape(ref.shape)
        sums = [np.sum(ref ** 2, 0), np.sum((got - ref) ** 2, 0),
                np.sum((rounded.astype(np.float64).reshape(ref.shape) - ref) ** 2, 0) if rounded is not None
                else np.zeros(ref.shape[1])]
        if self.signal is None:
            self.signal, self.error, self.local = sums
        else:
            self.signal, self.error, self.local = self.signal + sums[0], self.error + sums[1], self.local + sums[2]
        self.squared += float(np.sum((got - ref) ** 2))
        self.count += ref.size

    def relative(self, which: np.ndarray) -> float:
        """Mean over the channels that carry signal of sqrt(error / signal), capped at 10."""
        live = self.signal > EPSILON * max(float(self.signal.max()), EPSILON)
        if not live.any():
            return 0.0
        return float(np.mean(np.minimum(np.sqrt(which[live] / self.signal[live]), 10.0)))


def _runner(model_bytes: bytes):
    import warnings

    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():  # "intended for debugging purposes only": that is what this is
        warnings.simplefilter("ignore", UserWarning)
        interpreter = Interpreter(model_content=model_bytes, experimental_preserve_all_tensors=True)
    return interpreter, interpreter.get_signature_runner()


def layer_errors(float_bytes: bytes, quant_bytes: bytes, inputs: dict[str, np.ndarray], batch: int,
                 samples: int = LAYER_SAMPLES) -> list[dict]:
    """One row per op of the float model whose output the integer model also has, in graph order."""
    float_graph, quant_graph = graph(float_bytes), graph(quant_bytes)
    quant_index = {t["name"]: i for i, t in enumerate(quant_graph.tensors)}
    float_ops = [(number, op) for number, op in enumerate(float_graph.ops)
                 if op["outputs"] and float_graph.name(op["outputs"][0]) in quant_index]
    float_sig, quant_sig = verify.signature(float_bytes), verify.signature(quant_bytes)
    f_interp, f_run = _runner(float_bytes)
    q_interp, q_run = _runner(quant_bytes)
    raw = {t["name"]: verify.quantize(inputs[t["name"]], t) for t in quant_sig["inputs"]}
    stats = {number: _Stats() for number, _ in float_ops}
    count = min(samples, len(next(iter(inputs.values()))))
    for start in range(0, count - count % batch, batch):
        f_run(**{t["name"]: inputs[t["name"]][start:start + batch].astype(t["dtype"]) for t in float_sig["inputs"]})
        q_run(**{name: value[start:start + batch] for name, value in raw.items()})
        for number, op in float_ops:
            name = float_graph.name(op["outputs"][0])
            tensor = quant_graph.tensors[quant_index[name]]
            ref = f_interp.get_tensor(op["outputs"][0])
            got = verify.dequantize(q_interp.get_tensor(quant_index[name]), tensor)
            if ref.shape != got.shape:  # a name reused for another tensor: nothing to compare
                continue
            rounded = verify.dequantize(verify.quantize(ref, tensor), tensor) if tensor["quantization"] else None
            stats[number].add(ref, got, rounded)
    rows = []
    for number, op in float_ops:
        name = float_graph.name(op["outputs"][0])
        tensor = quant_graph.tensors[quant_index[name]]
        found = stats[number]
        if not found.count:
            continue
        quantized = tensor["quantization"] is not None and tensor["dtype"] in verify.INTEGER_DTYPES
        scale = tensor["quantization"]["scale"] if quantized else None
        rmse = (found.squared / found.count) ** 0.5 if found.count else 0.0
        rows.append({"index": number, "tensor": name, "op": op["type"], "dtype": tensor["dtype"],
                     "scale": scale, "rmse_scale": round(rmse / scale, 4) if quantized else None,
                     "error": round(found.relative(found.error), 5),
                     "local_error": round(found.relative(found.local), 5) if quantized else 0.0})
    return rows


def worst(rows: list[dict], count: int = 10) -> list[dict]:
    """The layers that cost the most when quantized, worst first: by the float-fallback search's
    ranking score (`cost`, where measured), then relative error, then graph order."""
    return sorted(rows, key=lambda r: (-r.get("cost", 0.0), -r["error"], r["index"]))[:count]


def float_ops(model_bytes: bytes) -> dict:
    """The ops of an integer model that still compute in float (a float output; the QUANTIZE and
    DEQUANTIZE at its edges aside): what an int8-only NPU, DSP, Edge TPU or microcontroller runs on
    the CPU or refuses. `{"count": n, "by_type": {op: n}, "tensors": [output names]}`."""
    model = graph(model_bytes)
    found = [(op["type"], model.name(op["outputs"][0])) for op in model.ops
             if op["outputs"] and op["type"] not in verify.CONVERSION_OPS
             and model.tensors[op["outputs"][0]]["dtype"] in verify.FLOAT_DTYPES]
    by_type: dict[str, int] = {}
    for kind, _ in found:
        by_type[kind] = by_type.get(kind, 0) + 1
    return {"count": len(found), "by_type": dict(sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))),
            "tensors": [name for _, name in found]}
