"""Generated loaders compile: Kotlin with kotlinc, Swift with swiftc, against the APIs they call.

Parsing (test_codegen) proves the syntax; only a compiler sees a method the library lacks, a
missing `try`, an Int passed for a Long or an optional left unwrapped. The APIs are stubs in
tests/fixtures/api/ that mirror the real libraries' public signatures at the versions the
generated build files name (each stub's header says which), so no SDK and no network are needed.

The models below are a spread of what real builds produce (report.json signatures): every
supported dtype, quantized and plain, several inputs and outputs, dynamic and scalar tensors,
labels or none, both Android and both iOS APIs, hostile tensor names. The stubs are compiled once
per session; LiteRT's Swift API is tests/fixtures/litert_swift, the stand-in that
test_ios_packages also runs, so the loaders are type-checked against the very declarations
they run against. Kotlin gets one kotlinc call per kind (all loaders, then all instrumented tests); Swift
one swiftc call per loader, because each loader is the module its XCTest imports and a Swift
module is one compiler invocation (a fraction of a second each), then one call for all XCTests.

A missing compiler skips these tests with the tool's name, except under CI=true, where it fails:
CI must never pass without having compiled the loaders.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from test_codegen import adversarial_ctx, make_ctx, tensor
from tfbuild.codegen import builtin_template_dir, render_loaders

API = Path(__file__).resolve().parent / "fixtures" / "api"
LITERT_SWIFT = Path(__file__).resolve().parent / "fixtures" / "litert_swift" / "Sources"
SWIFTPM_ACCESSOR = API / "swift" / "SwiftPM" / "resource_bundle_accessor.swift"
KOTLIN_MAIN = "/src/main/kotlin/"
KOTLIN_TEST = "/src/androidTest/kotlin/"
# Android compiles against android.jar, whose java.* is Java 8's API, not the host JDK's.
KOTLIN_FLAGS = ["-no-stdlib", "-no-reflect", "-jvm-target", "1.8", "-Xjdk-release=1.8",
                "-Werror"]
SWIFT_FLAGS = ["-parse-as-library", "-warnings-as-errors"]
# JDK 17's foreign-function API, which LiteRT's Kotlin stand-in calls the C API through.
FOREIGN_API = ["--add-modules", "jdk.incubator.foreign"]
# The pod builds TensorFlowLite, and LiteRT's package (tools 5.9) LiteRT, in Swift 5 mode; an
# app's own code (the loader) may use either.
SWIFT_API_VERSION = "5"
SWIFT_APP_VERSIONS = ["5", "6"]


# ------------------------------------------------------------------------------ toolchains

def in_ci() -> bool:
    """CI=true (GitHub, GitLab and most others set it) makes a missing compiler a failure."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(tool: str, found: object, how: str) -> object:
    """`found`, or skip (a laptop without the tool) / fail (CI) naming what is missing."""
    if found:
        return found
    message = f"{tool} not found: {how}"
    if in_ci():
        pytest.fail(f"CI=true but {message}", pytrace=False)
    pytest.skip(message)


def kotlin_compiler_jars() -> tuple[Path, Path] | None:
    """(compiler, stdlib) jars from the kotlin-jupyter-kernel wheel (a test extra), if installed."""
    try:
        import run_kotlin_kernel
    except ImportError:
        return None
    jars = Path(run_kotlin_kernel.__file__).parent / "jars"
    compiler = sorted(jars.glob("kotlin-jupyter-kernel-*-all.jar"))
    stdlib = sorted(jars.glob("kotlin-stdlib-[0-9]*.jar"))
    return (compiler[-1], stdlib[-1]) if compiler and stdlib else None


@dataclass(frozen=True)
class Kotlin:
    """The JDK tools and the jars that make up kotlinc."""
    java: str
    javac: str
    compiler: Path
    stdlib: Path


@pytest.fixture(scope="session")
def kotlin() -> Kotlin:
    java = require("java", shutil.which("java"), "install a JDK (17+) to compile Kotlin")
    javac = require("javac", shutil.which("javac"), "install a JDK (17+) for the Java stubs")
    jars = require("the Kotlin compiler", kotlin_compiler_jars(),
                   "pip install -e '.[test]' (kotlin-jupyter-kernel carries kotlinc)")
    return Kotlin(java, javac, *jars)


@pytest.fixture(scope="session")
def swiftc() -> str:
    return require("swiftc", shutil.which("swiftc"),
                   "install a Swift toolchain (swift.org) with Foundation and XCTest")


@pytest.fixture(scope="session")
def xctest(swiftc: str, tmp_path_factory) -> None:
    """XCTest comes with swift.org toolchains and Xcode, not with Apple's Command Line Tools."""
    probe = tmp_path_factory.mktemp("xctest") / "probe.swift"
    probe.write_text("import XCTest\n", encoding="utf-8")
    require("XCTest", run([swiftc, "-typecheck", probe]).ok,
            f"{swiftc} cannot import XCTest (use a swift.org toolchain or Xcode)")


# ------------------------------------------------------------------------------ compiling

@dataclass(frozen=True)
class Result:
    """A compiler's verdict; check() fails with the compiler's own messages."""
    ok: bool
    output: str

    def check(self, what: str) -> None:
        assert self.ok, f"{what} did not compile:\n{self.output}"


def run(args: list[str | Path]) -> Result:
    """Run a compiler; file:line: error lines come back verbatim."""
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600)
    return Result(proc.returncode == 0, (proc.stdout + proc.stderr).strip())


def kotlinc(kt: Kotlin, sources: list[Path], classpath: list[Path], out: Path,
            module: str) -> Result:
    """One kotlinc run. The compiler is a JVM program: C1-only JIT and the serial GC made the
    loaders' compile 2.5x faster on the shared 2-core machine (15 s instead of 40 s)."""
    cp = os.pathsep.join(str(p) for p in [kt.stdlib, *classpath])
    return run([kt.java, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp",
                f"{kt.compiler}{os.pathsep}{kt.stdlib}",
                "org.jetbrains.kotlin.cli.jvm.K2JVMCompiler", *KOTLIN_FLAGS, "-cp", cp,
                "-module-name", module, "-d", out, *sources])


@pytest.fixture(scope="session")
def android_api(kotlin: Kotlin, tmp_path_factory) -> list[Path]:
    """The Android-side API compiled once: the Java stubs and stand-ins (android, org.json,
    JUnit, androidx.test, org.tensorflow.lite) with javac at Android's Java 8 API, the C bridge
    under LiteRT's Kotlin stand-in (JDK 17's foreign API; test_loaders_android_run runs it),
    then LiteRT's Kotlin API against them."""
    root = tmp_path_factory.mktemp("android-api")
    java_out, ffi_out, kotlin_out = root / "java", root / "ffi", root / "kotlin"
    javac = run([kotlin.javac, "--release", "8", "-nowarn", "-d", java_out,
                 *sorted((API / "java").rglob("*.java"))])
    javac.check("the Java API stubs")
    run([kotlin.javac, "--release", "17", *FOREIGN_API, "-nowarn", "-Xlint:-options", "-d", ffi_out,
         *sorted((API / "ffi").rglob("*.java"))]).check("LiteRT's C bridge (tests/fixtures/api/ffi)")
    litert = kotlinc(kotlin, sorted((API / "kotlin").rglob("*.kt")), [java_out, ffi_out], kotlin_out,
                     "litert")
    litert.check("the LiteRT Kotlin API stand-in")
    return [java_out, ffi_out, kotlin_out]


@pytest.fixture(scope="session")
def swift_api(swiftc: str, tmp_path_factory) -> list[Path]:
    """Include dirs holding the TensorFlowLite stub module and LiteRT's (the stand-in's), with
    the C modules they import (TensorFlowLiteC, CLiteRT)."""
    out = tmp_path_factory.mktemp("swift-api")
    modules = [("TensorFlowLite", API / "swift" / "TensorFlowLiteC", API / "swift" / "TensorFlowLite"),
               ("LiteRT", LITERT_SWIFT / "CLiteRT", LITERT_SWIFT / "LiteRT")]
    for name, c_module, sources in modules:
        result = run([swiftc, "-emit-module", "-module-name", name, *SWIFT_FLAGS,
                      "-swift-version", SWIFT_API_VERSION, *includes([c_module]),
                      "-emit-module-path", out / f"{name}.swiftmodule", *sorted(sources.glob("*.swift"))])
        result.check(f"the {name} Swift API")
    return [out, *(c_module for _, c_module, _ in modules)]


def includes(paths: list[Path]) -> list[str | Path]:
    return [flag for path in paths for flag in ("-I", path)]


def swift_modules(swiftc: str, api: list[Path], loaders: list[Path], out: Path,
                  version: str) -> Result:
    """Each Swift loader emitted as the module its test imports (`@testable import <Class>`),
    one swiftc call each; the errors of all of them in one Result."""
    outputs = []
    for source in loaders:
        name = source.stem
        result = run([swiftc, "-emit-module", "-enable-testing", "-module-name", name,
                      *SWIFT_FLAGS, "-swift-version", version, *includes(api),
                      "-emit-module-path", out / f"{name}.swiftmodule",
                      source])
        if not result.ok:
            outputs.append(result.output)
    return Result(not outputs, "\n".join(outputs))


def swift_typecheck(swiftc: str, api: list[Path], sources: list[Path], version: str,
                    flags: tuple[str, ...] = ()) -> Result:
    return run([swiftc, "-typecheck", *SWIFT_FLAGS, "-swift-version", version, *flags,
                *includes(api), *sources])


# ------------------------------------------------------------------------------ the spread

Q_IMAGE = {"scale": 0.003921568859368563, "zero_point": -128}
Q_PROBS = {"scale": 0.00390625, "zero_point": -128}
Q_UINT8 = {"scale": 0.003921568859368563, "zero_point": 0}
Q_INT16 = {"scale": 3.0517578125e-05, "zero_point": 0}
DIGITS = [str(d) for d in range(10)]


@dataclass(frozen=True)
class Model:
    """One converted model's signature as report.json records it, plus its mobile settings."""
    name: str
    inputs: list
    outputs: list
    labels: list | None = None
    apis: tuple = ("compiled_model", "interpreter")
    ios_apis: tuple = ("compiled_model", "interpreter")
    delegates: tuple = ()
    golden: bool = True


MODELS = [
    Model("DigitsFp32", [tensor("image", [1, 8, 8, 1])], [tensor("output_0", [1, 10])], DIGITS),
    # float16 and dynamic-range quantization keep float32 inputs and outputs (float16 I/O is
    # refused), so these differ from fp32 only in mobile settings: delegates, labels.
    Model("DigitsFp16", [tensor("image", [1, 8, 8, 1])], [tensor("output_0", [1, 10])],
          delegates=("coreml", "metal")),
    Model("DigitsDynamic", [tensor("image", [1, 8, 8, 1])], [tensor("output_0", [1, 10])],
          DIGITS, delegates=("metal",)),
    Model("DigitsInt8", [tensor("image", [1, 8, 8, 1], "int8", Q_IMAGE)],
          [tensor("output_0", [1, 10], "int8", Q_PROBS)], DIGITS, delegates=("coreml",)),
    Model("DigitsUint8", [tensor("image", [1, 8, 8, 1], "uint8", Q_UINT8)],
          [tensor("output_0", [1, 10], "uint8", Q_UINT8)], DIGITS),
    Model("Ranker", [tensor("ids", [1, 16], "int32"), tensor("mask", [1, 16], "int64"),
                     tensor("flags", [1, 4], "bool"), tensor("temperature", [])],
          [tensor("logits", [1, 3]), tensor("class_id", [1], "int32"),
           tensor("done", [1], "bool"), tensor("tokens", [1], "int64")]),
    Model("Frames", [tensor("frames", [1, 1, 4], signature=[1, -1, 4]), tensor("scale", [1])],
          [tensor("mean", [1, 4]), tensor("smoothed", [1, 1, 4], signature=[1, -1, 4])],
          delegates=("coreml", "metal")),
    Model("Detector", [tensor("image", [1, 4, 4, 3], "int8", Q_IMAGE, signature=[-1, 4, 4, 3])],
          [tensor("scores", [1, 5], "int8", Q_PROBS), tensor("best", [1], "int32"),
           tensor("boxes", [1, 5, 4])], ["cat", "dog", "bird", "fish", "frog"]),
    Model("Audio16x8", [tensor("waveform", [1, 160], "int16", Q_INT16)],
          [tensor("spectrum", [1, 40], "int16", Q_INT16), tensor("energy", [1])],
          apis=("interpreter",)),  # LiteRT's Kotlin TensorBuffer has no int16; its Swift one has
    Model("Bare", [tensor("x", [1, 2])], [tensor("y", [1, 2])], golden=False),
]


@dataclass(frozen=True)
class Case:
    """One rendered target: its id and the ctx render_loaders got."""
    id: str
    ctx: dict


# Each Swift loader is a module named after its class: the two iOS APIs need two names.
IOS_CLASS_SUFFIX = {"compiled_model": "", "interpreter": "Classic"}


def ios_settings(name: str, api: str, delegates: tuple = ()) -> dict:
    """mobile.ios for one API; delegates are TensorFlowLiteSwift's, so interpreter only."""
    return {"class_name": name + IOS_CLASS_SUFFIX[api], "api": api,
            "delegates": list(delegates) if api == "interpreter" else []}


def model_cases(model: Model) -> list[Case]:
    """One case per API, each platform with that API where the model supports it."""
    cases = []
    for api in ("compiled_model", "interpreter"):
        android = {"package": f"com.example.{model.name.lower()}.{api.replace('_', '')}",
                   "class_name": model.name, "api": api} if api in model.apis else None
        ios = ios_settings(model.name, api, model.delegates) if api in model.ios_apis else None
        if android or ios:
            ctx = make_ctx(model.inputs, model.outputs, api=api, labels=model.labels,
                           golden=model.golden, android=android, ios=ios)
            cases.append(Case(f"{model.name}-{api}", ctx))
    return cases


def adversarial_cases() -> list[Case]:
    """test_codegen's hostile names (keywords, `$`, `\\(`, comment breakers, empty names)."""
    cases = []
    for api in ("compiled_model", "interpreter"):
        ctx = adversarial_ctx(api)
        ctx["android"] = {"package": f"com.example.hostile.{api.replace('_', '')}",
                          "class_name": "Hostile", "api": api}
        ctx["ios"] = ios_settings("Hostile", api, ("coreml",))
        cases.append(Case(f"Hostile-{api}", ctx))
    return cases


CASES = [case for model in MODELS for case in model_cases(model)] + adversarial_cases()


@dataclass(frozen=True)
class Rendered:
    """The generated source files, by the compiler call they go to."""
    kotlin_main: list[Path]
    kotlin_test: list[Path]
    swift_loaders: list[Path]
    swift_tests: list[Path]
    swift_manifests: list[Path]


def write_files(root: Path, files: dict[str, str]) -> list[Path]:
    """render_loaders' {relative path: text} written under root, as a build would lay it out."""
    paths = []
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def render(cases: list[Case], root: Path, template_dirs: list[Path] | None = None) -> Rendered:
    """Every case's files under root/<case id>/, sorted by kind."""
    paths = [p for case in cases
             for p in write_files(root / case.id, render_loaders(case.ctx, template_dirs))]
    posix = [(p, p.as_posix()) for p in sorted(paths)]
    return Rendered(
        kotlin_main=[p for p, s in posix if s.endswith(".kt") and KOTLIN_MAIN in s],
        kotlin_test=[p for p, s in posix if s.endswith(".kt") and KOTLIN_TEST in s],
        swift_loaders=[p for p, s in posix if s.endswith(".swift") and "/ios/Sources/" in s],
        swift_tests=[p for p, s in posix if s.endswith(".swift") and "/ios/Tests/" in s],
        swift_manifests=[p for p, s in posix if s.endswith("/ios/Package.swift")])


@pytest.fixture(scope="module")
def spread(tmp_path_factory) -> Rendered:
    return render(CASES, tmp_path_factory.mktemp("loaders"))


def test_the_spread_covers_what_it_claims(spread):
    # If a model were dropped from the spread, the compile tests below would still pass.
    ctxs = [case.ctx for case in CASES]
    dtypes = {t["dtype"] for c in ctxs for t in c["inputs"] + c["outputs"]}
    assert dtypes == {"float32", "int8", "uint8", "int16", "int32", "int64", "bool"}
    assert {c["android"]["api"] for c in ctxs if c["android"]} == {"compiled_model", "interpreter"}
    assert {c["ios"]["api"] for c in ctxs if c["ios"]} == {"compiled_model", "interpreter"}
    assert any(c["ios"]["delegates"] for c in ctxs if c["ios"])
    assert any(-1 in t["shape_signature"] for c in ctxs for t in c["inputs"])
    assert any(t["shape"] == [] for c in ctxs for t in c["inputs"])
    assert any(c["labels"] for c in ctxs) and any(c["labels"] is None for c in ctxs)
    assert any(len(c["inputs"]) > 1 and len(c["outputs"]) > 1 for c in ctxs)
    assert len(spread.kotlin_main) == sum(c["android"] is not None for c in ctxs)
    assert len(spread.kotlin_test) == sum(c["android"] is not None and c["golden"] is not None
                                          for c in ctxs)
    assert len(spread.swift_loaders) == sum(c["ios"] is not None for c in ctxs)
    assert len(spread.swift_tests) == sum(c["ios"] is not None and c["golden"] is not None
                                          for c in ctxs)
    assert len(spread.swift_manifests) == len(spread.swift_loaders)


# ------------------------------------------------------------------------------ Kotlin

@pytest.fixture(scope="module")
def kotlin_loaders(kotlin, android_api, spread, tmp_path_factory) -> tuple[Result, Path]:
    out = tmp_path_factory.mktemp("kotlin-main")
    return kotlinc(kotlin, spread.kotlin_main, android_api, out, "loaders"), out


def test_kotlin_loaders_compile(kotlin_loaders):
    result, _ = kotlin_loaders
    result.check("the generated Kotlin loaders (src/main)")


def test_kotlin_instrumented_tests_compile(kotlin, android_api, spread, kotlin_loaders,
                                           tmp_path_factory):
    loaders, classes = kotlin_loaders
    loaders.check("the generated Kotlin loaders the instrumented tests need")
    out = tmp_path_factory.mktemp("kotlin-android-test")
    kotlinc(kotlin, spread.kotlin_test, [*android_api, classes], out, "loaders_test").check(
        "the generated instrumented tests (src/androidTest)")


# ------------------------------------------------------------------------------ Swift

@pytest.fixture(scope="module", params=SWIFT_APP_VERSIONS, ids=lambda v: f"swift{v}")
def swift_loaders(request, swiftc, swift_api, spread, tmp_path_factory):
    """(result, module dir, language mode): the loaders emitted as modules in one Swift mode."""
    version = request.param
    out = tmp_path_factory.mktemp(f"swift{version}-modules")
    return swift_modules(swiftc, swift_api, spread.swift_loaders, out, version), out, version


def test_swift_loaders_typecheck(swift_loaders):
    result, _, version = swift_loaders
    result.check(f"the generated Swift loaders (Sources, Swift {version} mode)")


@pytest.mark.parametrize("layout", ["xcode", "swiftpm"])
def test_swift_xctests_typecheck(swiftc, xctest, swift_api, spread, swift_loaders, layout):
    # The tests find their resources through Bundle(for:) in an Xcode/CocoaPods test target and
    # through SwiftPM's generated Bundle.module in a package (#if SWIFT_PACKAGE): check both.
    loaders, modules, version = swift_loaders
    loaders.check("the generated Swift loaders the XCTests import")
    swiftpm = layout == "swiftpm"
    flags = ("-D", "SWIFT_PACKAGE") if swiftpm else ()
    sources = [*spread.swift_tests, *([SWIFTPM_ACCESSOR] if swiftpm else [])]
    result = swift_typecheck(swiftc, [modules, *swift_api], sources, version, flags)
    result.check(f"the generated XCTests (Tests, {layout} layout, Swift {version} mode)")


def test_swift_package_manifests_typecheck(swiftc, spread):
    # Package.swift is Swift against SwiftPM's PackageDescription module; test_ios_packages
    # builds the compiled_model ones for real, this checks every one (interpreter included).
    manifest_api = require("SwiftPM's PackageDescription module", next(
        (d for d in (Path(swiftc).resolve().parents[1] / "lib" / "swift" / "pm" / "ManifestAPI",)
         if (d / "PackageDescription.swiftmodule").exists()), None),
        f"no lib/swift/pm/ManifestAPI next to {swiftc} (install a full Swift toolchain)")
    errors = [run([swiftc, "-typecheck", "-swift-version", "5", "-package-description-version",
                   "5.9", "-I", manifest_api, manifest]) for manifest in spread.swift_manifests]
    Result(all(e.ok for e in errors), "\n".join(e.output for e in errors if not e.ok)).check(
        "the generated Package.swift manifests")


# ------------------------------------------------------------------------------ the harness

def break_template(root: Path, name: str, *edits: tuple[str, str]) -> Path:
    """An override dir holding built-in template `name` with each (old, new) edit applied once;
    an edit that no longer matches fails, so the test cannot silently check nothing."""
    text = (builtin_template_dir() / name).read_text(encoding="utf-8")
    for old, new in edits:
        assert text.count(old) == 1, f"{name} no longer contains {old!r} exactly once"
        text = text.replace(old, new)
    target = root / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return root


def refused(result: Result, what: str, *fragments: str) -> None:
    """The compiler must reject the code, and say why in the failure a user would see."""
    with pytest.raises(AssertionError) as failure:
        result.check(what)
    for fragment in fragments:
        assert fragment in str(failure.value), f"missing {fragment!r} in:\n{failure.value}"


BROKEN_CASES = [case for case in CASES
                if case.id in ("DigitsFp32-compiled_model", "DigitsFp32-interpreter",
                               "DigitsInt8-compiled_model", "DigitsInt8-interpreter")]


def test_kotlin_compiler_refuses_broken_templates(kotlin, android_api, tmp_path):
    # Two classic slips, one kotlinc run: a TensorBuffer method that exists for one dtype only
    # (writeInt8 exists, writeFloat32 does not) and a Long passed where the API takes an Int.
    overrides = break_template(tmp_path / "templates", "android/compiled_model/Loader.kt.j2",
                               (".write{{ t.litert }}(", ".write{{ t.dtype|pascal }}("))
    break_template(overrides, "android/interpreter/Loader.kt.j2",
                   ("options.setNumThreads(numThreads)",
                    "options.setNumThreads(numThreads.toLong())"))
    rendered = render(BROKEN_CASES, tmp_path / "gen", [overrides])
    result = kotlinc(kotlin, rendered.kotlin_main, android_api, tmp_path / "out", "broken")
    refused(result, "the broken Kotlin loaders", "DigitsFp32.kt", "writeFloat32",
            "setNumThreads", "Long")
    assert "writeInt8" not in result.output  # the int8 case's call exists: only float32 breaks


def test_swift_compiler_refuses_broken_templates(swiftc, swift_api, tmp_path):
    # TensorFlowLiteSwift: a throwing call without `try`, a failable initializer's optional used
    # unwrapped. LiteRT: an argument label its API does not have, and Data where it takes arrays.
    overrides = break_template(
        tmp_path / "templates", "ios/interpreter/Loader.swift.j2",
        ("try self.runner.invoke(with:", "self.runner.invoke(with:"),
        ("if let delegate = CoreMLDelegate() { delegates.append(delegate) }",
         "delegates.append(CoreMLDelegate())"))
    break_template(overrides, "ios/compiled_model/Loader.swift.j2",
                   ("model.inputName(inputIndex: index,", "model.inputName(index: index,"),
                   ("{% else %}[UInt8]({{ t.camel }}){% endif %}", "{% else %}{{ t.camel }}{% endif %}"))
    rendered = render(BROKEN_CASES, tmp_path / "gen", [overrides])
    result = swift_modules(swiftc, swift_api, rendered.swift_loaders, tmp_path,
                           SWIFT_APP_VERSIONS[0])
    refused(result, "the broken Swift loaders", "DigitsInt8Classic.swift",
            "call can throw but is not marked with 'try'", "must be unwrapped",
            "DigitsFp32.swift", "incorrect argument label", "DigitsInt8.swift", "'Data'")


def test_a_missing_compiler_skips_locally_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="swiftc not found: install it"):
        require("swiftc", None, "install it")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but swiftc not found"):
        require("swiftc", None, "install it")
    assert require("swiftc", "/usr/bin/swiftc", "install it") == "/usr/bin/swiftc"
