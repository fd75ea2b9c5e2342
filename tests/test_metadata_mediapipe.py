"""A real client of the metadata: MediaPipe Tasks' ImageClassifier loads the shipped scenes
example as tfbuild built it and classifies the evaluation patches, preprocessing them from the
metadata alone (normalization, labels). Its categories and top-1 must agree with tfbuild's own
verification of the same file (LiteRT through `verify.run`, as the build measured it), for the
float32 target and for the int8 target with uint8 edges.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import REPO, Project
from test_metadata import require_mediapipe

pytestmark = pytest.mark.slow


def mediapipe_scores(model_path, images: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    """Every category's score per image, by class index, and the name MediaPipe gives each index."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(model_path)),
                                            max_results=-1)
    names: dict[int, str] = {}
    with vision.ImageClassifier.create_from_options(options) as classifier:
        rows = []
        for image in images:
            pixels = np.ascontiguousarray(image.astype(np.uint8))
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels))
            (head,) = result.classifications
            row = np.full(len(head.categories), np.nan, dtype=np.float32)
            for category in head.categories:
                row[category.index] = category.score
                names[category.index] = category.category_name
            rows.append(row)
    return np.stack(rows), names


def test_mediapipe_image_classifier_agrees_with_tfbuild_verification(tmp_path):
    require_mediapipe()
    from tfbuild import verify

    root = tmp_path / "repo"
    for folder in ("recipes", "examples"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    result = Project(root).run("scenes")
    assert result.code == 0, result.text
    labels = (root / "examples/scenes/labels.txt").read_text().split()
    evaluation = np.load(root / "examples/scenes/evaluation.npz")
    images, truth = evaluation["image"], evaluation["labels"]
    assert images.min() >= 0 and images.max() <= 255 and np.array_equal(images, np.round(images))
    for target in ("fp32", "int8"):
        path = root / f"build/scenes/{target}/model.tflite"
        report = json.loads((root / f"build/scenes/{target}/report.json").read_text())
        model = path.read_bytes()
        signature = verify.signature(model)
        litert = verify.run(model, signature, {"image": images}, batch=1)[0]["probs"]
        got, names = mediapipe_scores(path, images)
        assert names == dict(enumerate(labels)), target  # the labels packed in the file, by index
        agreement = float(np.mean(got.argmax(1) == litert.argmax(1)))
        accuracy = float(np.mean(got.argmax(1) == truth))
        largest = float(np.abs(got - litert).max())
        print(f"scenes:{target} ({signature['inputs'][0]['dtype']} input): MediaPipe vs tfbuild's LiteRT "
              f"verification on {len(images)} images: top-1 agreement {agreement:.4f}, largest score "
              f"difference {largest:.2g}; accuracy MediaPipe {accuracy:.4f}, report "
              f"{report['metrics']['accuracy']['tflite']:.4f}")
        assert agreement == 1.0, target
        assert accuracy == pytest.approx(report["metrics"]["accuracy"]["tflite"]), target
        assert largest <= 1e-5, target
    assert json.loads((root / "build/scenes/int8/report.json").read_text())["signature"]["inputs"][0]["dtype"] == "uint8"
