"""Generated Kotlin/Swift loaders: they must parse with the real grammars whatever the model's
names are, and the constants they embed must be the model's real signature."""

from __future__ import annotations

import copy
import json
import math
import re
import tempfile

import jinja2
import numpy as np
import pytest
import tree_sitter_kotlin
import tree_sitter_swift
from tree_sitter import Language, Parser

from tfbuild import codegen
from tfbuild.codegen import render_loaders, template_files
from tfbuild.errors import UserError

KOTLIN = Parser(Language(tree_sitter_kotlin.language()))
SWIFT = Parser(Language(tree_sitter_swift.language()))

KT_MAIN = "android/src/main/kotlin/com/example/digits/DigitsClassifier.kt"
KT_TEST = "android/src/androidTest/kotlin/com/example/digits/DigitsClassifierTest.kt"
SW_MAIN = "ios/Sources/DigitsClassifier/DigitsClassifier.swift"
SW_TEST = "ios/Tests/DigitsClassifierTests/DigitsClassifierTests.swift"
SW_PACKAGE = "ios/Package.swift"

ADVERSARIAL = ['in"put; System.exit(0)', "class", "$x", "\\(evil)", "*/ evil /*", "",
               "0abc", "line\nbreak", "évil😀"]


# ------------------------------------------------------------------------------------- helpers

def tensor(name, shape, dtype="float32", quant=None, signature=None):
    return {"name": name, "shape": shape, "shape_signature": signature or list(shape),
            "dtype": dtype, "quantization": quant}


def make_ctx(inputs, outputs, *, api="compiled_model", labels=None, golden=True, **extra):
    """A ctx as the build produces it, with golden samples matching the tensors' shapes; `api`
    is both platforms' (the iOS interpreter loader gets both delegates)."""
    delegates = ["coreml", "metal"] if api == "interpreter" else []
    ctx = {
        "recipe": "digits", "target": "int8", "model_file": "model.tflite",
        "model_sha256": "ab12" * 16, "tfbuild_version": "0.1.0",
        "signature_key": "serving_default", "inputs": inputs, "outputs": outputs,
        "uses_flex": False, "labels": labels,
        "android": {"package": "com.example.digits", "class_name": "DigitsClassifier", "api": api},
        "ios": {"class_name": "DigitsClassifier", "api": api, "delegates": delegates},
        "golden": None,
    }
    if golden:
        def samples(t):
            return [[[k % 5 for k in range(math.prod(t["shape"]))]] for _ in range(2)]
        ctx["golden"] = {"inputs": {t["name"]: samples(t) for t in inputs},
                         "outputs": {t["name"]: samples(t) for t in outputs}, "count": 2}
    ctx.update(extra)
    return ctx


def first_error(node):
    """The deepest ERROR/MISSING node, so the failure message points at the real culprit."""
    for child in node.children:
        if child.has_error or child.is_missing:
            return first_error(child)
    return node


def assert_parses(path, text):
    parser = KOTLIN if path.endswith(".kt") else SWIFT
    tree = parser.parse(text.encode())
    if tree.root_node.has_error:
        bad = first_error(tree.root_node)
        line = bad.start_point[0]
        pytest.fail(f"{path}:{line + 1}: {bad.type} at {bad.text.decode()[:60]!r} in line "
                    f"{text.splitlines()[line]!r}")
    return tree


def assert_all_parse(files):
    trees = {p: assert_parses(p, t) for p, t in files.items() if p.endswith((".kt", ".swift"))}
    assert trees, "no source files generated"
    return trees


def nodes(root, *types):
    """Every node of the given types under root (a tree-sitter Node)."""
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        if node.type in types:
            found.append(node)
        stack.extend(node.children)
    return found


def decode_kotlin(literal):
    """Inverse of codegen.kotlin_string; fails on an unescaped `$` (a live string template)."""
    body = literal[1:-1]
    escapes = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "\\": "\\", '"': '"', "$": "$"}
    units, out = [], []
    for token in re.findall(r"\\u[0-9A-Fa-f]{4}|\\.|.", body, re.S):
        if token.startswith("\\u"):
            units.append(int(token[2:], 16))
            continue
        if units:
            out.append(b"".join(u.to_bytes(2, "big") for u in units).decode("utf-16-be"))
            units = []
        assert token != "$", f"unescaped $ in Kotlin literal {literal}"
        out.append(escapes[token[1]] if token.startswith("\\") else token)
    if units:
        out.append(b"".join(u.to_bytes(2, "big") for u in units).decode("utf-16-be"))
    return "".join(out)


def decode_swift(literal):
    """Inverse of codegen.swift_string."""
    escapes = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "\\": "\\", '"': '"'}
    out = []
    for token in re.findall(r"\\u\{[0-9A-Fa-f]+\}|\\.|.", literal[1:-1], re.S):
        if token.startswith("\\u{"):
            out.append(chr(int(token[3:-1], 16)))
        else:
            assert token != "\\(", "interpolation in a Swift literal"
            out.append(escapes[token[1]] if token.startswith("\\") else token)
    return "".join(out)


STRING = r'("(?:[^"\\]|\\.)*")'


def kotlin_constants(text):
    """Parse the generated Kotlin companion back into {name_prefix: {field: value}}."""
    out = {}
    for prefix, literal in re.findall(r"const val (\w+)_NAME = " + STRING, text):
        out[prefix] = {"name": decode_kotlin(literal)}
    for prefix, field in out.items():
        field["dtype"] = decode_kotlin(re.search(rf"const val {prefix}_DTYPE = {STRING}", text)[1])
        for key, suffix in (("shape", "SHAPE"), ("shape_signature", "SHAPE_SIGNATURE")):
            values = re.search(rf"val {prefix}_{suffix}: IntArray = intArrayOf\(([^)]*)\)", text)[1]
            field[key] = [int(v) for v in values.split(",") if v.strip()]
        scale = re.search(rf"const val {prefix}_SCALE = (\S+)f\n", text)
        zero = re.search(rf"const val {prefix}_ZERO_POINT = (-?\d+)\n", text)
        field["quantization"] = (None if scale is None else
                                 {"scale": float(scale[1]), "zero_point": int(zero[1])})
    return out


def swift_constants(text):
    """Parse the generated Swift statics back into {camel_prefix: {field: value}}."""
    out = {}
    for prefix, literal in re.findall(r"static let (\w+)Name = " + STRING, text):
        field = out[prefix] = {"name": decode_swift(literal)}
        field["dtype"] = decode_swift(re.search(rf"static let {prefix}DataType = {STRING}", text)[1])
        for key, suffix in (("shape", "Shape"), ("shape_signature", "ShapeSignature")):
            values = re.search(rf"static let {prefix}{suffix}: \[Int\] = \[([^\]]*)\]", text)[1]
            field[key] = [int(v) for v in values.split(",") if v.strip()]
        scale = re.search(rf"static let {prefix}Scale: Float = (\S+)\n", text)
        zero = re.search(rf"static let {prefix}ZeroPoint = (-?\d+)\n", text)
        field["quantization"] = (None if scale is None else
                                 {"scale": float(scale[1]), "zero_point": int(zero[1])})
    return out


def signature_of(tensors):
    """What the generated constants must reproduce, keyed by the real tensor name."""
    return {t["name"]: {"name": t["name"], "dtype": t["dtype"], "shape": t["shape"],
                        "shape_signature": t["shape_signature"],
                        "quantization": t["quantization"]} for t in tensors}


def parameters(text, function):
    """Parameter names of a generated Kotlin `fun` or Swift `func`, in order."""
    match = re.search(rf"(?:fun|func) {function}\(\n(.*?)\n    \)", text, re.S)
    return [re.match(r"\s*(\w+):", line)[1] for line in match[1].splitlines()]


# --------------------------------------------------------------------------------- harness

def test_harness_detects_broken_code():
    # If the grammars accepted anything, every parse assertion below would be vacuous.
    with pytest.raises(pytest.fail.Exception):
        assert_parses("x.kt", 'val x = "a"b"\n')
    with pytest.raises(pytest.fail.Exception):
        assert_parses("x.swift", "let x = ) 1\n")


# --------------------------------------------------------------------------- model shapes

@pytest.mark.parametrize("api", ["compiled_model", "interpreter"])
def test_single_float_input(api):
    ctx = make_ctx([tensor("image", [1, 8, 8, 1])], [tensor("probs", [1, 10])], api=api)
    files = render_loaders(ctx)
    assert set(files) == {KT_MAIN, KT_TEST, "android/src/androidTest/assets/digits_int8_golden.json",
                          "android/README.md", SW_MAIN, SW_TEST, SW_PACKAGE,
                          "ios/Tests/DigitsClassifierTests/digits_int8_golden.json", "ios/README.md"}
    # The model itself is copied beside the golden vectors, a resource of the test target.
    assert codegen.model_copies(ctx) == ["ios/Tests/DigitsClassifierTests/model.tflite"]
    assert_all_parse(files)
    kt, sw = files[KT_MAIN], files[SW_MAIN]
    assert "fun run(\n        image: FloatArray,\n    ): Outputs" in kt
    assert "public func predict(\n        image: [Float]\n    ) throws -> Outputs" in sw
    assert "@JvmField val probs: FloatArray" in kt and "public let probs: [Float]" in sw
    # Nothing is quantized, so no float convenience overload or quantize helpers.
    assert "fun runFloat" not in kt and "func predictFloat" not in sw
    assert "fun quantize" not in kt and "func quantize" not in sw
    assert kotlin_constants(kt) == {"IMAGE": signature_of(ctx["inputs"])["image"],
                                    "PROBS": signature_of(ctx["outputs"])["probs"]}
    header = ("// Generated by tfbuild 0.1.0 from recipe digits, target int8, model sha256 "
              f"{'ab12' * 16}. Do not edit.")
    for path in (KT_MAIN, KT_TEST, SW_MAIN, SW_TEST):
        assert files[path].startswith(header + "\n")
    assert files[SW_PACKAGE].startswith("// swift-tools-version: 5.9\n" + header + "\n")


def test_int8_io_embeds_exact_scale_and_zero_point():
    q_in = {"scale": 0.003921568859368563, "zero_point": -128}
    q_out = {"scale": 1e-05, "zero_point": 3}
    ctx = make_ctx([tensor("image", [1, 8, 8, 1], "int8", q_in)],
                   [tensor("probs", [1, 10], "uint8", q_out)])
    files = render_loaders(ctx)
    assert_all_parse(files)
    kt, sw = files[KT_MAIN], files[SW_MAIN]
    expected = signature_of(ctx["inputs"] + ctx["outputs"])
    assert {v["name"]: v for v in kotlin_constants(kt).values()} == expected
    assert {v["name"]: v for v in swift_constants(sw).values()} == expected
    assert "const val IMAGE_SCALE = 0.003921568859368563f" in kt
    assert "const val PROBS_SCALE = 1e-05f" in kt
    assert "static let probsScale: Float = 1e-05" in sw
    # Raw API on integer arrays, float overloads quantize inputs and dequantize outputs.
    assert "fun run(\n        image: ByteArray," in kt and "image: Data" in sw
    assert "image = DigitsClassifier.quantizeImage(image)" in kt
    assert "probs = DigitsClassifier.dequantizeProbs(_raw.probs)" in kt
    assert "probs: DigitsClassifier.dequantizeProbs(_raw.probs)" in sw
    # uint8 bytes are read unsigned; int8 signed, with each dtype's clamp range.
    assert "((values[i].toInt() and 0xFF) - PROBS_ZERO_POINT) * PROBS_SCALE" in kt
    assert "IMAGE_ZERO_POINT, -128, 127).toByte()" in kt and "PROBS_ZERO_POINT, 0, 255)" in kt
    assert "Int(Int8(bitPattern: value)) - DigitsClassifier.imageZeroPoint" in sw
    # Both golden tests compare quantized outputs as real values, within one step: the loader's
    # dequantized output against the model's (golden JSON), so a wrong constant fails them.
    assert "doubles(DigitsClassifier.dequantizeProbs(result.probs)),\n                    PROBS_STEP * QUANTIZED_STEPS," in files[KT_TEST]
    assert "private const val PROBS_STEP = 1e-05f.toDouble()" in files[KT_TEST]
    assert "model.runFloat(" in files[KT_TEST]
    assert "DigitsClassifierTests.doubles(DigitsClassifier.dequantizeProbs(result.probs))" in files[SW_TEST]
    assert "atol: 1e-05 * DigitsClassifierTests.quantizedSteps" in files[SW_TEST]
    assert "model.predictFloat(" in files[SW_TEST]


def test_multiple_inputs_and_outputs_keep_signature_order_and_types():
    ins = [tensor("ids", [1, 16], "int32"), tensor("mask", [1, 16], "int64"),
           tensor("flags", [1, 4], "bool"), tensor("audio", [1, 100], "int16",
                                                   {"scale": 0.5, "zero_point": 0})]
    outs = [tensor("logits", [1, 3]), tensor("class_id", [1], "int32"),
            tensor("embedding", [1, 8], "int16", {"scale": 0.25, "zero_point": 1})]
    ctx = make_ctx(ins, outs, api="interpreter")
    files = render_loaders(ctx)
    assert_all_parse(files)
    kt, sw = files[KT_MAIN], files[SW_MAIN]
    assert parameters(kt, "run") == ["ids", "mask", "flags", "audio"]
    assert parameters(sw, "predict") == ["ids", "mask", "flags", "audio"]
    for declaration in ("ids: IntArray", "mask: LongArray", "flags: BooleanArray",
                        "audio: ShortArray", "@JvmField val classId: IntArray",
                        "@JvmField val embedding: ShortArray"):
        assert declaration in kt
    for declaration in ("ids: [Int32]", "mask: [Int64]", "flags: [Bool]", "audio: [Int16]",
                        "public let classId: [Int32]", "public let embedding: [Int16]"):
        assert declaration in sw
    assert {v["name"]: v for v in kotlin_constants(kt).values()} == signature_of(ins + outs)
    assert {v["name"]: v for v in swift_constants(sw).values()} == signature_of(ins + outs)
    golden = json.loads(files["android/src/androidTest/assets/digits_int8_golden.json"])
    assert golden["count"] == 2 and golden["inputs"]["flags"][0] == [False, True, True, True]
    assert golden["inputs"]["mask"][1] == [k % 5 for k in range(16)]


def test_dynamic_dims_resize_where_the_api_can():
    image = tensor("image", [1, 8, 8, 1], signature=[-1, 8, 8, 1])
    ctx = make_ctx([image, tensor("scale", [1])], [tensor("probs", [1, 10], signature=[-1, 10])],
                   api="interpreter")
    files = render_loaders(ctx)
    assert_all_parse(files)
    kt, sw = files[KT_MAIN], files[SW_MAIN]
    assert "intArrayOf(-1, 8, 8, 1)" in kt and "imageShapeSignature: [Int] = [-1, 8, 8, 1]" in sw
    # Dynamic input: size is a multiple of 64 put in dimension 0, then the tensor is resized.
    assert "Support.resolveDims(IMAGE_SHAPE, 0, image.size, IMAGE_NAME)" in kt
    assert "this.interpreter.resizeInput(" in kt and "this.interpreter.allocateTensors()" in kt
    assert "DigitsClassifier.resolveDims(DigitsClassifier.imageShape, dynamicDim: 0, count: image.count" in sw
    assert "try self.runner.resizeInput(named: name, toShape: Tensor.Shape(dims))" in sw
    # The static input keeps an exact element-count check.
    assert "require(scale.size == SCALE_ELEMENT_COUNT)" in kt
    assert "require(image.size == IMAGE_ELEMENT_COUNT)" not in kt
    assert "guard scale.count == DigitsClassifier.scaleElementCount" in sw

    # LiteRT's Kotlin CompiledModel API cannot resize: the converted shape is enforced exactly,
    # and the README says so. Its Swift API can (resizeInputTensor, v2.2.0): that loader resizes.
    compiled = render_loaders(make_ctx(ctx["inputs"], ctx["outputs"], api="compiled_model"))
    assert_all_parse(compiled)
    assert "require(image.size == IMAGE_ELEMENT_COUNT)" in compiled[KT_MAIN]
    assert "resize" not in compiled[KT_MAIN].replace("cannot resize", "")
    assert "cannot resize inputs: the loader takes exactly 64 values" in compiled["android/README.md"]
    sw = compiled[SW_MAIN]
    assert "guard image.count == DigitsClassifier.imageElementCount" not in sw
    assert ("try self.resize(input: 0, to: DigitsClassifier.resolveDims(DigitsClassifier.imageShape, "
            "dynamicDim: 0, count: image.count" in sw)
    assert "try self.model.resizeInputTensor(inputIndex: self.inputOrder[position], dimensions: dims" in sw
    assert "guard scale.count == DigitsClassifier.scaleElementCount" in sw
    assert "resizes the compiled model (`resizeInputTensor`)" in compiled["ios/README.md"]

    # Without dynamic inputs, no resize machinery is generated at all.
    static = render_loaders(make_ctx([tensor("scale", [1])], [tensor("p", [1])], api="interpreter"))
    assert "resolveDims" not in static[KT_MAIN] and "resolveDims" not in static[SW_MAIN]


def test_labels_are_escaped_and_exact():
    labels = ["zero", 'o"ne$', "t\\(wo)\n", "*/ x /*", "ünï 😀", "${System.exit(0)}"]
    ctx = make_ctx([tensor("image", [1, 4])], [tensor("probs", [1, 6])], labels=labels)
    files = render_loaders(ctx)
    assert_all_parse(files)
    kt, sw = files[KT_MAIN], files[SW_MAIN]
    kt_list = re.search(r"LABELS: List<String> = listOf\(\n(.*?)\n        \)", kt, re.S)[1]
    assert [decode_kotlin(s) for s in re.findall(STRING, kt_list)] == labels
    sw_list = re.search(r"labels: \[String\] = \[\n(.*?)\n    \]", sw, re.S)[1]
    assert [decode_swift(s) for s in re.findall(STRING, sw_list)] == labels
    assert "fun topK(scores: FloatArray, k: Int = 5): List<Pair<String, Float>>" in kt
    assert "public static func topK(_ scores: [Float], k: Int = 5)" in sw
    assert "LABELS" not in render_loaders(make_ctx(ctx["inputs"], ctx["outputs"]))[KT_MAIN]


# ------------------------------------------------------------------------------ safety

def adversarial_ctx(api):
    ins = [tensor(name, [1, 2]) for name in ADVERSARIAL]
    return make_ctx(ins, [tensor("class", [1, 2]), tensor("", [1])], api=api,
                    labels=ADVERSARIAL, recipe='re"cipe */ \n', target="t$(x)\\(y)",
                    model_file='m"o$del\\(x).tflite', signature_key="sig\n*/")


@pytest.mark.parametrize("api", ["compiled_model", "interpreter"])
def test_adversarial_names_give_valid_distinct_identifiers(api):
    ctx = adversarial_ctx(api)
    files = render_loaders(ctx)
    trees = assert_all_parse(files)
    kt, sw = files[KT_MAIN], files[SW_MAIN]
    expected = ["inPutSystemExit0", "classValue", "x", "evil", "evil2", "input", "input0Abc",
                "lineBreak", "evil3"]
    assert parameters(kt, "run") == expected and parameters(sw, "predict") == expected
    assert re.findall(r"@JvmField val (\w+): FloatArray,", kt) == ["classValue2", "output"]
    # Every name survives only inside escaped literals: decoding them gives the real names back.
    assert sorted(v["name"] for v in kotlin_constants(kt).values()) == sorted(ADVERSARIAL + ["class", ""])
    assert sorted(v["name"] for v in swift_constants(sw).values()) == sorted(ADVERSARIAL + ["class", ""])
    assert decode_kotlin(re.search(r"const val MODEL_FILE = " + STRING, kt)[1]) == ctx["model_file"]
    assert decode_swift(re.search(r"static let signatureKey = " + STRING, sw)[1]) == "sig\n*/"
    # No injected code: identifiers are plain ASCII and none comes from the payloads.
    for path, tree in trees.items():
        for node in nodes(tree.root_node, "identifier", "simple_identifier", "type_identifier"):
            text = node.text.decode()
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text), (path, text)
            assert text not in {"System", "exit"}, (path, text)
        if path == SW_MAIN:  # the loader interpolates nothing; the test only its own locals
            assert not nodes(tree.root_node, "interpolated_expression")
        for node in nodes(tree.root_node, "string_literal"):
            decode_kotlin(node.text.decode())
        comments = nodes(tree.root_node, "line_comment", "comment")
        assert comments and all("\n" not in c.text.decode() for c in comments)
    assert "exit(0)" not in "".join(re.sub(STRING, '""', line) for line in kt.splitlines()
                                    if not line.lstrip().startswith(("*", "//", "/**")))


def test_literal_helpers_round_trip():
    tricky = ['a"b', "a\\b", "$x", "${x}", "\\(x)", "\n\r\t\b\0", "\x01\x7f", "é😀", "\u2028", ""]
    for text in tricky:
        assert decode_kotlin(codegen.kotlin_string(text)) == text
        assert decode_swift(codegen.swift_string(text)) == text
        assert codegen.kotlin_string(text).isascii() and codegen.swift_string(text).isascii()
    assert codegen.swift_string("\ud800") == '"\\u{FFFD}"'  # a lone surrogate is no scalar
    for text in ("*/", "/*", "a*/*/b", "x\ny", "*//*", "/**/", "\u2028"):
        comment = codegen.comment_text(text)
        assert "*/" not in comment and "/*" not in comment and comment.isprintable()
        assert comment.isascii()


def test_identifier_helpers():
    assert codegen.identifier_words("", "input") == ["input"]
    assert codegen.identifier_words("3d points", "output") == ["output", "3", "d", "points"]
    assert codegen.identifier_words("self", "input") == ["self", "value"]
    assert codegen.identifier_words("serving_default_imageData:0", "input") == [
        "serving", "default", "image", "data", "0"]
    unique = codegen.unique_words(["a b", "aB", "ab", "a_b"], ["input"] * 4)
    forms = [(codegen.camel(w), codegen.screaming(w)) for w in unique]
    assert len({c.lower() for c, _ in forms}) == 4 and len({s for _, s in forms}) == 4


# -------------------------------------------------------------------------- platforms

def test_android_apis_and_dependencies():
    ctx = make_ctx([tensor("image", [1, 4])], [tensor("probs", [1, 2])], uses_flex=True)
    compiled = render_loaders(ctx)
    interp = render_loaders(dict(ctx, android=dict(ctx["android"], api="interpreter")))
    assert_all_parse(compiled)
    assert_all_parse(interp)
    assert "import com.google.ai.edge.litert.CompiledModel" in compiled[KT_MAIN]
    assert "CompiledModel.create(context.assets, assetName" in compiled[KT_MAIN]
    assert "org.tensorflow.lite" not in compiled[KT_MAIN]
    assert "import org.tensorflow.lite.Interpreter" in interp[KT_MAIN]
    assert "this.interpreter.runSignature(_inputs, _outputs, SIGNATURE_KEY)" in interp[KT_MAIN]
    assert "litert" not in interp[KT_MAIN]
    assert 'implementation("com.google.ai.edge.litert:litert:2.' in compiled["android/README.md"]
    assert 'implementation("org.tensorflow:tensorflow-lite:2.16.1")' in interp["android/README.md"]
    for readme in (compiled["android/README.md"], interp["android/README.md"]):
        assert "tensorflow-lite-select-tf-ops" in readme and "androidx.test.ext:junit" in readme
    no_flex = render_loaders(dict(ctx, uses_flex=False))
    assert "select-tf-ops" not in no_flex["android/README.md"]


def test_ios_apis_packages_and_dependencies():
    ctx = make_ctx([tensor("image", [1, 4])], [tensor("probs", [1, 2])], uses_flex=True, api="interpreter")
    interp = render_loaders(ctx)
    compiled = render_loaders(make_ctx(ctx["inputs"], ctx["outputs"], uses_flex=True))
    assert_all_parse(compiled)
    assert_all_parse(interp)
    # compiled_model (the default): LiteRT's Swift package, a SwiftPM dependency of the package.
    assert "import LiteRT\n" in compiled[SW_MAIN] and "TensorFlowLite" not in compiled[SW_MAIN]
    assert "try self.model.run(inputs: self.inputBuffers, outputs: self.outputBuffers" in compiled[SW_MAIN]
    manifest = compiled[SW_PACKAGE]
    # Pinned to v2.2.0's commit: SwiftPM refuses LiteRT's unsafe flags from a version requirement.
    assert ('.package(url: "https://github.com/google-ai-edge/LiteRT", '
            'revision: "145c7523ff08d5e57ab5c582141775eea47da9c7")') in manifest
    assert '.product(name: "LiteRT", package: "LiteRT")' in manifest
    assert '.copy("digits_int8_golden.json"), .copy("model.tflite")' in manifest
    readme = compiled["ios/README.md"]
    assert "bazel build //litert/swift:CLiteRT" in readme and "pod '" not in readme
    assert "at commit `145c7523ff08d5e57ab5c582141775eea47da9c7`" in readme
    # A fork by URL and revision, or a local checkout: the package identity follows the name.
    fork = render_loaders(make_ctx(ctx["inputs"], ctx["outputs"], ios=dict(
        ctx["ios"], api="compiled_model", delegates=[],
        litert={"url": "https://example.com/me/litert-fork.git", "revision": "a" * 40})))[SW_PACKAGE]
    assert '.package(url: "https://example.com/me/litert-fork.git", revision: "' + "a" * 40 + '")' in fork
    assert '.product(name: "LiteRT", package: "litert-fork")' in fork
    local = render_loaders(make_ctx(ctx["inputs"], ctx["outputs"], ios=dict(
        ctx["ios"], api="compiled_model", delegates=[], litert={"path": "../../../../LiteRT"})))
    assert '.package(path: "../../../../LiteRT"),' in local[SW_PACKAGE] and "revision:" not in local[SW_PACKAGE]
    assert "the local checkout `../../../../LiteRT`" in local["ios/README.md"]
    assert "ships no Flex" in compiled["ios/README.md"]
    # interpreter: TensorFlowLiteSwift from CocoaPods; the manifest declares no dependency.
    assert "import TensorFlowLite\n" in interp[SW_MAIN] and "CoreMLDelegate()" in interp[SW_MAIN]
    assert "MetalDelegate()" in interp[SW_MAIN] and "dependencies: [.product" not in interp[SW_PACKAGE]
    assert "CocoaPod only" in interp[SW_PACKAGE] and "LiteRT" not in interp[SW_PACKAGE]
    assert "pod 'TensorFlowLiteSelectTfOps'" in interp["ios/README.md"]
    assert ":subspecs => ['CoreML', 'Metal']" in interp["ios/README.md"]
    no_flex = render_loaders(dict(ctx, uses_flex=False, ios=dict(ctx["ios"], delegates=[])))
    assert "SelectTfOps" not in no_flex["ios/README.md"] and "subspecs" not in no_flex["ios/README.md"]
    assert "Accelerator" not in no_flex[SW_MAIN] and "CoreMLDelegate" not in no_flex[SW_MAIN]
    for files in (compiled, interp):
        assert files[SW_PACKAGE].count(".testTarget(") == 1
    bare = make_ctx(ctx["inputs"], ctx["outputs"], golden=False)
    assert ".testTarget(" not in render_loaders(bare)[SW_PACKAGE] and codegen.model_copies(bare) == []


def test_ios_delegates_belong_to_the_interpreter_api():
    base = make_ctx([tensor("x", [1])], [tensor("y", [1])])
    with pytest.raises(UserError) as err:
        render_loaders(dict(base, ios={"class_name": "A", "api": "compiled_model", "delegates": ["metal"]}))
    assert err.value.key == "mobile.ios.delegates" and "api: interpreter" in err.value.hint
    with pytest.raises(UserError) as err:
        render_loaders(dict(base, ios={"class_name": "A", "api": "coreml", "delegates": []}))
    assert err.value.key == "mobile.ios.api"


def test_platforms_and_golden_are_optional():
    ctx = make_ctx([tensor("x", [1])], [tensor("y", [1])], golden=False)
    assert set(render_loaders(dict(ctx, ios=None))) == {KT_MAIN, "android/README.md"}
    assert set(render_loaders(dict(ctx, android=None))) == {SW_MAIN, SW_PACKAGE, "ios/README.md"}
    assert render_loaders(dict(ctx, android=None, ios=None)) == {}


def test_golden_json_is_flat_and_json_safe():
    ctx = make_ctx([tensor("x", [1, 2])], [tensor("y", [1, 2])])
    ctx["golden"]["outputs"]["y"] = [[[float("nan"), float("inf")]], [[-float("inf"), 0.5]]]
    golden = json.loads(render_loaders(ctx)["ios/Tests/DigitsClassifierTests/digits_int8_golden.json"])
    assert golden == {"count": 2, "inputs": {"x": [[0, 1], [0, 1]]},
                      "outputs": {"y": [["NaN", "Infinity"], ["-Infinity", 0.5]]},
                      "dequantized": {"inputs": {}, "outputs": {}}}


def test_golden_json_carries_the_real_values_of_quantized_tensors():
    # (q - zero_point) * scale in float32, as the generated dequantize helpers compute it.
    q = {"scale": 0.1, "zero_point": -128}
    ctx = make_ctx([tensor("x", [1, 2], "int8", q)], [tensor("y", [1, 3], "uint8", {"scale": 0.5, "zero_point": 2})])
    ctx["golden"]["inputs"]["x"] = [[[-128, 127]], [[0, -1]]]
    ctx["golden"]["outputs"]["y"] = [[[0, 2, 255]], [[1, 1, 1]]]
    golden = json.loads(render_loaders(ctx)["ios/Tests/DigitsClassifierTests/digits_int8_golden.json"])
    f32 = np.float32
    assert golden["dequantized"]["inputs"]["x"] == [[0.0, float(f32(255) * f32(0.1))],
                                                    [float(f32(128) * f32(0.1)), float(f32(127) * f32(0.1))]]
    assert golden["dequantized"]["outputs"]["y"] == [[-1.0, 0.0, 126.5], [-0.5, -0.5, -0.5]]
    assert golden["inputs"]["x"] == [[-128, 127], [0, -1]]


def test_render_is_pure(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    render_loaders(make_ctx([tensor("x", [1])], [tensor("y", [1])]))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- user errors

@pytest.mark.parametrize("android, key", [
    ({"package": "com.example.class", "class_name": "A", "api": "interpreter"}, "mobile.android.package"),
    ({"package": "com..x", "class_name": "A", "api": "interpreter"}, "mobile.android.package"),
    ({"package": "com.ex-ample", "class_name": "A", "api": "interpreter"}, "mobile.android.package"),
    ({"package": "com.example", "class_name": "My Class", "api": "interpreter"}, "mobile.android.class_name"),
    ({"package": "com.example", "class_name": "Interpreter", "api": "interpreter"}, "mobile.android.class_name"),
    ({"package": "com.example", "class_name": "A", "api": "tflite"}, "mobile.android.api"),
])
def test_invalid_user_names_raise_user_error(android, key):
    with pytest.raises(UserError) as err:
        render_loaders(make_ctx([tensor("x", [1])], [tensor("y", [1])], android=android))
    assert err.value.key == key and err.value.expected


def test_unsupported_dtypes_raise_user_error():
    base = make_ctx([tensor("x", [1], "int16", {"scale": 1.0, "zero_point": 0})], [tensor("y", [1])])
    with pytest.raises(UserError) as err:
        render_loaders(base)
    assert err.value.key == "mobile.android.api" and err.value.expected == "interpreter"
    with pytest.raises(UserError):
        render_loaders(make_ctx([tensor("x", [1], "float16")], [tensor("y", [1])]))
    with pytest.raises(UserError) as err:
        render_loaders(dict(base, android=None, ios={"class_name": "A", "api": "interpreter",
                                                     "delegates": ["gpu"]}))
    assert err.value.key == "mobile.ios.delegates"


# ------------------------------------------------------------------------------ templates

def test_override_dir_wins_and_is_listed_first(tmp_path):
    override = tmp_path / "android" / "interpreter" / "Loader.kt.j2"
    override.parent.mkdir(parents=True)
    override.write_text('// custom\nval NAME = {{ inputs[0].name|kotlin_string }}\n')
    ctx = make_ctx([tensor('a"b$', [1])], [tensor("y", [1])], api="interpreter")
    files = render_loaders(ctx, [tmp_path])
    assert files[KT_MAIN] == '// custom\nval NAME = "a\\"b\\$"\n'
    assert_parses(KT_MAIN, files[KT_MAIN])
    # Other templates still come from the built-in set.
    assert "class DigitsClassifierTest" in files[KT_TEST]
    compiled = render_loaders(dict(ctx, android=dict(ctx["android"], api="compiled_model")), [tmp_path])
    assert "// custom" not in compiled[KT_MAIN]

    listed = template_files([tmp_path])
    assert listed[0] == override
    builtin = template_files()
    assert listed[1:] == builtin
    names = {p.relative_to(codegen.builtin_template_dir()).as_posix() for p in builtin}
    for name in ("android/compiled_model/Loader.kt.j2", "android/interpreter/Loader.kt.j2",
                 "android/LoaderTest.kt.j2", "android/README.md.j2", "ios/compiled_model/Loader.swift.j2",
                 "ios/interpreter/Loader.swift.j2", "ios/_shared.swift.j2", "ios/Package.swift.j2",
                 "ios/LoaderTests.swift.j2", "ios/README.md.j2", "_header.j2"):
        assert name in names


def test_compiled_templates_are_reused_only_for_the_same_source(tmp_path, monkeypatch):
    """The bytecode cache outlives the environment (a new process); an edited template, same
    path and size, is compiled anew, and a cache that cannot be written only costs a compile."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    override = tmp_path / "tpl" / "android" / "interpreter" / "Loader.kt.j2"
    override.parent.mkdir(parents=True)
    ctx = make_ctx([tensor("x", [1])], [tensor("y", [1])], api="interpreter")

    def rendered(text: str) -> str:
        override.write_text(text)
        codegen._environment_for.cache_clear()  # as a new process would start
        return render_loaders(ctx, [tmp_path / "tpl"])[KT_MAIN]

    compiled = []
    compile_source = jinja2.Environment.compile
    monkeypatch.setattr(jinja2.Environment, "compile",
                        lambda self, source, name=None, *a, **k: compiled.append(name) or compile_source(self, source, name, *a, **k))
    assert rendered("// one {{ target }}\n") == "// one int8\n"
    assert any((tmp_path / "tmp").rglob("__tfbuild_*.cache"))
    assert "android/interpreter/Loader.kt.j2" in compiled
    compiled.clear()
    assert rendered("// one {{ target }}\n") == "// one int8\n"
    assert "android/interpreter/Loader.kt.j2" not in compiled  # a new environment, the same code reused
    assert rendered("// two {{ target }}\n") == "// two int8\n"
    monkeypatch.setattr("jinja2.FileSystemBytecodeCache.dump_bytecode", _raise_oserror)
    assert rendered("// six {{ target }}\n") == "// six int8\n"
    codegen._environment_for.cache_clear()


def _raise_oserror(*args):
    raise OSError(28, "No space left on device")


def test_an_override_under_a_renamed_template_name_is_refused(tmp_path):
    # ios/Loader.swift.j2 became one template per API: an old override would silently stop applying.
    (tmp_path / "ios").mkdir()
    (tmp_path / "ios" / "Loader.swift.j2").write_text("// custom\n")
    with pytest.raises(UserError) as err:
        render_loaders(make_ctx([tensor("x", [1])], [tensor("y", [1])]), [tmp_path])
    assert err.value.key == "mobile.templates" and "ios/compiled_model/Loader.swift.j2" in err.value.expected


def test_ctx_is_not_mutated():
    ctx = adversarial_ctx("interpreter")
    before = copy.deepcopy(ctx)
    render_loaders(ctx)
    assert json.dumps(ctx, sort_keys=True, default=str) == json.dumps(before, sort_keys=True, default=str)
