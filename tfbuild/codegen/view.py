"""The shared tensor view: a converted model's signature as every template sees it.

ctx comes from tfbuild itself (report.json and golden.json of a built target), so a malformed
ctx is a bug (ValueError), while a model the mobile runtimes cannot serve is the user's to fix
(UserError). Everything a template needs about a tensor is derived here once, so templates stay
dumb and the platforms agree on names, shapes and quantization.
"""

from __future__ import annotations

import json
import math
import operator
import struct

from tfbuild.codegen.names import camel, pascal, screaming, unique_words
from tfbuild.errors import UserError

# Sources of generated files that are not templates (see the platform modules' files()).
GOLDEN = ":golden"  # the golden vectors, golden_json()
# The golden vectors at the converted shape, for a loader whose API cannot resize a dynamic
# input (ctx["golden_fixed"]; the plain ones when the build made none).
GOLDEN_FIXED = ":golden-fixed"
MODEL = ":model"    # a copy of the built model file

# Per dtype: Kotlin array type, LiteRT Kotlin TensorBuffer suffix (None: the Kotlin API has none),
# Swift parameter type, Swift element type (None: passed as raw bytes), quantizable, integer range.
DTYPES = {
    "float32": {"kt": "FloatArray", "litert": "Float", "swift": "[Float]", "swift_elem": "Float",
                "quantizable": False, "range": None},
    "int8": {"kt": "ByteArray", "litert": "Int8", "swift": "Data", "swift_elem": None,
             "quantizable": True, "range": (-128, 127)},
    "uint8": {"kt": "ByteArray", "litert": "Int8", "swift": "Data", "swift_elem": None,
              "quantizable": True, "range": (0, 255)},
    "int16": {"kt": "ShortArray", "litert": None, "swift": "[Int16]", "swift_elem": "Int16",
              "quantizable": True, "range": (-32768, 32767)},
    "int32": {"kt": "IntArray", "litert": "Int", "swift": "[Int32]", "swift_elem": "Int32",
              "quantizable": False, "range": None},
    "int64": {"kt": "LongArray", "litert": "Long", "swift": "[Int64]", "swift_elem": "Int64",
              "quantizable": False, "range": None},
    "bool": {"kt": "BooleanArray", "litert": "Boolean", "swift": "[Bool]", "swift_elem": "Bool",
             "quantizable": False, "range": None},
    "float16": None,
}

CTX_KEYS = ("recipe", "target", "model_file", "model_sha256", "tfbuild_version", "signature_key",
            "inputs", "outputs", "uses_flex", "labels", "android", "ios", "golden")


def require(ctx: dict, keys: tuple[str, ...], where: str) -> None:
    """ctx is built by tfbuild itself, so a missing key is a bug, not a user error."""
    missing = [k for k in keys if k not in ctx]
    if missing:
        raise ValueError(f"{where} is missing keys: {', '.join(missing)}")


def _number(value: object) -> float | None:
    """A real number from Python or NumPy scalars; None for anything else (bools and strings
    included: a "0.5" in ctx is a bug upstream, not a number)."""
    if isinstance(value, (bool, str, bytes)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _integer(value: object) -> int | None:
    """An exact integer from Python or NumPy scalars (2.0 counts, 2.5 and True do not);
    true integers go through __index__ so int64 values keep all their digits."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        number = _number(value)
        return int(number) if number is not None and number.is_integer() else None


def _quantization(raw: object, dtype: str, name: str) -> dict | None:
    """Scale/zero point for quantizable integer tensors; None when the tensor is plain."""
    if not raw or not DTYPES[dtype]["quantizable"] or not raw.get("scale"):
        return None
    scale, zero_point = _number(raw["scale"]), _integer(raw.get("zero_point", 0))
    if scale is None or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"tensor {name!r}: invalid quantization scale {raw['scale']!r}")
    if zero_point is None:
        raise ValueError(f"tensor {name!r}: invalid zero point {raw.get('zero_point')!r}")
    return {"scale": scale, "zero_point": zero_point}


def _dims(values: object, name: str, allow_dynamic: bool) -> list[int]:
    """Validated dimensions; -1 (dynamic) is only meaningful in a shape_signature."""
    dims = [_integer(v) for v in values] if isinstance(values, (list, tuple)) else [None]
    if any(d is None or d < (-1 if allow_dynamic else 0) for d in dims):
        raise ValueError(f"tensor {name!r}: invalid dimensions {values!r}")
    return dims


def _product(values: list[int]) -> int:
    """Element count; a scalar (rank 0) tensor holds one element, as math.prod([]) says."""
    return math.prod(values)


def _tensor_view(raw: dict, ident: list[str], role: str) -> dict:
    """Everything a template needs about one tensor, derived once so templates stay dumb."""
    require(raw, ("name", "shape", "shape_signature", "dtype"), f"{role} tensor")
    name = str(raw["name"])
    dtype = raw["dtype"]
    if dtype not in DTYPES:
        raise ValueError(f"tensor {name!r}: unknown dtype {dtype!r}")
    if DTYPES[dtype] is None:
        raise UserError(f"{role} tensor {name!r} has dtype {dtype}, which the mobile loaders do "
                        f"not support", key="mobile", expected="float32/int8/uint8/int16/int32/"
                        "int64/bool inputs and outputs",
                        hint="float16 quantization normally keeps float32 inputs and outputs")
    shape = _dims(raw["shape"], name, allow_dynamic=False)
    signature = _dims(raw["shape_signature"], name, allow_dynamic=True)
    if len(signature) != len(shape) or any(s not in (-1, d) for s, d in zip(signature, shape)):
        raise ValueError(f"tensor {name!r}: shape_signature {signature} does not match {shape}")
    dynamic = [i for i, s in enumerate(signature) if s == -1]
    # The first dynamic dimension absorbs the caller's multiple; the others keep their default.
    fixed = [d for i, d in enumerate(shape) if not dynamic or i != dynamic[0]]
    quant = _quantization(raw.get("quantization"), dtype, name)
    info = DTYPES[dtype]
    return {
        "name": name, "role": role, "dtype": dtype,
        "words": ident, "camel": camel(ident), "pascal": pascal(ident), "upper": screaming(ident),
        "shape": shape, "shape_signature": signature,
        "dynamic": bool(dynamic), "dynamic_dims": dynamic,
        "count": _product(shape), "fixed_count": _product(fixed),
        "quantized": quant is not None,
        "scale": quant["scale"] if quant else 0.0,
        "zero_point": quant["zero_point"] if quant else 0,
        "qmin": info["range"][0] if info["range"] else 0,
        "qmax": info["range"][1] if info["range"] else 0,
        "kt_type": info["kt"], "kt_float_type": "FloatArray" if quant else info["kt"],
        "litert": info["litert"],
        "swift_type": info["swift"], "swift_elem": info["swift_elem"],
        "swift_float_type": "[Float]" if quant else info["swift"],
    }


def tensors(ctx: dict) -> tuple[list[dict], list[dict]]:
    """Inputs and outputs with identifiers unique across both lists (they share constants)."""
    ins, outs = ctx["inputs"], ctx["outputs"]
    if not isinstance(ins, list) or not isinstance(outs, list) or not ins or not outs:
        raise ValueError("ctx inputs and outputs must be non-empty lists")
    for group, label in ((ins, "input"), (outs, "output")):
        names = [str(t.get("name")) for t in group]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate {label} tensor names: {names}")
    roles = ["input"] * len(ins) + ["output"] * len(outs)
    idents = unique_words([str(t.get("name", "")) for t in ins + outs], roles)
    views = [_tensor_view(t, i, r) for t, i, r in zip(ins + outs, idents, roles)]
    return views[:len(ins)], views[len(ins):]


def _json_value(value: object, dtype: str) -> object:
    """A JSON scalar for one raw tensor value; non-finite floats as strings (JSON has none)."""
    if dtype == "bool":
        return bool(value)
    number = _number(value)
    if number is None:
        raise ValueError(f"golden value {value!r} is not a number")
    if dtype == "float32":
        if math.isfinite(number):
            return number
        return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")
    integer = _integer(value)
    if integer is None:
        raise ValueError(f"golden value {value!r} is not an integer for dtype {dtype}")
    return integer


def _flatten(value: object) -> list:
    """Samples arrive as nested lists in the tensor's shape; the tests feed flat arrays."""
    if isinstance(value, (list, tuple)):
        return [x for item in value for x in _flatten(item)]
    return [value]


def _float32(value: float) -> float:
    """value rounded to the nearest float32, as Swift's and Kotlin's Float arithmetic rounds."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def dequantize(value: int, tensor: dict) -> float:
    """(q - zero_point) * scale in float32, the generated dequantize helpers' arithmetic: a
    difference of small integers is exact in float32 and so is the product before rounding, so
    both sides get the same float for the same raw value."""
    return _float32(float(value - tensor["zero_point"]) * _float32(tensor["scale"]))


def golden_json(ctx: dict, inputs: list[dict], outputs: list[dict]) -> str:
    """The golden vectors as the generated tests read them: flat value lists per sample, keyed
    by the tensors' real names; for quantized tensors also their real values under
    `dequantized`, computed from the model's own scale and zero point, so a test that
    dequantizes with the loader's constants catches a wrong constant."""
    golden = ctx["golden"]
    require(golden, ("inputs", "outputs", "count"), "golden")
    count = int(golden["count"])
    data: dict = {"count": count, "inputs": {}, "outputs": {},
                  "dequantized": {"inputs": {}, "outputs": {}}}
    for section, group in (("inputs", inputs), ("outputs", outputs)):
        for t in group:
            samples = golden[section].get(t["name"])
            if not isinstance(samples, list) or len(samples) != count:
                raise ValueError(f"golden {section} for {t['name']!r} must list {count} samples")
            raw = [[_json_value(v, t["dtype"]) for v in _flatten(s)] for s in samples]
            data[section][t["name"]] = raw
            if t["quantized"]:
                data["dequantized"][section][t["name"]] = [[dequantize(v, t) for v in s] for s in raw]
    return json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":")) + "\n"


MEDIAPIPE_DTYPES = ("uint8", "float32")  # what MediaPipe's image tasks feed and read


def metadata_view(metadata: dict | None, inputs: list[dict], outputs: list[dict]) -> dict | None:
    """The TFLite metadata a built file carries (report.json's `metadata`, read back from the
    file), as the READMEs show it, and whether MediaPipe's ImageClassifier can take the model as it
    is: one [1, h, w, 3|4] RGB image input of uint8 or float32 (float32 with a normalization), and
    a uint8 or float32 output of shape [1, N] or [1, 1, 1, N]."""
    if not metadata:
        return None
    image = (metadata.get("inputs") or [{}])[0]
    labelled = next((t["labels"] for t in metadata.get("outputs") or [] if t.get("labels")), None)
    tensor = inputs[0]
    classifier = (
        len(inputs) == 1 and image.get("content") == "image" and image.get("color_space") == "rgb"
        and tensor["dtype"] in MEDIAPIPE_DTYPES and len(tensor["shape"]) == 4 and tensor["shape"][0] == 1
        and tensor["shape"][3] in (3, 4) and (tensor["dtype"] == "uint8" or bool(image.get("normalization")))
        and any(t["dtype"] in MEDIAPIPE_DTYPES and t["shape"][:1] == [1] and
                all(d == 1 for d in t["shape"][1:-1]) and len(t["shape"]) in (2, 4) for t in outputs))
    return {
        "name": metadata.get("name"), "version": metadata.get("version"), "author": metadata.get("author"),
        "license": metadata.get("license"),
        "labels_file": labelled["file"] if labelled else None, "labels_count": labelled["count"] if labelled else 0,
        "normalized": any(t.get("normalization") for t in metadata.get("inputs") or []),
        "image_classifier": classifier,
        "image_size": [tensor["shape"][1], tensor["shape"][2]] if classifier else None,
    }
