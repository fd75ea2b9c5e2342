"""TFLite metadata: the recipe's `metadata` section merged per target, written into the .tflite
before verification, read back, part of the key, and every mistake in it a located user error
that leaves the last good build alone.

The built files are read here with the generated schemas themselves (mediapipe's metadata
object API, LiteRT's model API, zipfile), not with tfbuild's reader.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from conftest import Result, assert_user_error
from models import pixels, rgb_classifier, write_dense_project
from test_codegen import make_ctx, tensor
from tfbuild import codegen
from tfbuild.errors import UserError
from tfbuild.metadata import wanted
from tfbuild.recipe import Recipe

LABELS = "cat\ndog\nbird\n"
RECIPE = """\
tfbuild: 1
model: {source: models/rgb.keras}
data: {calibration: data/rgb.npz, evaluation: data/rgb.npz}
targets:
  fp32: {}
  int8: {quantize: int8, io: uint8, metadata: {version: "2-int8"}}
  plain: {metadata: false}
metadata:
  author: Ada
  license: Apache-2.0
  inputs:
    image: {content: image, normalization: {mean: [0], std: [1]}}
mobile:
  android: {package: com.example.rgb, class_name: RgbClassifier}
  labels: data/labels.txt
"""


def require_mediapipe():
    """mediapipe (the metadata extra) is a test dependency: skip without it, except in CI."""
    try:
        import mediapipe  # noqa: F401
        from mediapipe.tasks.metadata import metadata_schema_py_generated  # noqa: F401
    except ImportError as err:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"mediapipe is not installed (pip install 'tfbuild[metadata]'): {err}")


def read_metadata(path) -> tuple[object, dict[str, bytes]] | None:
    """(ModelMetadataT, packed files) of a built file, through the generated schemas; None when it
    has no metadata."""
    from ai_edge_litert import schema_py_generated as schema
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    data = path.read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    entries = [model.Metadata(i) for i in range(model.MetadataLength())]
    found = [e for e in entries if e.Name() == b"TFLITE_METADATA"]
    if not found:
        return None
    (entry,) = found
    buffer = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    assert fb.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    return fb.ModelMetadataT.InitFromPackedBuf(buffer, 0), files


def rgb_project(project) -> None:
    rgb_classifier(project.path("models/rgb.keras"))
    x = pixels()
    project.save_arrays("data/rgb.npz", image=x, labels=np.arange(len(x)) % 3)
    project.write("data/labels.txt", LABELS)
    project.recipe("rgb", RECIPE)


def run_without_mediapipe(project, *args: str) -> Result:
    """tfbuild as if the extra were not installed: find_spec answers None for a module that
    sys.modules maps to None."""
    code = "import sys; sys.modules['mediapipe'] = None; from tfbuild.cli import main; raise SystemExit(main())"
    proc = subprocess.run([sys.executable, "-c", code, "-C", str(project.root), *args], capture_output=True,
                          text=True, timeout=120)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_worker_user_error(result: Result, *fragments: str) -> None:
    """A user error found in the worker (it needs the model's shapes): exit 2, no traceback."""
    assert result.code == 2, result.text
    assert "Traceback" not in result.text, result.text
    for fragment in fragments:
        assert fragment in result.text, (fragment, result.text)


# ------------------------------------------------------------------------------- the recipe

def test_target_metadata_overrides_the_recipe_field_by_field():
    recipe = Recipe.model_validate({
        "tfbuild": 1, "model": {"source": "m.keras"},
        "targets": {"a": {}, "b": {"metadata": {"author": "Bo", "inputs": {"x": {"range": [0, 1]}}}},
                    "c": {"metadata": False}},
        "metadata": {"author": "Ada", "license": "MIT", "inputs": {"x": {"content": "image"}}},
        "mobile": {"labels": "l.txt"}})
    a, b = wanted(recipe, "a", "r.yaml"), wanted(recipe, "b", "r.yaml")
    assert a.general == {"author": "Ada", "license": "MIT"} and a.inputs == {"x": {"content": "image"}}
    assert b.general == {"author": "Bo", "license": "MIT"}
    assert b.inputs == {"x": {"content": "image", "range": [0.0, 1.0]}}
    assert b.key("inputs.x.range") == "targets.b.metadata.inputs.x.range"
    assert b.key("inputs.x.content") == "metadata.inputs.x.content"
    assert b.default_labels == "l.txt"
    assert wanted(recipe, "c", "r.yaml") is None


def test_image_settings_on_an_input_that_is_not_an_image_are_located():
    recipe = Recipe.model_validate({
        "tfbuild": 1, "model": {"source": "m.keras"}, "targets": {"a": {}},
        "metadata": {"inputs": {"x": {"normalization": {"mean": [0], "std": [1]}}}}})
    with pytest.raises(UserError) as caught:
        wanted(recipe, "a", "r.yaml")
    assert caught.value.key == "metadata.inputs.x.normalization"
    assert "content: image" in caught.value.expected


def test_image_inputs_image_tasks_cannot_read_as_verified_are_warned_about():
    from tfbuild.metadata import image_task_warnings

    def warnings(dtype, normalization, quantization=None):
        meta = {"inputs": [{"name": "image", "content": "image", "normalization": normalization}]}
        signature = {"inputs": [tensor("image", [1, 4, 4, 3], dtype, quantization)]}
        return image_task_warnings(meta, signature)
    identity = {"mean": [0.0], "std": [1.0]}
    assert warnings("uint8", identity, {"scale": 1.0, "zero_point": 0}) == []
    assert warnings("float32", identity) == []
    (narrow,) = warnings("uint8", identity, {"scale": 0.9, "zero_point": 0})  # calibrated on 0..229
    assert "reads as (p - 0) * 0.9" in narrow and "10.0% of the range" in narrow
    assert "refuse it" in warnings("float32", None)[0]
    assert "read uint8 or float32 images only" in warnings("int8", identity, {"scale": 1.0, "zero_point": -128})[0]


# ------------------------------------------------------------------------------- the READMEs

def metadata_for(inputs: list[dict]) -> dict:
    return {"name": "rgb", "version": "fp32-0123456789ab", "author": "Ada", "license": "MIT",
            "inputs": inputs,
            "outputs": [{"name": "probs", "content": "feature", "labels": {"file": "labels.txt", "count": 3}}]}


def test_readmes_show_mediapipe_tasks_for_an_image_classifier_with_metadata():
    image = tensor("image", [1, 4, 4, 3], "uint8", {"scale": 1.0, "zero_point": 0})
    probs = tensor("probs", [1, 3], "uint8", {"scale": 1 / 256, "zero_point": 0})
    meta = metadata_for([{"name": "image", "content": "image", "color_space": "rgb", "normalization": None}])
    files = codegen.render_loaders(make_ctx([image], [probs], metadata=meta))
    android, ios = files["android/README.md"], files["ios/README.md"]
    assert "ImageClassifier.createFromOptions(context, options)" in android
    assert 'setModelAssetPath("model.tflite")' in android and "com.google.mediapipe:tasks-vision:" in android
    assert "ImageClassifier(options: options)" in ios and "pod 'MediaPipeTasksVision'" in ios
    assert "its 3 labels (`labels.txt`, packed in the file)" in android and "author `Ada`" in ios

    features = tensor("features", [1, 8])
    meta = metadata_for([{"name": "features", "content": "feature", "color_space": None, "normalization": None}])
    files = codegen.render_loaders(make_ctx([features], [probs], metadata=meta))
    assert "TFLite metadata" in files["android/README.md"]  # described, but no image task to show
    assert "ImageClassifier" not in files["android/README.md"] + files["ios/README.md"]
    files = codegen.render_loaders(make_ctx([image], [probs]))
    assert "TFLite metadata" not in files["android/README.md"] + files["ios/README.md"]


# ------------------------------------------------------------------------------- built for real

@pytest.mark.slow
def test_metadata_is_written_before_verification_read_back_and_keyed(project):
    require_mediapipe()
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    rgb_project(project)
    result = project.run()
    assert result.code == 0, result.text
    for target, version in (("fp32", None), ("int8", "2-int8")):
        path = project.path(f"build/rgb/{target}/model.tflite")
        meta, files = read_metadata(path)
        assert (meta.name, meta.author, meta.license, meta.minParserVersion) == (b"rgb", b"Ada", b"Apache-2.0", b"1.0.0")
        if version:
            assert meta.version == version.encode()
        else:  # the default: the target and the converted model's digest
            assert re.fullmatch(rb"fp32-[0-9a-f]{12}", meta.version), meta.version
        (image,) = meta.subgraphMetadata[0].inputTensorMetadata
        assert image.content.contentPropertiesType == fb.ContentProperties.ImageProperties
        assert image.content.contentProperties.colorSpace == fb.ColorSpaceType.RGB
        (unit,) = image.processUnits
        assert (list(unit.options.mean), list(unit.options.std)) == ([0.0], [1.0])
        (probs,) = meta.subgraphMetadata[0].outputTensorMetadata
        (labels,) = probs.associatedFiles
        assert (labels.name, labels.type) == (b"labels.txt", fb.AssociatedFileType.TENSOR_AXIS_LABELS)
        assert files == {"labels.txt": b"cat\ndog\nbird"}
        report = json.loads(project.path(f"build/rgb/{target}/report.json").read_text())
        import hashlib

        assert report["model_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()  # verified = shipped
        assert report["verdict"] == "passed" and report["metadata"]["scores"] == {"probs": "probability"}
        assert report["metadata"]["outputs"][0]["labels"] == {"file": "labels.txt", "count": 3}
    assert json.loads(project.path("build/rgb/int8/report.json").read_text())["warnings"] == []
    assert read_metadata(project.path("build/rgb/plain/model.tflite")) is None
    readme = project.path("build/rgb/fp32/android/README.md").read_text()
    assert "ImageClassifier.createFromOptions" in readme

    assert project.run().text.startswith("tfbuild: all 3 target(s) up to date")
    project.write("data/labels.txt", "cat\ndog\nfinch\n")
    status = project.run("status")
    # Packed into the metadata targets' files, and the label count tells verification which output
    # holds class scores: every target converts again.
    assert "convert     rgb:fp32: data/labels.txt changed" in status.text, status.text
    assert "convert     rgb:plain: data/labels.txt changed" in status.text, status.text
    dry = project.run("rgb", "metadata.author=Bo", "-n").text
    assert dry.count("metadata.author: Ada -> Bo") == 2 and "rgb:plain: metadata" not in dry, dry
    assert project.run().code == 0
    assert read_metadata(project.path("build/rgb/int8/model.tflite"))[1] == {"labels.txt": b"cat\ndog\nfinch"}
    assert project.run("report").code == 0
    assert "TFLite metadata" in project.path("build/report.html").read_text()


@pytest.mark.slow
def test_bad_metadata_is_a_located_user_error_and_keeps_the_last_good_build(project):
    require_mediapipe()
    rgb_project(project)
    write_dense_project(project, name="flat", extra="metadata:\n  inputs: {features: {content: image}}\n")
    assert project.run("rgb").code == 0
    built = {t: project.path(f"build/rgb/{t}/model.tflite").read_bytes() for t in ("fp32", "int8")}

    # Found at planning, before any conversion.
    assert_user_error(project.run("rgb", "metadata.inputs.image.content=feature"),
                      "recipes/rgb.yaml: metadata.inputs.image.normalization",
                      "normalization applies to image inputs", "content: image")
    assert_user_error(project.run("rgb", "metadata.inputs.image.normalization.std=[1,2]"),
                      "metadata.inputs.image.normalization", "mean has 1 value(s) and std 2")
    assert_user_error(run_without_mediapipe(project, "-B", "rgb"), "recipes/rgb.yaml: metadata",
                      "needs the optional extra tfbuild[metadata]", "pip install 'tfbuild[metadata]'")

    # Found in the worker, against the model's shapes, before anything is converted.
    assert_worker_user_error(
        project.run("rgb", "metadata.inputs.image.normalization={mean:[0,0],std:[1,1]}"),
        "recipes/rgb.yaml: metadata.inputs.image.normalization", "normalization.mean has 2 values, but input "
        "'image' has 3 channel(s)")
    project.write("data/labels.txt", "cat\ndog\n")
    assert_worker_user_error(project.run("rgb"), "recipes/rgb.yaml: mobile.labels",
                             "data/labels.txt has 2 label(s), but output 'probs' has 3 class(es)")
    assert_worker_user_error(project.run("flat"), "recipes/flat.yaml: metadata.inputs.features.content",
                             "content: image needs a [1, height, width, channels] input", "[1, 8]")
    for target, data in built.items():
        assert project.path(f"build/rgb/{target}/model.tflite").read_bytes() == data, target
    project.write("data/labels.txt", LABELS)
    after = project.run("rgb")  # the labels the last good build was made with: nothing to do
    assert after.code == 0 and "all 3 target(s) up to date" in after.text, after.text
