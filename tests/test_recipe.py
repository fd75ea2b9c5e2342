"""Recipe composition (Hydra defaults and overrides), validation and the JSON Schema."""

from __future__ import annotations

import json
import subprocess
import sys

from tfbuild.project import Project as TfProject


def test_defaults_list_and_overrides_compose(project):
    project.write("recipes/quant/strict.yaml", "quantize: int8\nio: int8\naccept: {top1_agreement: 0.97}\n")
    project.write("models/m.keras", "x")
    project.write("data/c.npz", "x")
    project.recipe("m", """\
        defaults:
          - quant@targets.int8: strict
          - _self_
        tfbuild: 1
        model: {source: models/m.keras}
        data: {calibration: data/c.npz}
        targets:
          fp32: {}
          int8: {}
        """)
    tf_project = TfProject.open(project.root)
    loaded = tf_project.load("m", ["targets.int8.io=float32", "+targets.fp16.quantize=float16"])
    recipe = loaded.recipe
    assert recipe.targets["int8"].quantize == "int8"
    assert recipe.targets["int8"].io == "float32"
    assert recipe.targets["int8"].accept.top1_agreement == 0.97
    assert recipe.targets["fp16"].quantize == "float16"
    removed = tf_project.load("m", ["~targets.fp32"]).recipe
    assert set(removed.targets) == {"int8"}


def test_compose_cache_follows_shared_pieces(project):
    project.write("recipes/quant/strict.yaml", "quantize: int8\nio: int8\n")
    project.write("models/m.keras", "x")
    project.write("data/c.npz", "x")
    project.recipe("m", "defaults:\n  - quant@targets.q: strict\n  - _self_\ntfbuild: 1\n"
                        "model: {source: models/m.keras}\ndata: {calibration: data/c.npz}\ntargets: {q: {}}\n")
    assert TfProject.open(project.root).load("m", []).recipe.targets["q"].io == "int8"
    project.write("recipes/quant/strict.yaml", "quantize: int8\nio: uint8\n")
    assert TfProject.open(project.root).load("m", []).recipe.targets["q"].io == "uint8"


def test_schema_command_prints_json_schema_with_descriptions():
    out = subprocess.run([sys.executable, "-m", "tfbuild", "schema"], capture_output=True, text=True, check=True).stdout
    schema = json.loads(out)
    assert schema["title"] == "tfbuild recipe"
    target = schema["$defs"]["Target"]
    assert target["additionalProperties"] is False
    assert "Flex runtime" in target["properties"]["select_tf_ops"]["description"]
    undocumented = [f"{owner}.{name}" for owner, definition in [("Recipe", schema), *schema["$defs"].items()]
                    for name, prop in definition.get("properties", {}).items() if not prop.get("description")]
    assert undocumented == []
