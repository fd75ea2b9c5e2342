"""The generated iOS packages run: `swift test` on each, against LiteRT's real runtime.

tfbuild builds the spread of small Keras models in tests/mobile_builds.py for real (shared with
the Android run: every dtype the loaders take, quantized and not, metadata, a dynamic axis), and
each target's `ios/` folder is tested as the Swift package it is, with nothing edited: its XCTest loads the
model and the golden vectors through Bundle.module and compares every output.

The loaders `import LiteRT`, LiteRT's Swift package, whose binaries are Apple xcframeworks. Here
https://github.com/google-ai-edge/LiteRT is pointed (a SwiftPM mirror) at tests/fixtures/
litert_swift, a stand-in with the same declarations over the same C API, which the
ai-edge-litert wheel ships in libLiteRt.so: the runtime that computed the golden vectors.
The stand-in is built once per session: every package shares one scratch folder (and the
session's own SwiftPM configuration), so only the first `swift test` compiles it.

Without `swift` (or without libLiteRt in the wheel) these tests skip, naming what to install;
under CI=true they fail instead.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from mobile_builds import SPECS, signature as target_signature
from mobile_builds import litert_lib, litert_swift_repo, mobile_targets  # noqa: F401  (fixtures used below)
from test_codegen import make_ctx, tensor
from test_loaders_compile import Result, break_template, require, run, write_files
from test_loaders_compile import swiftc, xctest  # noqa: F401  (fixtures used below)
from tfbuild.codegen import VERSIONS, camel, render_loaders

pytestmark = pytest.mark.slow

LITERT_URL = "https://github.com/google-ai-edge/LiteRT"

# ------------------------------------------------------------------------------ toolchain

@pytest.fixture(scope="session")
def swift() -> str:
    return require("swift", shutil.which("swift"),
                   "install a Swift toolchain (swift.org) with Foundation and XCTest")


@dataclass(frozen=True)
class SwiftPM:
    """What every `swift test` of the session shares: the mirror configuration, one scratch
    folder (the stand-in is compiled once), and the runtime library's folder."""
    swift: str
    config: Path
    scratch: Path
    cache: Path
    lib: Path

    def test(self, package: Path) -> Result:
        return self.swiftpm("test", package, self.scratch)

    def build(self, package: Path, scratch: Path) -> Result:
        """`swift build` in a scratch folder of its own (the shared one holds the mirror's
        checkout; a package taking LiteRT from elsewhere must not disturb it)."""
        return self.swiftpm("build", package, scratch)

    def swiftpm(self, command: str, package: Path, scratch: Path) -> Result:
        return run([self.swift, command, "-j", "2", "--package-path", package,
                    "--config-path", self.config, "--scratch-path", scratch,
                    "--cache-path", self.cache, "--disable-dependency-cache",
                    "--manifest-cache", "local",
                    "-Xlinker", f"-L{self.lib}", "-Xlinker", "-rpath", "-Xlinker", self.lib])


def mirror_configuration(swift: str, root: Path, repository: Path) -> Path:
    """A SwiftPM configuration folder that mirrors LITERT_URL to `repository`, written by
    `swift package config set-mirror` (in a package of its own: it writes the package's local
    .swiftpm/configuration, which then serves as the shared --config-path)."""
    holder = root / "mirror-config"
    holder.mkdir()
    (holder / "Package.swift").write_text(
        '// swift-tools-version: 5.9\nimport PackageDescription\nlet package = Package(name: "M")\n',
        encoding="utf-8")
    run([swift, "package", "--package-path", holder, "config", "set-mirror",
         "--original", LITERT_URL, "--mirror", repository]).check("swift package config set-mirror")
    return holder / ".swiftpm" / "configuration"


@pytest.fixture(scope="session")
def swiftpm(swift, xctest, litert_lib, litert_swift_repo, tmp_path_factory) -> SwiftPM:
    root = tmp_path_factory.mktemp("swiftpm")
    config = mirror_configuration(swift, root, litert_swift_repo.path)
    return SwiftPM(swift, config, root / "scratch", root / "cache", litert_lib.parent)


# ------------------------------------------------------------------------------ the packages

@pytest.fixture(scope="module")
def packages(mobile_targets) -> dict[str, Path]:
    """Every shared target's ios/ folder, by class name."""
    return {name: target / "ios" for name, target in mobile_targets.items()}


def signature(package: Path) -> dict:
    return target_signature(package.parent)


def test_the_spread_covers_what_it_claims(packages, litert_swift_repo):
    tensors = {name: signature(p)["inputs"] + signature(p)["outputs"] for name, p in packages.items()}
    dtypes = {name: {t["dtype"] for t in ts} for name, ts in tensors.items()}
    assert dtypes["ClfInt8"] == {"int8"} and dtypes["ClfUint8"] == {"uint8"}
    assert dtypes["ClfFp16"] == dtypes["ClfDynamic"] == {"float32"}
    assert "int32" in {t["dtype"] for t in signature(packages["Tokens"])["inputs"]}
    heads = signature(packages["TwoHeadsUint8"])
    assert len(heads["inputs"]) == len(heads["outputs"]) == 2
    assert all(t["quantization"] for t in heads["inputs"] + heads["outputs"])
    for package in packages.values():
        manifest = (package / "Package.swift").read_text()
        # Pinned by the recipe to the stand-in's commit (mobile.ios.litert.revision), never a version.
        assert f'.package(url: "{LITERT_URL}", revision: "{litert_swift_repo.commit}")' in manifest
        assert not re.search(r"\.package\([^)]*\b(from|exact):", manifest), manifest
        assert (package / "Tests").is_dir()


def executed(result: Result) -> int:
    """How many XCTest cases ran without a failure (0 when the run failed)."""
    match = re.search(r"Executed (\d+) tests?, with 0 failures", result.output)
    return int(match[1]) if result.ok and match else 0


@pytest.mark.parametrize("name", [spec.name for spec in SPECS])
def test_generated_package_passes_its_golden_test(swiftpm, packages, name):
    package = packages[name]
    result = swiftpm.test(package)
    result.check(f"swift test in {package}")
    quantized = any(t["quantization"] for t in signature(package)["inputs"] + signature(package)["outputs"])
    # One golden test, and a second one through predictFloat when any tensor is quantized.
    assert executed(result) == 1 + quantized, result.output


def plant_wrong_golden_value(package: Path, output: dict) -> str:
    """Move one expected output of sample 0 by ten quantization steps; return the failure line
    the test must print (name, sample, index and the expected value)."""
    golden_file = package / "Tests" / "ClfInt8Tests" / "clfint8_t_golden.json"
    golden = json.loads(golden_file.read_text())
    values = golden["dequantized"]["outputs"][output["name"]][0]
    values[2] += 10 * output["quantization"]["scale"]
    golden_file.write_text(json.dumps(golden))
    return rf"output {re.escape(output['name'])}, sample 0, index 2: expected {re.escape(repr(values[2]))}, got \S+"


def plant_wrong_scale(package: Path, output: dict) -> str:
    """Double the loader's output scale, the slip no compiler sees: any element may fail."""
    loader = package / "Sources" / "ClfInt8" / "ClfInt8.swift"
    constant = f"public static let {camel(output['name'])}Scale: Float = "
    text = loader.read_text()
    scale = re.search(re.escape(constant) + r"(\S+)\n", text)[1]
    loader.write_text(text.replace(constant + scale, f"{constant}2 * {scale}"))
    return rf"output {re.escape(output['name'])}, sample \d+, index \d+: expected \S+, got \S+"


@pytest.mark.parametrize("plant", [plant_wrong_golden_value, plant_wrong_scale],
                         ids=["golden-value", "loader-scale"])
def test_a_planted_error_fails_the_package_test(swiftpm, packages, tmp_path, plant):
    # A copy of the int8 package with one thing wrong: `swift test` must fail, and say where.
    output = signature(packages["ClfInt8"])["outputs"][0]
    package = shutil.copytree(packages["ClfInt8"], tmp_path / "ios")
    failure = plant(package, output)
    result = swiftpm.test(package)
    assert not result.ok, result.output
    assert re.search(failure, result.output), result.output


# ------------------------------------------------------------------------------ resolving LiteRT

def rendered_package(root: Path, litert: dict | None = None, template_dirs: list[Path] | None = None) -> Path:
    """A small compiled_model package (no golden test) rendered by tfbuild, taking LiteRT as
    `mobile.ios.litert` says (None: the default)."""
    ctx = make_ctx([tensor("x", [1, 2])], [tensor("y", [1, 2])], golden=False, android=None,
                   ios={"class_name": "Pinned", "api": "compiled_model", "delegates": [], "litert": litert})
    write_files(root, render_loaders(ctx, template_dirs))
    return root / "ios"


def test_the_default_manifest_pins_the_release_commit(tmp_path):
    manifest = (rendered_package(tmp_path) / "Package.swift").read_text()
    assert (f'.package(url: "{LITERT_URL}", revision: "{VERSIONS["litert_swift_revision"]}")'
            in manifest), manifest
    assert 'package: "LiteRT")' in manifest


def test_a_version_requirement_fails_against_a_manifest_as_strict_as_upstreams(swiftpm, tmp_path):
    # The stand-in declares an unsafe linker flag as LiteRT does, and is tagged 2.2.0: the
    # manifest tfbuild generated, with its revision swapped for `from:`, must not build.
    overrides = break_template(tmp_path / "templates", "ios/Package.swift.j2",
                               ("revision: {{ ios.litert.revision|swift_string }}",
                                'from: {{ versions.litert_swift|swift_string }}'))
    package = rendered_package(tmp_path / "gen", template_dirs=[overrides])
    assert f'from: "{VERSIONS["litert_swift"]}"' in (package / "Package.swift").read_text()
    result = swiftpm.build(package, tmp_path / "scratch")
    assert not result.ok, result.output
    assert "the target 'LiteRT' in product 'LiteRT' contains unsafe build flags" in result.output


def test_a_local_litert_checkout_builds(swiftpm, litert_swift_repo, tmp_path):
    # mobile.ios.litert: {path}: a local package may carry unsafe flags.
    package = rendered_package(tmp_path / "gen", {"path": str(litert_swift_repo.path)})
    assert f'.package(path: "{litert_swift_repo.path}")' in (package / "Package.swift").read_text()
    swiftpm.build(package, tmp_path / "scratch").check(f"swift build in {package}")
