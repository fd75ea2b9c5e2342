"""PyTorch sources through the real command: a `py:` factory declared `model.framework: torch`
(tfbuild/conversion/torch_source.py) built by `tfbuild` beside a Keras recipe, verified in LiteRT,
up to date on the second run without importing torch, and keyed by torch's tools only.

The recipe-level checks (which kind takes which source) need neither torch nor TensorFlow. The
builds need the torch extra: without it they skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_user_error
from tfbuild.conversion import sources
from tfbuild.errors import UserError
from tfbuild.recipe import ModelSection

CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_torch() -> None:
    """The torch extra, or a skip; under CI a missing extra fails the test."""
    if CI:
        import litert_torch  # noqa: F401  (an ImportError fails the test under CI)
        import torch  # noqa: F401
    else:
        pytest.importorskip("litert_torch", reason="the torch extra is not installed (pip install -e '.[torch]')")


# ------------------------------------------------------------------ kinds, without any tool

def kind(tmp_path: Path, **section) -> str:
    return sources.kind_of(ModelSection(**section), tmp_path, file="recipes/t.yaml").name


def test_a_py_factory_is_torch_only_when_the_recipe_says_so(tmp_path):
    assert kind(tmp_path, source="py:nets.tiny:build", framework="torch") == "torch-factory"
    assert kind(tmp_path, source="py:nets.tiny:build") == "py-factory"
    assert kind(tmp_path, source="py:nets.tiny:build", framework="keras") == "py-factory"
    assert kind(tmp_path, source="models/m.pt2") == "torch-program"
    assert kind(tmp_path, source="models/m.pt2", framework="keras") == "torch-program"  # .pt2 is torch


def test_torch_kinds_key_torch_tools_and_keras_kinds_do_not(tmp_path):
    torch_kind = sources.kind_of(ModelSection(source="py:a.b:c", framework="torch"), tmp_path, file="f")
    keras_kind = sources.kind_of(ModelSection(source="py:a.b:c"), tmp_path, file="f")
    for tool in ("torch", "litert-torch", "ai-edge-quantizer", "litert-converter"):
        assert tool in torch_kind.tools and tool not in keras_kind.tools
    assert "tensorflow" not in torch_kind.tools
    assert set(sources.tool_versions(torch_kind.tools)) == set(torch_kind.tools)


def test_channel_last_on_a_keras_source_is_a_recipe_error():
    with pytest.raises(ValueError, match="channel_last applies to PyTorch sources only"):
        ModelSection(source="models/a.keras", channel_last=True)
    assert ModelSection(source="py:a.b:c", framework="torch", channel_last=True).channel_last is True


def test_a_pt2_that_is_not_an_archive_is_named_cheaply(tmp_path):
    (tmp_path / "m.pt2").write_bytes(b"not a zip")
    found = sources.kind_of(ModelSection(source="m.pt2"), tmp_path, file="f")
    assert "zip archives" in (found.check(tmp_path / "m.pt2") or "")
    with pytest.raises(UserError):
        sources.kind_of(ModelSection(source="m.onnx"), tmp_path, file="f")


# ------------------------------------------------------------------ builds through the CLI

TINY = """\
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x):
        return self.body(x)


def build():
    torch.manual_seed(0)
    return Tiny().eval()
"""

TORCH_RECIPE = """\
tfbuild: 1
model:
  source: py:nets.tiny:build
  framework: torch
  inputs: {x: {shape: [1, 8], dtype: float32}}
  outputs: [{name: logits, kind: values}]
data:
  calibration: data/tiny.npz
  evaluation: data/tiny.npz
targets:
  fp32: {}
  int8: {quantize: int8}
  int8_kept: {quantize: int8, float_fallback: [FULLY_CONNECTED]}
"""

KERAS_RECIPE = """\
tfbuild: 1
model:
  source: models/clf.keras
data:
  evaluation: data/clf.npz
targets:
  fp32: {}
"""

HEAVY = ("torch", "litert_torch", "ai_edge_quantizer", "tensorflow", "keras", "ai_edge_litert")


def run_watched(root: Path) -> tuple[int, str]:
    """The CLI in a fresh interpreter, then a last line naming the heavy modules it imported."""
    script = (
        "import sys\n"
        "from tfbuild.cli import main\n"
        f"code = main(['-C', {str(root)!r}])\n"
        f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def torch_project(project):
    require_torch()
    from tests.models import dense_classifier, features

    project.write("nets/__init__.py", "")
    project.write("nets/tiny.py", TINY)
    project.save_arrays("data/tiny.npz", x=np.random.default_rng(3).standard_normal((64, 8)).astype(np.float32))
    project.recipe("tiny", TORCH_RECIPE)
    dense_classifier(project.path("models/clf.keras"))
    x = features()
    project.save_arrays("data/clf.npz", features=x, labels=np.arange(len(x)) % 4)
    project.recipe("clf", KERAS_RECIPE)
    return project


@pytest.mark.slow
def test_a_torch_factory_builds_verifies_is_a_noop_after_and_keys_torch_only(torch_project):
    project = torch_project
    result = project.run()
    assert result.code == 0, result.text
    assert "4 built" in result.out, result.out
    for target in ("fp32", "int8", "int8_kept"):
        report = json.loads(project.path(f"build/tiny/{target}/report.json").read_text())
        assert report["verdict"] == "passed", (target, report["failures"])
        assert report["signature"]["inputs"][0]["name"] == "x", report["signature"]
        assert report["signature"]["outputs"][0]["name"] == "logits", report["signature"]
    int8 = json.loads(project.path("build/tiny/int8/report.json").read_text())
    assert int8["float_ops"]["count"] == 0, int8["float_ops"]  # every op integer
    kept = json.loads(project.path("build/tiny/int8_kept/report.json").read_text())
    assert kept["float_fallback"]["mode"] == "list" and kept["float_fallback"]["layers"], kept["float_fallback"]
    assert kept["float_ops"]["count"] > 0, kept["float_ops"]

    lock = json.loads(project.path("tfbuild.lock").read_text())
    entries = lock.get("targets", lock)
    torch_versions = entries["tiny:int8"]["versions"]
    keras_versions = entries["clf:fp32"]["versions"]
    for tool in ("torch", "litert-torch", "ai-edge-quantizer", "litert-converter"):
        assert torch_versions.get(tool) not in (None, "missing"), torch_versions
        assert tool not in keras_versions, keras_versions
        assert f"version:{tool}" not in json.dumps(entries["clf:fp32"]), entries["clf:fp32"]
    assert "tensorflow" not in torch_versions and "tensorflow" in keras_versions

    code, out = run_watched(project.root)
    assert code == 0, out
    assert "all 4 target(s) up to date" in out, out
    assert "HEAVY []" in out, out


@pytest.mark.slow
def test_a_torch_mode_litert_torch_cannot_make_fails_that_target_clearly(torch_project):
    project = torch_project
    project.recipe("tiny", TORCH_RECIPE.replace("  int8_kept: {quantize: int8, float_fallback: [FULLY_CONNECTED]}\n",
                                                "  flex: {select_tf_ops: true}\n"))
    result = project.run("tiny")
    assert result.code != 0, result.text
    assert "select_tf_ops has no meaning for a PyTorch source" in result.text, result.text
    assert json.loads(project.path("build/tiny/int8/report.json").read_text())["verdict"] == "passed"


@pytest.mark.slow
def test_a_torch_factory_without_its_inputs_is_a_user_error(torch_project):
    project = torch_project
    project.recipe("tiny", TORCH_RECIPE.replace("  inputs: {x: {shape: [1, 8], dtype: float32}}\n", ""))
    assert_user_error(project.run("tiny"), "model.inputs", "no input shapes of its own")


@pytest.mark.slow
def test_a_saved_torch_export_program_builds(project):
    """A .pt2 guards the batch it was exported with: the reference runs in steps of it."""
    require_torch()
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    project.path("models").mkdir(parents=True, exist_ok=True)
    torch.export.save(torch.export.export(module, (torch.zeros(1, 8),)), str(project.path("models/m.pt2")))
    project.save_arrays("data/m.npz", x=np.random.default_rng(1).standard_normal((32, 8)).astype(np.float32))
    project.recipe("prog", """\
        tfbuild: 1
        model: {source: models/m.pt2, trust_code: true}
        data: {evaluation: data/m.npz}
        targets: {fp32: {}}
        """)
    result = project.run()
    assert result.code == 0, result.text
    report = json.loads(project.path("build/prog/fp32/report.json").read_text())
    assert report["verdict"] == "passed", report["failures"]
    assert json.loads(project.path("tfbuild.lock").read_text())["targets"]["prog:fp32"]["versions"]["torch"] != "missing"
