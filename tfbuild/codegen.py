"""Generate Android (Kotlin) and iOS (Swift) loaders from a converted model's real signature.

The model's tensor names, labels and recipe names are arbitrary strings, so nothing derived from
them reaches the generated code without passing through one of the helpers below: identifiers are
rebuilt from ASCII words (never copied), string literals are escaped for their language, comments
are neutralised. The same helpers are registered as jinja2 filters so project template overrides
get the same guarantees.

`render_loaders` is pure (returns text, writes nothing); `template_files` lists every template it
may read so the build can hash them into its cache key.
"""

from __future__ import annotations

import json
import math
import operator
import re
import unicodedata
from pathlib import Path

from tfbuild.errors import UserError

# Dependency versions written into the generated READMEs (see docs/mobile.md for their sources).
VERSIONS = {
    "litert": "2.1.0",
    "litert_classic": "1.4.0",
    "tensorflow_lite": "2.16.1",
    "tensorflow_lite_swift": "2.17.0",
    "androidx_test_junit": "1.2.1",
    "androidx_test_runner": "1.6.2",
    "junit": "4.13.2",
}

ANDROID_APIS = ("compiled_model", "interpreter")
IOS_DELEGATES = ("coreml", "metal")

KOTLIN_HARD_KEYWORDS = frozenset(
    "as break class continue do else false for fun if in interface is null object package return "
    "super this throw true try typealias typeof val var when while".split())
# Java keywords are legal in Kotlin, but @JvmField properties so named are unusable from Java,
# and an Android namespace cannot contain them.
JAVA_KEYWORDS = frozenset(
    "abstract assert boolean break byte case catch char class const continue default do double "
    "else enum extends final finally float for goto if implements import instanceof int interface "
    "long native new package private protected public return short static strictfp super switch "
    "synchronized this throw throws transient try void volatile while true false null var record "
    "yield sealed permits".split())
# Swift's reserved words (declarations, statements, expressions and types), plus Type/Protocol,
# which cannot be member names, and some/any/async, which change how a declaration parses.
SWIFT_KEYWORDS = frozenset(
    "associatedtype class deinit enum extension fileprivate func import init inout internal let "
    "open operator private precedencegroup protocol public rethrows static struct subscript "
    "typealias var break case catch continue default defer do else fallthrough for guard if in "
    "repeat return throw switch where while Any as await false is nil self Self super throws true "
    "try Type Protocol some any async".split())
# Standard functions the generated bodies call unqualified while the inputs are parameters.
CALLED_UNQUALIFIED = frozenset({"check", "require"})
RESERVED_CAMEL = KOTLIN_HARD_KEYWORDS | JAVA_KEYWORDS | SWIFT_KEYWORDS | CALLED_UNQUALIFIED

# Type names the templates use unqualified: a user class with one of these names would shadow it.
RESERVED_TYPES = frozenset(
    "Outputs FloatOutputs Support LoaderError Accelerator Companion AutoCloseable Context "
    "CompiledModel TensorBuffer Interpreter Delegate ByteBuffer ByteOrder FloatArray ByteArray "
    "ShortArray IntArray LongArray BooleanArray DoubleArray Float Int Long Short Byte Boolean "
    "Double String List Map Pair Math Any Unit Array Nothing JSONObject JSONArray Test RunWith "
    "AndroidJUnit4 InstrumentationRegistry Assert Synchronized JvmField JvmStatic JvmOverloads "
    "Exception IllegalArgumentException IllegalStateException Data Bundle SignatureRunner Tensor "
    "CoreMLDelegate MetalDelegate Foundation TensorFlowLite XCTest XCTestCase Int8 UInt8 Int16 "
    "Int32 Int64 Bool Error NSString NSNumber JSONSerialization Self Never Optional Swift "
    "MemoryLayout Kotlin Java".split())

# Per dtype: Kotlin array type, LiteRT TensorBuffer suffix (None: unsupported by CompiledModel),
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

_PACKAGE_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CLASS_NAME = re.compile(r"[A-Z][A-Za-z0-9_]*\Z")
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


# ---------------------------------------------------------------------------------------------
# Identifiers: rebuilt from ASCII words, so no input character survives unless it is [A-Za-z0-9].
# ---------------------------------------------------------------------------------------------

def words(text: str) -> list[str]:
    """Split any string into lower-case ASCII words ("serving_default_imageData:0" -> serving,
    default, image, data, 0).

    Accents are folded first so "café" still yields a readable "cafe" instead of vanishing.
    """
    folded = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    return [w.lower() for w in _WORD.findall(folded)]


def camel(parts: list[str] | str) -> str:
    """lowerCamelCase from words; never contains '_' so it cannot meet a SCREAMING constant."""
    ws = words(parts) if isinstance(parts, str) else list(parts)
    return ws[0] + "".join(w.capitalize() for w in ws[1:]) if ws else ""


def pascal(parts: list[str] | str) -> str:
    """PascalCase from words, used as a suffix (quantize<Pascal>)."""
    ws = words(parts) if isinstance(parts, str) else list(parts)
    return "".join(w.capitalize() for w in ws)


def screaming(parts: list[str] | str) -> str:
    """SCREAMING_SNAKE_CASE from words, for Kotlin constants."""
    ws = words(parts) if isinstance(parts, str) else list(parts)
    return "_".join(w.upper() for w in ws)


def identifier_words(text: str, role: str) -> list[str]:
    """Words for a valid, keyword-free identifier in both languages.

    An empty name becomes the role ("input"/"output"); a leading digit gets the role as prefix;
    a keyword ("class", "self") gets a "value" suffix.
    """
    ws = words(text)
    if not ws:
        ws = [role]
    elif ws[0][0].isdigit():
        ws = [role, *ws]
    if camel(ws) in RESERVED_CAMEL:
        ws = [*ws, "value"]
    return ws


def unique_words(names: list[str], role_of: list[str]) -> list[list[str]]:
    """Identifier words for each name, de-duplicated with numeric suffixes.

    Collisions are judged on the case- and separator-free spelling, so two results can never
    share a camelCase, PascalCase or SCREAMING_SNAKE form.
    """
    seen: set[str] = set()
    result = []
    for name, role in zip(names, role_of):
        base = identifier_words(name, role)
        candidate, n = base, 1
        while "".join(candidate) in seen:
            n += 1
            candidate = [*base, str(n)]
        seen.add("".join(candidate))
        result.append(candidate)
    return result


# ---------------------------------------------------------------------------------------------
# Literals and comments
# ---------------------------------------------------------------------------------------------

_KOTLIN_ESCAPES = {"\\": "\\\\", '"': '\\"', "$": "\\$", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                   "\b": "\\b"}
_SWIFT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}


def kotlin_string(value: object) -> str:
    """A quoted Kotlin string literal, pure ASCII: `$` cannot start a template, astral characters
    become UTF-16 surrogate escapes (Kotlin only has \\uXXXX)."""
    out = []
    for ch in str(value):
        if ch in _KOTLIN_ESCAPES:
            out.append(_KOTLIN_ESCAPES[ch])
        elif 0x20 <= ord(ch) < 0x7F:
            out.append(ch)
        else:
            units = ch.encode("utf-16-be", "surrogatepass")
            out.extend(f"\\u{units[i]:02X}{units[i + 1]:02X}" for i in range(0, len(units), 2))
    return '"' + "".join(out) + '"'


def swift_string(value: object) -> str:
    """A quoted Swift string literal, pure ASCII: escaping the backslash defuses `\\(`
    interpolation; lone surrogates (not Unicode scalars, so not expressible) become U+FFFD."""
    out = []
    for ch in str(value):
        code = ord(ch)
        if ch in _SWIFT_ESCAPES:
            out.append(_SWIFT_ESCAPES[ch])
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\u{{{0xFFFD if 0xD800 <= code <= 0xDFFF else code:X}}}")
    return '"' + "".join(out) + '"'


def comment_text(value: object) -> str:
    """Text safe inside any // or /* */ comment of Kotlin or Swift (both nest block comments):
    one line, printable ASCII (others as U+XXXX), no comment delimiters."""
    out = []
    for ch in str(value):
        code = ord(ch)
        if 0x20 <= code < 0x7F:
            out.append(ch)
        elif ch in "\t\n\r":
            out.append(" ")
        else:
            out.append(f"U+{code:04X}")
    text = "".join(out)
    while "/*" in text or "*/" in text:
        text = text.replace("/*", "/ *").replace("*/", "* /")
    return text


def markdown_code(value: object) -> str:
    """An inline Markdown code span that cannot break out of itself or the line."""
    text = comment_text(value).replace("`", "'")
    return f"`{text}`"


def float_literal(value: float) -> str:
    """The exact repr of a finite float, valid as a Swift literal and (with an `f`) a Kotlin one.

    Python's repr is the shortest round-tripping form, so parsing the literal back gives the same
    double, and the compilers round it to the same float32 the model stores.
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    return repr(float(value))


def kotlin_float(value: float) -> str:
    """A Kotlin Float literal with the exact repr digits, e.g. 0.0039215f or 1e-05f."""
    return float_literal(value) + "f"


def int_list(values: list[int]) -> str:
    """Comma-separated integers; ints only, so nothing from a string can slip through."""
    return ", ".join(str(int(v)) for v in values)


def safe_filename(value: object) -> str:
    """A file-name component: [A-Za-z0-9._-] only, never empty, never a dot-file."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", str(value)).lstrip(".")
    return text or "model"


FILTERS = {
    "camel": camel, "pascal": pascal, "screaming": screaming,
    "kotlin_string": kotlin_string, "swift_string": swift_string,
    "comment": comment_text, "md_code": markdown_code,
    "kotlin_float": kotlin_float, "swift_float": float_literal,
    "int_list": int_list, "safe_filename": safe_filename,
}


# ---------------------------------------------------------------------------------------------
# Validation of the user's names
# ---------------------------------------------------------------------------------------------

def validate_package(package: object) -> str:
    """A Java/Kotlin package usable as an Android namespace: dotted identifiers, no keywords."""
    expected = "dotted identifiers such as com.example.digits (ASCII letters, digits, _; no keywords)"
    if not isinstance(package, str) or not package:
        raise UserError("missing Android package", key="mobile.android.package", expected=expected)
    for segment in package.split("."):
        if not _PACKAGE_SEGMENT.match(segment) or segment in KOTLIN_HARD_KEYWORDS | JAVA_KEYWORDS:
            raise UserError(f"invalid Android package {package!r} (segment {segment!r})",
                            key="mobile.android.package", expected=expected)
    return package


def validate_class_name(name: object, key: str) -> str:
    """A class name that is a type name in both languages and shadows nothing the code uses."""
    expected = "a PascalCase identifier such as DigitsClassifier (ASCII letters, digits, _)"
    if not isinstance(name, str) or not _CLASS_NAME.match(name):
        raise UserError(f"invalid class name {name!r}", key=key, expected=expected)
    if name in RESERVED_TYPES or name in RESERVED_CAMEL:
        raise UserError(f"class name {name!r} clashes with a name the generated code uses",
                        key=key, expected=expected, hint=f"e.g. {name}Model")
    return name


# ---------------------------------------------------------------------------------------------
# ctx -> template view
# ---------------------------------------------------------------------------------------------

def _require(ctx: dict, keys: tuple[str, ...], where: str) -> None:
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
    _require(raw, ("name", "shape", "shape_signature", "dtype"), f"{role} tensor")
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


def _tensors(ctx: dict) -> tuple[list[dict], list[dict]]:
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


def golden_json(ctx: dict, inputs: list[dict], outputs: list[dict]) -> str:
    """The golden vectors as the generated tests read them: flat value lists per sample,
    keyed by the tensors' real names."""
    golden = ctx["golden"]
    _require(golden, ("inputs", "outputs", "count"), "golden")
    count = int(golden["count"])
    data: dict = {"count": count, "inputs": {}, "outputs": {}}
    for section, tensors in (("inputs", inputs), ("outputs", outputs)):
        for t in tensors:
            samples = golden[section].get(t["name"])
            if not isinstance(samples, list) or len(samples) != count:
                raise ValueError(f"golden {section} for {t['name']!r} must list {count} samples")
            data[section][t["name"]] = [[_json_value(v, t["dtype"]) for v in _flatten(s)]
                                        for s in samples]
    return json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":")) + "\n"


def _android_view(raw: dict, inputs: list[dict], outputs: list[dict]) -> dict:
    _require(raw, ("package", "class_name", "api"), "android")
    package = validate_package(raw["package"])
    class_name = validate_class_name(raw["class_name"], "mobile.android.class_name")
    api = raw["api"]
    if api not in ANDROID_APIS:
        raise UserError(f"unknown Android api {api!r}", key="mobile.android.api",
                        expected=" or ".join(ANDROID_APIS))
    if api == "compiled_model":
        for t in inputs + outputs:
            if t["litert"] is None:
                raise UserError(f"tensor {t['name']!r} has dtype {t['dtype']}, which the LiteRT "
                                f"CompiledModel Kotlin API cannot read or write",
                                key="mobile.android.api", expected="interpreter",
                                hint="set mobile.android.api: interpreter")
    return {"package": package, "package_path": package.replace(".", "/"),
            "class_name": class_name, "api": api}


def _ios_view(raw: dict) -> dict:
    _require(raw, ("class_name",), "ios")
    class_name = validate_class_name(raw["class_name"], "mobile.ios.class_name")
    delegates = list(raw.get("delegates") or [])
    unknown = [d for d in delegates if d not in IOS_DELEGATES]
    if unknown:
        raise UserError(f"unknown iOS delegates {unknown}", key="mobile.ios.delegates",
                        expected=f"a subset of {list(IOS_DELEGATES)}")
    return {"class_name": class_name,
            "coreml": "coreml" in delegates, "metal": "metal" in delegates}


def build_view(ctx: dict) -> dict:
    """The template context: ctx validated, with every derived name computed exactly once."""
    _require(ctx, CTX_KEYS, "codegen ctx")
    inputs, outputs = _tensors(ctx)
    labels = ctx["labels"]
    if labels is not None and not isinstance(labels, list):
        raise ValueError("ctx labels must be a list or None")
    tensors = inputs + outputs
    view = {
        "recipe": str(ctx["recipe"]), "target": str(ctx["target"]),
        "model_file": str(ctx["model_file"]), "model_sha256": str(ctx["model_sha256"]),
        "tfbuild_version": str(ctx["tfbuild_version"]),
        "signature_key": str(ctx["signature_key"]),
        "inputs": inputs, "outputs": outputs, "tensors": tensors,
        "uses_flex": bool(ctx["uses_flex"]),
        "labels": None if labels is None else [str(x) for x in labels],
        "quantized": any(t["quantized"] for t in tensors),
        "dynamic": any(t["dynamic"] for t in inputs),
        "dtypes": sorted({t["dtype"] for t in tensors}),
        "has_golden": ctx["golden"] is not None,
        "golden_file": f"{safe_filename(ctx['recipe'])}_{safe_filename(ctx['target'])}_golden.json",
        "versions": dict(VERSIONS),
    }
    view["android"] = None if ctx["android"] is None else _android_view(ctx["android"], inputs, outputs)
    view["ios"] = None if ctx["ios"] is None else _ios_view(ctx["ios"])
    return view


# ---------------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------------

def builtin_template_dir() -> Path:
    """The shipped templates: package data `tfbuild.templates` when installed, else the repo's
    top-level templates/ next to the tfbuild/ package (a source checkout)."""
    import importlib.resources

    try:
        root = importlib.resources.files("tfbuild.templates")
    except ModuleNotFoundError:
        root = None
    if isinstance(root, Path) and root.is_dir():
        return root
    return Path(__file__).resolve().parent.parent / "templates"


def _search_path(template_dirs: list[Path] | None) -> list[Path]:
    return [Path(d) for d in (template_dirs or [])] + [builtin_template_dir()]


def template_files(template_dirs: list[Path] | None = None) -> list[Path]:
    """Every template file render_loaders may read, override dirs first, then built-ins.

    Only `*.j2` files are templates; listing is sorted so the build's hash is stable.
    """
    files: list[Path] = []
    for directory in _search_path(template_dirs):
        if directory.is_dir():
            files.extend(sorted(p for p in directory.rglob("*.j2") if p.is_file()))
    return files


def _environment(template_dirs: list[Path] | None):
    """Overrides win because FileSystemLoader searches its directories in order."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in _search_path(template_dirs)]),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False,
        trim_blocks=True, lstrip_blocks=True)
    env.filters.update(FILTERS)
    return env


def _outputs_plan(view: dict) -> list[tuple[str, str]]:
    """(template name, output path) for every generated file."""
    plan = []
    android, ios = view["android"], view["ios"]
    if android:
        src = f"android/src/main/kotlin/{android['package_path']}/{android['class_name']}.kt"
        plan.append((f"android/{android['api']}/Loader.kt.j2", src))
        if view["has_golden"]:
            test = (f"android/src/androidTest/kotlin/{android['package_path']}/"
                    f"{android['class_name']}Test.kt")
            plan.append(("android/LoaderTest.kt.j2", test))
        plan.append(("android/README.md.j2", "android/README.md"))
    if ios:
        name = ios["class_name"]
        plan.append(("ios/Loader.swift.j2", f"ios/Sources/{name}/{name}.swift"))
        if view["has_golden"]:
            plan.append(("ios/LoaderTests.swift.j2", f"ios/Tests/{name}Tests/{name}Tests.swift"))
        plan.append(("ios/README.md.j2", "ios/README.md"))
    return plan


def render_loaders(ctx: dict, template_dirs: list[Path] | None = None) -> dict[str, str]:
    """Return {relative_path: file_text} for every generated file. Pure: writes nothing."""
    view = build_view(ctx)
    env = _environment(template_dirs)
    files = {path: env.get_template(name).render(**view) for name, path in _outputs_plan(view)}
    if view["has_golden"]:
        golden = golden_json(ctx, view["inputs"], view["outputs"])
        if view["android"]:
            files[f"android/src/androidTest/assets/{view['golden_file']}"] = golden
        if view["ios"]:
            name = view["ios"]["class_name"]
            files[f"ios/Tests/{name}Tests/{view['golden_file']}"] = golden
    return files
