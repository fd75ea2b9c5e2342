"""One real tfbuild project whose targets carry both mobile loaders, shared by the tests that run
them: tests/test_ios_packages.py (`swift test` on each iOS package) and
tests/test_loaders_android_run.py (each Android loader's instrumented test on the JVM).

The spread: float32, float16, dynamic range, int8 with int8, uint8 and float32 edges, two inputs
and two outputs (plain and quantized), int32, int64 and bool inputs, labels and none, TFLite
metadata and none, and a dynamic time axis. Built once per session (about 40 s on 2 cores), so
the two platforms test the very same .tflite files and golden vectors.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from models import FACTORIES, dense_classifier, features
from tfbuild.codegen import VERSIONS

STAND_IN = Path(__file__).resolve().parent / "fixtures" / "litert_swift"

# Inputs the shared factories lack: int32 token ids, and int64 ids with a bool mask.
EXTRA_FACTORIES = """

def tokens():
    keras.utils.set_random_seed(0)
    ids = keras.Input((6,), dtype="int32", name="ids")
    h = keras.layers.Flatten()(keras.layers.Embedding(10, 4)(ids))
    return keras.Model(ids, keras.layers.Dense(3, name="logits")(h))


def masked():
    keras.utils.set_random_seed(0)
    ids = keras.Input((5,), dtype="int64", name="ids")
    mask = keras.Input((5,), dtype="bool", name="mask")
    h = keras.layers.Embedding(10, 3)(ids) * keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
    return keras.Model([ids, mask], keras.layers.Dense(2, name="scores")(keras.layers.Flatten()(h)))
"""


@dataclass(frozen=True)
class Spec:
    """One recipe with one target `t`: its loader class (both platforms), source, data, settings."""
    name: str  # distinct per recipe, so the shared build folders never mix them
    source: str
    data: str
    target: str
    labels: bool = False
    metadata: bool = False


SPECS = [
    Spec("ClfFp32", "models/clf.keras", "data/clf.npz", "{}", labels=True),
    Spec("ClfFp16", "models/clf.keras", "data/clf.npz", "{quantize: float16}", metadata=True),
    Spec("ClfDynamic", "models/clf.keras", "data/clf.npz", "{quantize: dynamic}"),
    Spec("ClfInt8", "models/clf.keras", "data/clf.npz", "{quantize: int8, io: int8}", labels=True),
    Spec("ClfUint8", "models/clf.keras", "data/clf.npz", "{quantize: int8, io: uint8}", metadata=True),
    Spec("ClfInt8Float", "models/clf.keras", "data/clf.npz", "{quantize: int8, io: float32}"),
    Spec("TwoHeads", "py:factories:two_in_two_out", "data/heads.npz", "{}"),
    Spec("TwoHeadsUint8", "py:factories:two_in_two_out", "data/heads.npz",
         "{quantize: int8, io: uint8}"),
    Spec("Tokens", "py:factories:tokens", "data/tokens.npz", "{}"),
    Spec("Masked", "py:factories:masked", "data/masked.npz", "{}"),
    Spec("Frames", "py:factories:variable_length", "data/frames.npz", "{}"),
]


@dataclass(frozen=True)
class Repository:
    """A git copy of LiteRT's Swift stand-in, and the commit the recipes pin."""
    path: Path
    commit: str


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), "-c", "user.name=tfbuild-tests",
                           "-c", "user.email=tests@tfbuild.invalid", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="session")
def litert_swift_repo(tmp_path_factory) -> Repository:
    """The stand-in as SwiftPM fetches a package: a git repository, named LiteRT so its identity
    is the real one's, tagged with the release too (so that a version requirement would find
    it, and fail only on the unsafe flags). The generated packages pin its commit, as the
    default pins v2.2.0's: no commit of ours can have upstream's hash."""
    from test_loaders_compile import require

    require("git", shutil.which("git"), "install git (SwiftPM fetches LiteRT's stand-in with it)")
    repository = tmp_path_factory.mktemp("litert-swift") / "LiteRT"
    shutil.copytree(STAND_IN, repository)
    git(repository, "init", "-q")
    git(repository, "add", "-A")
    git(repository, "commit", "-q", "-m", "LiteRT stand-in")
    git(repository, "tag", VERSIONS["litert_swift"])
    return Repository(repository, git(repository, "rev-parse", "HEAD"))


def write_project(project, litert_commit: str) -> None:
    """Models, data and one recipe per Spec, each with both platforms' default APIs."""
    dense_classifier(project.path("models/clf.keras"))
    x = features()
    project.save_arrays("data/clf.npz", features=x, labels=np.arange(len(x)) % 4)
    project.write("factories.py", FACTORIES + EXTRA_FACTORIES)
    rng = np.random.default_rng(0)
    project.save_arrays("data/heads.npz", left=rng.random((16, 5), dtype=np.float32),
                        right=rng.random((16, 3), dtype=np.float32))
    project.save_arrays("data/tokens.npz", ids=rng.integers(0, 10, (16, 6), dtype=np.int32))
    project.save_arrays("data/masked.npz", ids=rng.integers(0, 10, (16, 5), dtype=np.int64),
                        mask=rng.random((16, 5)) < 0.7)
    # Nine frames a sample: the model converts with one (its dynamic axis), so the golden
    # vectors are longer than the converted shape.
    project.save_arrays("data/frames.npz", frames=rng.random((8, 9, 4), dtype=np.float32))
    project.write("data/labels.txt", "zero\none\ntwo\nthree\n")
    for spec in SPECS:
        project.recipe(spec.name.lower(), recipe_text(spec, litert_commit))


def recipe_text(spec: Spec, litert_commit: str) -> str:
    labels = "  labels: data/labels.txt\n" if spec.labels else ""
    metadata = "metadata: {author: tfbuild tests, license: Apache-2.0}\n" if spec.metadata else ""
    return f"""\
tfbuild: 1
model: {{source: '{spec.source}'}}
data: {{calibration: {spec.data}, evaluation: {spec.data}}}
targets: {{t: {spec.target}}}
{metadata}mobile:
  android: {{package: com.example.{spec.name.lower()}, class_name: {spec.name}}}
  ios: {{class_name: {spec.name}, litert: {{revision: {litert_commit}}}}}
{labels}"""


@pytest.fixture(scope="session")
def mobile_targets(litert_swift_repo, tmp_path_factory) -> dict[str, Path]:
    """Every Spec built by tfbuild: {class name: its target's folder}."""
    from conftest import Project

    project = Project(tmp_path_factory.mktemp("mobile-builds") / "proj")
    write_project(project, litert_swift_repo.commit)
    result = project.run("-j2")
    assert result.code == 0, result.text
    return {spec.name: project.path(f"build/{spec.name.lower()}/t") for spec in SPECS}


@pytest.fixture(scope="session")
def litert_lib() -> Path:
    """The wheel's libLiteRt: the runtime that computed the golden vectors, whose C API both the
    Swift and the Kotlin stand-ins of LiteRT call."""
    import ai_edge_litert

    from test_loaders_compile import require

    folder = Path(ai_edge_litert.__file__).parent
    found = [folder / name for name in ("libLiteRt.so", "libLiteRt.dylib") if (folder / name).is_file()]
    return require("libLiteRt", found and found[0],
                   f"the ai-edge-litert wheel has no libLiteRt in {folder} (pip install ai-edge-litert)")


def signature(target: Path) -> dict:
    """The built model's signature, as report.json records it."""
    return json.loads((target / "report.json").read_text())["signature"]


def is_quantized(target: Path) -> bool:
    sig = signature(target)
    return any(t["quantization"] for t in sig["inputs"] + sig["outputs"])
