"""The generated Android loaders run: each CompiledModel loader's instrumented golden test passes
on the JVM against LiteRT's real runtime.

A compiler sees a missing method, not a wrong quantization scale, a swapped input, a byte-order
slip or a buffer of the wrong size; running the golden test does. The pieces:

- LiteRT's Kotlin API is tests/fixtures/api/kotlin, tfbuild's stand-in with upstream's public
  declarations, whose native work litertc.LiteRtC (tests/fixtures/api/ffi) does over the C API of
  the ai-edge-litert wheel's libLiteRt.so (the runtime that computed the golden vectors) through
  JDK 17's incubator foreign-function API. The loaders compile against the same declarations in
  tests/test_loaders_compile.py.
- Android's Context, AssetManager, Instrumentation and AndroidX Test's InstrumentationRegistry and
  AndroidJUnit4 are the stand-ins in tests/fixtures/api/java, the same sources the compile test
  compiles, here compiled against Debian's JUnit instead of the JUnit stubs.
- JUnit 4, hamcrest and Android's own org.json come from Debian (junit4, libhamcrest-java,
  libandroid-json-java; .ci/run installs them).
- tests/fixtures/android_jvm's launcher gives each test class its own assets (the target's
  model as the app's, src/androidTest/assets as the test's) and runs them all in one JVM.

The stand-in is compiled once per session and every target's loader and test in one kotlinc
call. The classic Interpreter API (mobile.android.api: interpreter) cannot run here: neither
PyPI nor Debian ships TensorFlow Lite's JNI or a C library for it, so it is compiled only.
Without a JDK, the Kotlin compiler, the Debian jars or libLiteRt these tests skip, naming what to
install; under CI=true they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from mobile_builds import SPECS, Spec, is_quantized, signature
from mobile_builds import litert_lib, litert_swift_repo, mobile_targets  # noqa: F401  (fixtures used below)
from test_loaders_compile import API, FOREIGN_API, Kotlin, Result, kotlinc, require, run
from test_loaders_compile import android_api, kotlin  # noqa: F401  (fixtures used below)
from tfbuild.codegen import identifier_words, screaming

pytestmark = pytest.mark.slow

LAUNCHER = Path(__file__).resolve().parent / "fixtures" / "android_jvm"
DEBIAN_JARS = Path("/usr/share/java")
# Debian package: jar. The jar names are the packages' unversioned links.
JARS = {"junit4": "junit4.jar", "libhamcrest-java": "hamcrest.jar",
        "libandroid-json-java": "com.android.json.jar"}


@dataclass(frozen=True)
class Jvm:
    """Everything a run needs: the JDK tools, the classpath of the stand-ins and the Debian jars,
    and the runtime library."""
    kotlin: Kotlin
    classpath: list[Path]
    library: Path

    def launch(self, triples: list[tuple[str, Path, Path]]) -> Result:
        """Run the launcher over (test class, app assets, test assets) triples."""
        args = [str(part) for triple in triples for part in triple]
        return run([self.kotlin.java, *FOREIGN_API, "--enable-native-access=ALL-UNNAMED",
                    "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", f"-Dlitert.library={self.library}",
                    "-cp", classpath(self.classpath), "tfbuildjvm.RunInstrumented", *args])


def classpath(paths: list[Path]) -> str:
    return os.pathsep.join(str(p) for p in paths)


def debian_jars() -> list[Path]:
    missing = [package for package, jar in JARS.items() if not (DEBIAN_JARS / jar).is_file()]
    require("JUnit 4, hamcrest and org.json", not missing,
            f"apt-get install -y {' '.join(missing)} (jars in {DEBIAN_JARS})")
    return [DEBIAN_JARS / jar for jar in JARS.values()]


@pytest.fixture(scope="session")
def jvm(kotlin, android_api, litert_lib, tmp_path_factory) -> Jvm:
    """What test_loaders_compile compiled (the C bridge, LiteRT's Kotlin stand-in), and the
    Android and AndroidX stand-ins with the launcher compiled again against Debian's JUnit
    instead of the JUnit and org.json stubs, which must not be on a running classpath."""
    jars = debian_jars()
    _stubs, *litert = android_api  # [Java stubs, C bridge, Kotlin stand-in]
    out = tmp_path_factory.mktemp("android-jvm")
    sources = [*sorted(LAUNCHER.rglob("*.java")),
               *(p for folder in ("android", "androidx") for p in sorted((API / "java" / folder).rglob("*.java")))]
    run([kotlin.javac, "--release", "17", "-nowarn", "-cp", classpath(jars), "-d", out, *sources]).check(
        "the Android stand-ins and the launcher")
    return Jvm(kotlin, [kotlin.stdlib, out, *litert, *jars], litert_lib)


# ------------------------------------------------------------------------------ the loaders

def instrumented_class(spec: Spec) -> str:
    return f"com.example.{spec.name.lower()}.{spec.name}Test"


def assets(target: Path) -> tuple[Path, Path]:
    """(app assets, test assets) of a built target: its folder holds the model, the test's
    assets are generated under android/."""
    return target, target / "android" / "src" / "androidTest" / "assets"


def compile_loaders(jvm: Jvm, targets: list[Path], out: Path) -> Jvm:
    """The targets' Android loaders and instrumented tests, in one kotlinc call (their classes
    must differ: one package per recipe); the Jvm that can run them."""
    sources = sorted(p for target in targets for p in (target / "android" / "src").rglob("*.kt"))
    kotlinc(jvm.kotlin, sources, jvm.classpath, out, "loaders").check("the generated Android loaders and tests")
    return Jvm(jvm.kotlin, [*jvm.classpath, out], jvm.library)


def run_instrumented(jvm: Jvm, targets: dict[str, Path]) -> dict[str, str]:
    """{test class: the launcher's PASS/FAIL line} for {test class: target folder}, one JVM."""
    result = jvm.launch([(name, *assets(target)) for name, target in targets.items()])
    lines = {m[2]: m[0] for m in re.finditer(r"^(PASS|FAIL) (\S+?)(?::| \().*$", result.output, re.M)}
    assert set(lines) == set(targets), result.output
    return lines


@pytest.fixture(scope="module")
def loaders(jvm, mobile_targets, tmp_path_factory) -> Jvm:
    return compile_loaders(jvm, list(mobile_targets.values()), tmp_path_factory.mktemp("android-loaders"))


@pytest.fixture(scope="module")
def outcomes(loaders, mobile_targets) -> dict[str, str]:
    return run_instrumented(loaders, {instrumented_class(spec): mobile_targets[spec.name] for spec in SPECS})


def test_the_spread_covers_what_it_claims(mobile_targets):
    tensors = {name: signature(t)["inputs"] + signature(t)["outputs"] for name, t in mobile_targets.items()}
    dtypes = {t["dtype"] for ts in tensors.values() for t in ts}
    assert {"float32", "int8", "uint8", "int32", "int64", "bool"} <= dtypes
    assert {t["dtype"] for t in signature(mobile_targets["ClfInt8Float"])["inputs"]} == {"float32"}
    heads = signature(mobile_targets["TwoHeadsUint8"])
    assert len(heads["inputs"]) == len(heads["outputs"]) == 2
    assert any(-1 in t["shape_signature"] for t in signature(mobile_targets["Frames"])["inputs"])
    reports = {name: json.loads((t / "report.json").read_text()) for name, t in mobile_targets.items()}
    assert reports["ClfFp16"].get("metadata") and not reports["ClfFp32"].get("metadata")


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.name)
def test_generated_android_loader_passes_its_golden_test(outcomes, mobile_targets, spec):
    # One golden test, and a second one through runFloat when any tensor is quantized.
    tests = 1 + is_quantized(mobile_targets[spec.name])
    assert outcomes[instrumented_class(spec)] == f"PASS {instrumented_class(spec)} ({tests} tests)"


def plant_wrong_golden_value(target: Path, planted: Path, output: dict) -> Path:
    """Move one expected real value of sample 0 by ten quantization steps in a copy of the
    test's assets; return the assets folder to run with."""
    _, test_assets = assets(target)
    shutil.copytree(test_assets, planted)
    golden_file = next(planted.glob("*_golden.json"))
    golden = json.loads(golden_file.read_text())
    golden["dequantized"]["outputs"][output["name"]][0][2] += 10 * output["quantization"]["scale"]
    golden_file.write_text(json.dumps(golden))
    return planted


@pytest.fixture
def int8_target(mobile_targets) -> tuple[str, Path, dict]:
    """(test class, target folder, first output) of the int8 target the planted errors use."""
    spec = next(s for s in SPECS if s.name == "ClfInt8")
    target = mobile_targets[spec.name]
    return instrumented_class(spec), target, signature(target)["outputs"][0]


def test_a_planted_wrong_golden_value_fails(loaders, int8_target, tmp_path):
    # The same compiled test with one expected value moved by ten steps must fail, naming it.
    name, target, output = int8_target
    planted = plant_wrong_golden_value(target, tmp_path / "assets", output)
    result = loaders.launch([(name, target, planted)])
    assert not result.ok, result.output
    assert re.search(rf"FAIL {re.escape(name)}: .*output {re.escape(output['name'])}, sample 0, index 2: "
                     rf"expected", result.output), result.output


def test_a_planted_wrong_loader_scale_fails(jvm, int8_target, tmp_path):
    # The loader's output scale doubled, the slip no compiler sees, in a copy of the target.
    name, target, output = int8_target
    copy = shutil.copytree(target, tmp_path / "target")
    loader = next((copy / "android" / "src" / "main").rglob("*.kt"))
    constant = f"const val {screaming(identifier_words(output['name'], 'output'))}_SCALE = "
    text = loader.read_text()
    scale = re.search(re.escape(constant) + r"(\S+)\n", text)[1]
    loader.write_text(text.replace(constant + scale, f"{constant}2 * {scale}"))
    line = run_instrumented(compile_loaders(jvm, [copy], tmp_path / "classes"), {name: copy})[name]
    assert re.match(rf"FAIL {re.escape(name)}: .*output {re.escape(output['name'])}, sample \d+, index \d+: "
                    rf"expected", line), line
