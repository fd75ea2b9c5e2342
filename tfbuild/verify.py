"""Acceptance: run the .tflite in the LiteRT interpreter and compare with the source model.

No TensorFlow here: the reference outputs come in as arrays, the candidate runs in
ai-edge-litert exactly as an app would run it (through its signature, with each tensor's own
scale and zero point), so a verdict is about the file that ships, not about the converter.
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np

CHECKED = ("top1_agreement", "min_accuracy", "max_accuracy_drop", "max_abs_error",
           "mean_abs_error", "min_cosine", "min_snr_db", "max_size_kb", "max_latency_ms", "max_float_ops")
FLEX_PREFIX = "Flex"
INTEGER_DTYPES = ("int8", "uint8", "int16")


def effective_thresholds(quantize: str, *layers: dict | None) -> tuple[dict, bool]:
    """Mode defaults, then recipe-wide `accept`, then the target's; and whether the user set any."""
    from tfbuild.conversion.modes import mode

    merged: dict = dict(mode(quantize).thresholds)  # documented in docs/acceptance.md
    merged.update({"latency_runs": 20, "latency_threads": 1, "waive": None})
    user_set = False
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is not None:
                merged[key] = value
                user_set = user_set or key in CHECKED
    return merged, user_set


# ---------------------------------------------------------------- model inspection

def opcode_names(model, schema) -> list[str]:
    """The name of each operator code of a parsed model (builtin name, or the custom op's name)."""
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    found = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        found.append(custom.decode() if custom else names.get(builtin, str(builtin)))
    return found


def _ops(model_bytes: bytes) -> list[str]:
    from ai_edge_litert import schema_py_generated as schema

    return sorted(set(opcode_names(schema.Model.GetRootAsModel(model_bytes, 0), schema)))


def uses_flex(sig: dict) -> bool:
    return any(op.startswith(FLEX_PREFIX) for op in sig["ops"])


def tensor_info(name: str, tensor, schema) -> dict:
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    shape = [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
    shape_signature = ([int(d) for d in tensor.ShapeSignatureAsNumpy()]
                       if tensor.ShapeSignatureLength() else list(shape))
    quant = tensor.Quantization()
    scale = float(quant.ScaleAsNumpy()[0]) if quant is not None and quant.ScaleLength() else 0.0
    zero = int(quant.ZeroPointAsNumpy()[0]) if quant is not None and quant.ZeroPointLength() else 0
    return {"name": name, "shape": shape, "shape_signature": shape_signature,
            "dtype": types.get(tensor.Type(), str(tensor.Type())),
            "quantization": {"scale": scale, "zero_point": zero} if scale else None}


def signature(model_bytes: bytes) -> dict:
    """The signature apps see, read from the flatbuffer itself (works for Flex models too)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(model_bytes, 0)
    if not model.SignatureDefsLength():
        raise ValueError("the model has no signature")
    sig = model.SignatureDefs(0)
    graph = model.Subgraphs(sig.SubgraphIndex())

    def tensors(count, get):
        return [tensor_info(get(i).Name().decode(), graph.Tensors(get(i).TensorIndex()), schema)
                for i in range(count)]
    return {
        "signature_key": sig.SignatureKey().decode(),
        "inputs": tensors(sig.InputsLength(), sig.Inputs),
        "outputs": tensors(sig.OutputsLength(), sig.Outputs),
        "ops": _ops(model_bytes),
    }


FLOAT_DTYPES = ("float32", "float16")
CONVERSION_OPS = ("QUANTIZE", "DEQUANTIZE")  # the edges between integer and float, not compute


def float_op_types(found: dict) -> str:
    """`ELU x2, SOFTMAX`: the float ops of a `float_ops` record, most frequent first."""
    return ", ".join(f"{op} x{n}" if n > 1 else op for op, n in found["by_type"].items())


def load_runtime() -> None:
    """Import the LiteRT interpreter and flatbuffer schema (a one-time cost per worker, reported
    on its own rather than charged to whichever target happens to be verified first)."""
    import ai_edge_litert.interpreter  # noqa: F401
    import ai_edge_litert.schema_py_generated  # noqa: F401


def interpreter(model_bytes: bytes, threads: int = 1):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=model_bytes, num_threads=threads)


# ---------------------------------------------------------------- running

def quantize(values: np.ndarray, tensor: dict) -> np.ndarray:
    q = tensor["quantization"]
    dtype = np.dtype(tensor["dtype"])
    if tensor["dtype"] not in INTEGER_DTYPES or not q:
        return values.astype(dtype)
    info = np.iinfo(dtype)
    scaled = values / q["scale"]
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)  # half away from zero, as LiteRT
    return np.clip(rounded + q["zero_point"], info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, tensor: dict) -> np.ndarray:
    q = tensor["quantization"]
    if tensor["dtype"] not in INTEGER_DTYPES or not q:
        return values.astype(np.float32)
    return (values.astype(np.float32) - q["zero_point"]) * q["scale"]


def run(model_bytes: bytes, sig: dict, inputs: dict[str, np.ndarray], batch: int) -> tuple[dict, dict, dict]:
    """Run every sample; return (float outputs, raw inputs fed, raw outputs), all by name.
    `sig` is the model's `signature()`, read once by the caller."""
    runner = interpreter(model_bytes).get_signature_runner()
    count = len(next(iter(inputs.values())))
    raw_in = {t["name"]: quantize(inputs[t["name"]], t) for t in sig["inputs"]}
    chunks: dict[str, list] = {t["name"]: [] for t in sig["outputs"]}
    for start in range(0, count - count % batch, batch):
        fed = {name: value[start:start + batch] for name, value in raw_in.items()}
        try:
            result = runner(**fed)
        except RuntimeError as err:
            raise run_failure(err, sig, fed) from None
        for name in chunks:
            chunks[name].append(np.array(result[name]))
    raw_out = {name: np.concatenate(parts) for name, parts in chunks.items()}
    floats = {t["name"]: dequantize(raw_out[t["name"]], t) for t in sig["outputs"]}
    return floats, raw_in, raw_out


def run_failure(err: RuntimeError, sig: dict, fed: dict[str, np.ndarray]) -> Exception:
    """LiteRT refusing to run a model whose dynamic axes were resized to the data (e.g. `XNNPack
    delegate failed to reshape runtime`): a target failure that names the axes and the shape to
    pin, with the input's real rank. Any other runtime error stays what it is."""
    from tfbuild.errors import ConversionFailed

    dynamic = [(t["name"], [i for i, d in enumerate(t["shape_signature"]) if d < 0 and i > 0], fed[t["name"]].shape)
               for t in sig["inputs"] if any(d < 0 for d in t["shape_signature"][1:])]
    if not dynamic:
        return err
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    axes = "; ".join(f"{name} axis {', '.join(map(str, found))} at length "
                     f"{', '.join(str(shape[i]) for i in found)}" for name, found, shape in dynamic)
    pins = ", ".join(f"{name}: {{shape: {[1, *shape[1:]]}}}" for name, _, shape in dynamic)
    return ConversionFailed(
        f"LiteRT cannot run this model with its dynamic axes resized to the evaluation data ({axes}): "
        f"{first}; pin them in model.inputs ({pins}), or use evaluation data of the length the "
        "app will feed")


def median_latency_ms(model_bytes: bytes, sig: dict, inputs: dict[str, np.ndarray], runs: int,
                      threads: int) -> float:
    runner = interpreter(model_bytes, threads).get_signature_runner()
    sample = {t["name"]: quantize(inputs[t["name"]][:1], t) for t in sig["inputs"]}
    runner(**sample)  # warm-up: allocation and delegate preparation are not latency
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner(**sample)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(model_bytes: bytes, sig: dict, inputs: dict[str, np.ndarray], labels, reference: dict,
            batch: int, kinds: dict[str, str] | None) -> tuple[dict, dict, dict]:
    """(metrics, raw inputs fed, raw outputs): the candidate run on every sample and compared with
    the source model's outputs, top-1 agreement at each output's own quantization step."""
    candidate, raw_in, raw_out = run(model_bytes, sig, inputs, batch)
    used = len(next(iter(candidate.values())))
    metrics = compare({k: v[:used] for k, v in reference.items()}, candidate,
                      labels[:used] if labels is not None else None, kinds, output_steps(model_bytes, sig))
    return metrics, raw_in, raw_out


# ---------------------------------------------------------------- metrics and verdict

def _is_classifier(array: np.ndarray) -> bool:
    """Class scores along the last axis: one row per sample ([batch, classes]) or one row per
    frame or position ([batch, frames, classes], [batch, h, w, classes])."""
    return array.ndim >= 2 and array.shape[-1] >= 2


def _rows(array: np.ndarray) -> np.ndarray:
    """Every row of class scores, samples and positions alike: [n, classes]."""
    return array.reshape(-1, array.shape[-1])


def positions(array: np.ndarray) -> int:
    """Rows of class scores per sample: 1 for a per-sample classifier, frames x ... otherwise."""
    return int(np.prod(array.shape[1:-1], dtype=np.int64)) if array.ndim > 2 else 1


def _looks_like_probabilities(array: np.ndarray) -> bool:
    rows = _rows(array).astype(np.float64)
    return bool(len(rows)) and bool((rows >= 0).all()) and bool(np.allclose(rows.sum(1), 1.0, atol=1e-3))


def output_kinds(reference: dict[str, np.ndarray], known: dict[str, str], labels_count: int | None) -> dict[str, str]:
    """Each output's kind: `scores` (class probabilities or logits: top-1 agreement and accuracy
    apply) or `values` (regression, boxes, embeddings: errors, cosine and SNR only). Declared or
    read from the model's last activation (softmax, sigmoid) where known; otherwise scores for
    rows of probabilities along the last axis (per sample, or per frame or position), or for the
    output with one column per label; values for the rest."""
    kinds = {}
    for name, array in reference.items():
        if name in known:
            kinds[name] = known[name]
        elif _is_classifier(array) and (_looks_like_probabilities(array) or array.shape[-1] == labels_count):
            kinds[name] = "scores"
        else:
            kinds[name] = "values"
    return kinds


FLOAT_TIE = 1e-6  # relative to the row's largest score: a float output's near-tie tolerance


def output_steps(model_bytes: bytes, sig: dict) -> dict[str, float]:
    """Each output's quantization step: its own scale when the output is an integer tensor, the
    scale of the tensor a final DEQUANTIZE reads when the model hands out floats computed in
    integers (io: float32). Outputs computed in float are absent."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(model_bytes, 0)
    graph = model.Subgraphs(model.SignatureDefs(0).SubgraphIndex())
    dequantize = {i for i, name in enumerate(opcode_names(model, schema)) if name == "DEQUANTIZE"}
    producer_input = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if op.OpcodeIndex() in dequantize and op.InputsLength():
            producer_input[int(op.Outputs(0))] = int(op.Inputs(0))
    by_name = {graph.Tensors(i).Name().decode(): i for i in range(graph.TensorsLength())}
    steps = {}
    for tensor in sig["outputs"]:
        if tensor["quantization"]:
            steps[tensor["name"]] = tensor["quantization"]["scale"]
            continue
        index = by_name.get(tensor["name"])
        source = producer_input.get(index) if index is not None else None
        quant = graph.Tensors(source).Quantization() if source is not None else None
        if quant is not None and quant.ScaleLength():
            steps[tensor["name"]] = float(quant.ScaleAsNumpy()[0])
    return steps


def _agreement(ref: np.ndarray, got: np.ndarray, step: float | None) -> dict:
    """Top-1 agreement fair to near-ties: a sample agrees when the converted model's top class is
    one the source model scores within `step` (one quantization step of the output, or a float
    epsilon) of its own top score. `near_ties` counts the samples whose two best source scores
    are that close: for them either class is a fair answer of a model with that resolution."""
    top = ref.max(1)
    tolerance = np.full(len(ref), step) if step else FLOAT_TIE * np.maximum(np.abs(top), 1.0)
    chosen = ref[np.arange(len(ref)), got.argmax(1)]
    runner_up = np.sort(ref, axis=1)[:, -2]
    return {"top1_agreement": float(np.mean(chosen >= top - tolerance)),
            "top1_exact": float(np.mean(ref.argmax(1) == got.argmax(1))),
            "near_ties": int(np.sum(top - runner_up <= tolerance)),
            "tie_tolerance": float(step) if step else FLOAT_TIE}


def output_metrics(reference: np.ndarray, candidate: np.ndarray, kind: str = "values",
                   step: float | None = None) -> dict:
    """Errors, cosine and SNR over the whole output; for scores, top-1 agreement over every row
    of class scores: per sample, or per frame or position (`positions` rows per sample), since a
    per-frame label that flips is a wrong answer however close the cosine stays."""
    ref = reference.astype(np.float64).reshape(len(reference), -1)
    got = candidate.astype(np.float64).reshape(len(candidate), -1)
    finite = bool(np.isfinite(got).all())
    err = np.abs(ref - got) if finite else np.full_like(ref, np.inf)
    noise = float(np.sum((ref - got) ** 2)) if finite else math.inf
    signal = float(np.sum(ref ** 2))
    norms = float(np.linalg.norm(ref) * np.linalg.norm(got)) if finite else 0.0
    metrics = {
        "kind": kind,
        "finite": finite,
        "max_abs_error": float(err.max()) if err.size else 0.0,
        "mean_abs_error": float(err.mean()) if err.size else 0.0,
        "cosine": float(np.sum(ref * got) / norms) if norms > 0 else (1.0 if finite and noise == 0 else 0.0),
        "snr_db": (math.inf if noise == 0 else 10 * math.log10(signal / noise)) if finite and signal > 0 else -math.inf,
    }
    if kind == "scores" and _is_classifier(reference):
        rows = _rows(reference.astype(np.float64))
        metrics.update(_agreement(rows, _rows(candidate.astype(np.float64)), step) if finite else
                       {"top1_agreement": 0.0, "top1_exact": 0.0, "near_ties": 0, "tie_tolerance": step or FLOAT_TIE})
        if reference.ndim > 2:
            metrics["positions"] = positions(reference)
    return metrics


def label_indices(array: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
    """The class index of every row of `array`'s scores, from labels that fit it: indices, one
    per sample ([n]) or per frame ([n, frames]), or one-hot / probability rows of the output's own
    shape. None when the labels are for another output."""
    if labels.shape[1:] == array.shape[1:-1]:
        return labels.reshape(-1)
    if labels.shape[1:] == array.shape[1:]:
        return _rows(labels).argmax(1)
    return None


def _labelled_output(reference: dict[str, np.ndarray], kinds: dict[str, str],
                     labels: np.ndarray | None) -> tuple[str, np.ndarray] | None:
    """The first output of scores the labels fit, and the label of each of its rows."""
    if labels is None:
        return None
    for name, array in reference.items():
        if kinds.get(name) == "scores" and _is_classifier(array):
            truth = label_indices(array, np.asarray(labels)[: len(array)])
            if truth is not None:
                return name, truth
    return None


def compare(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
            labels: np.ndarray | None, kinds: dict[str, str] | None = None,
            steps: dict[str, float] | None = None) -> dict:
    """Per-output metrics, plus accuracy of both models on labels for the first `scores` output
    the labels fit (one label per sample, or per frame for per-frame scores).
    Without `kinds`, every output with two or more columns counts as scores; `steps` are the
    outputs' quantization steps (`output_steps`), the tolerance of top-1 agreement."""
    if kinds is None:
        kinds = {n: "scores" if _is_classifier(v) else "values" for n, v in reference.items()}
    steps = steps or {}
    per_output = {name: output_metrics(reference[name], candidate[name], kinds.get(name, "values"),
                                       steps.get(name))
                  for name in reference}
    result: dict = {"outputs": per_output, "samples": len(next(iter(reference.values())))}
    found = _labelled_output(reference, kinds, labels)
    if found is not None:
        classifier, truth = found
        result["accuracy"] = {
            "output": classifier,
            "source": float(np.mean(_rows(reference[classifier]).argmax(1) == truth)),
            "tflite": float(np.mean(_rows(candidate[classifier]).argmax(1) == truth)),
        }
        if reference[classifier].ndim > 2:
            result["accuracy"]["positions"] = positions(reference[classifier])
    return result


def judge(metrics: dict, thresholds: dict, size_kb: float, latency_ms: float | None) -> list[str]:
    """Every threshold missed, as `metric value <op> bound` (output named when there are several)."""
    failures = []
    outputs = metrics.get("outputs", {})
    several = len(outputs) > 1
    for name, m in outputs.items():
        label = f"{name}: " if several else ""
        if not m["finite"]:
            failures.append(f"{label}outputs are not finite (NaN or Inf): the conversion is broken")
            continue
        top1 = "top1_agreement per frame" if m.get("positions") else "top1_agreement"
        checks = [(top1, m.get("top1_agreement"), ">="), ("max_abs_error", m["max_abs_error"], "<="),
                  ("mean_abs_error", m["mean_abs_error"], "<="), ("min_cosine", m["cosine"], ">="),
                  ("min_snr_db", m["snr_db"], ">=")]
        for shown, value, op in checks:
            key = shown.split()[0]
            failures += _miss(label + shown.removeprefix("min_"), value, op, thresholds.get(key))
    accuracy = metrics.get("accuracy")
    wants_accuracy = [k for k in ("min_accuracy", "max_accuracy_drop") if thresholds.get(k) is not None]
    if wants_accuracy and not accuracy and outputs:
        failures.append(f"cannot check {' and '.join(wants_accuracy)}: the evaluation data has no "
                        "`labels` array, or the model has no classifier output")
    if accuracy:
        failures += _miss("accuracy", accuracy["tflite"], ">=", thresholds.get("min_accuracy"))
        failures += _miss("accuracy_drop", accuracy["source"] - accuracy["tflite"], "<=",
                          thresholds.get("max_accuracy_drop"))
    if "float_ops" in metrics:
        found = metrics["float_ops"]
        missed = _miss("float_ops", found["count"], "<=", thresholds.get("max_float_ops"))
        failures += [f"{line}: {float_op_types(found)}" for line in missed]
    failures += _miss("size_kb", size_kb, "<=", thresholds.get("max_size_kb"))
    failures += _miss("latency_ms", latency_ms, "<=", thresholds.get("max_latency_ms"))
    return failures


def _miss(name: str, value, op: str, bound) -> list[str]:
    if bound is None or value is None:
        return []
    ok = value >= bound if op == ">=" else value <= bound
    if ok:
        return []
    shown = "<" if op == ">=" else ">"
    return [f"{name} {value:.4g} {shown} {bound:g} (by {abs(value - bound):.3g})"]
