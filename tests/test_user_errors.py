"""Every user mistake: exit 2, one message naming the file and key path, no traceback, and
nothing written. These run the real command in a subprocess and never reach TensorFlow."""

from __future__ import annotations

import pytest

from conftest import assert_user_error

GOOD = """\
tfbuild: 1
model:
  source: models/m.keras
data:
  calibration: data/calib.npz
targets:
  fp32: {}
  int8: {quantize: int8}
"""


@pytest.fixture
def proj(project):
    project.write("models/m.keras", "not really a model, planning never reads it as one")
    project.write("data/calib.npz", "")
    return project


def test_bad_yaml_names_file_and_line(proj):
    proj.recipe("m", "tfbuild: 1\nmodel: [unclosed\n")
    assert_user_error(proj.run("-n"), "recipes/m.yaml", "line ", "invalid YAML")


def test_unknown_key_names_key_path(proj):
    proj.recipe("m", GOOD.replace("  fp32: {}", "  fp32: {quantise: float16}"))
    assert_user_error(proj.run("-n"), "recipes/m.yaml: targets.fp32.quantise: unknown key")


def test_wrong_type_says_what_was_expected(proj):
    proj.recipe("m", GOOD.replace("quantize: int8", "quantize: int7"))
    result = proj.run("-n")
    assert_user_error(result, "targets.int8.quantize", "'float32', 'float16', 'dynamic', 'int8' or 'int16x8'")


def test_missing_required_key(proj):
    proj.recipe("m", GOOD.replace("  source: models/m.keras\n", "  trust_code: false\n"))
    assert_user_error(proj.run("-n"), "model.source: required key is missing")


def test_missing_model_file(proj):
    proj.recipe("m", GOOD.replace("models/m.keras", "models/nope.keras"))
    assert_user_error(proj.run("-n"), "recipes/m.yaml: model.source: file not found: models/nope.keras")


def test_bad_custom_object_import_path(proj):
    proj.recipe("m", GOOD.replace("  source: models/m.keras\n",
                                  "  source: models/m.keras\n  custom_objects:\n    Swish: not a path\n"))
    assert_user_error(proj.run("-n"), "model.custom_objects.Swish", "invalid import path")


def test_custom_object_module_not_found(proj):
    proj.recipe("m", GOOD.replace("  source: models/m.keras\n",
                                  "  source: models/m.keras\n  custom_objects:\n    Swish: nosuchpkg.act:Swish\n"))
    assert_user_error(proj.run("-n"), "model.custom_objects.Swish", "cannot find module 'nosuchpkg.act'")


def test_unknown_target(proj):
    proj.recipe("m", GOOD)
    assert_user_error(proj.run("m:int4"), "no target of recipe 'm' matches", "fp32, int8")
    assert_user_error(proj.run("nosuch"), "no recipe matches 'nosuch'")


def test_bad_override_names_the_override(proj):
    proj.recipe("m", GOOD)
    assert_user_error(proj.run("-n", "targets.int9.io=int8"), "bad override 'targets.int9.io=int8'")
    assert_user_error(proj.run("-n", "targets.int8.io=int7"), "targets.int8.io")


def test_int8_needs_calibration_data(proj):
    proj.recipe("m", GOOD.replace("  calibration: data/calib.npz\n", "  evaluation: data/calib.npz\n"))
    assert_user_error(proj.run("-n"), "targets.int8.quantize", "needs calibration data")


def test_io_int8_needs_int8_quantization(proj):
    proj.recipe("m", GOOD.replace("  fp32: {}", "  fp32: {io: int8}"))
    assert_user_error(proj.run("-n"), "targets.fp32", "io: int8 needs quantize: int8")


def test_int8_edges_with_an_ios_interpreter_loader_are_refused_before_converting(proj):
    # TensorFlowLiteSwift cannot read int8 outputs; LiteRT's CompiledModel (the default) can.
    int8_edges = GOOD.replace("int8: {quantize: int8}", "int8: {quantize: int8, io: int8}")
    proj.recipe("m", int8_edges + "mobile:\n  ios: {class_name: Model, api: interpreter}\n")
    assert_user_error(proj.run("-n"), "recipes/m.yaml: targets.int8.io", "cannot read int8 outputs",
                      "io: uint8", "api: compiled_model")
    proj.recipe("m", int8_edges + "mobile:\n  ios: {class_name: Model}\n")
    result = proj.run("-n")
    assert result.code == 0, result.text


def test_ios_delegates_without_the_interpreter_api_are_refused(proj):
    # Delegates are TensorFlowLiteSwift's; the default CompiledModel loader would ignore them.
    proj.recipe("m", GOOD + "mobile:\n  ios: {class_name: Model, delegates: [metal]}\n")
    assert_user_error(proj.run("-n"), "recipes/m.yaml: mobile.ios", "belong to api: interpreter",
                      "mobile.ios.api: interpreter")
    proj.recipe("m", GOOD + "mobile:\n  ios: {class_name: Model, api: interpreter, delegates: [metal]}\n")
    result = proj.run("-n")
    assert result.code == 0, result.text


def test_output_cannot_escape_build_dir(proj):
    proj.recipe("m", GOOD.replace("  fp32: {}", "  fp32: {output: ../../evil.tflite}"))
    assert_user_error(proj.run("-n"), "targets.fp32.output")
    proj.recipe("m", GOOD + "output_dir: ../outside\n")
    assert_user_error(proj.run("-n"), "output_dir")


def test_newer_schema_version_is_refused_clearly(proj):
    proj.recipe("m", GOOD.replace("tfbuild: 1", "tfbuild: 9"))
    assert_user_error(proj.run("-n"), "tfbuild: recipe schema version 9 is newer", "upgrade tfbuild")


def test_not_a_project(tmp_path):
    from conftest import Project

    result = Project(tmp_path / "x").run("-C", str(tmp_path / "nowhere"))
    assert_user_error(result, "no such directory")


def test_yml_recipe_is_pointed_out(proj):
    proj.write("recipes/m.yml", GOOD)
    assert_user_error(proj.run("list"), "recipes/m.yml: recipes must end in .yaml", "rename it to m.yaml")


def test_input_that_is_a_directory(proj):
    proj.recipe("m", GOOD)
    proj.path("data/calib.npz").unlink()
    proj.path("data/calib.npz").mkdir()
    assert_user_error(proj.run("-n"), "data.calibration: not a file: data/calib.npz")


def test_invalid_mobile_names_are_caught_before_any_conversion(proj):
    proj.recipe("m", GOOD + "mobile:\n  android: {package: com.example.x, class_name: my-class}\n")
    assert_user_error(proj.run("-n"), "mobile.android", "invalid class name 'my-class'")
    proj.recipe("m", GOOD + "mobile:\n  android: {package: com.class.x, class_name: Good}\n")
    assert_user_error(proj.run("-n"), "mobile.android", "invalid Android package")


def test_output_dir_may_not_hold_inputs(proj):
    proj.recipe("m", GOOD + "output_dir: data\n")
    assert_user_error(proj.run("-n"), "output_dir", "contains the input data/calib.npz")


def test_missing_custom_object_attribute_is_caught_before_tensorflow(proj):
    proj.write("acme/__init__.py", "")
    proj.write("acme/layers.py", "import keras\n\n\nclass Swish(keras.layers.Layer):\n    pass\n")
    proj.recipe("m", GOOD.replace("  source: models/m.keras\n",
                                  "  source: models/m.keras\n  custom_objects:\n    Swish: acme.layers:Swich\n"))
    assert_user_error(proj.run("-n"), "model.custom_objects.Swish", "module 'acme.layers' (layers.py) has no 'Swich'",
                      "one of: Swish")


def test_missing_py_factory_function(proj):
    proj.write("factories.py", "def make():\n    return None\n")
    proj.recipe("m", GOOD.replace("source: models/m.keras", "source: 'py:factories:build'"))
    assert_user_error(proj.run("-n"), "model.source", "has no 'build'", "one of: make")


def test_missing_data_and_labels_files(proj):
    proj.recipe("m", GOOD.replace("data/calib.npz", "data/nope.npz"))
    assert_user_error(proj.run("-n"), "data.calibration: file not found: data/nope.npz")
    proj.recipe("m", GOOD + "mobile:\n  labels: data/labels.txt\n  android: {package: a.b, class_name: C}\n")
    assert_user_error(proj.run("-n"), "mobile.labels: file not found: data/labels.txt")


def test_unknown_defaults_piece(proj):
    proj.recipe("m", "defaults:\n  - quant@targets.int8: nosuch\n  - _self_\n" + GOOD)
    assert_user_error(proj.run("-n"), "recipes/m.yaml", "cannot compose recipe", "nosuch")


def test_schema_version_missing_or_zero(proj):
    proj.recipe("m", GOOD.replace("tfbuild: 1\n", ""))
    assert_user_error(proj.run("-n"), "recipes/m.yaml: tfbuild: missing or invalid recipe schema version")
    proj.recipe("m", GOOD.replace("tfbuild: 1", "tfbuild: 0"))
    assert_user_error(proj.run("-n"), "tfbuild: recipe schema version 0 is not supported")


def test_commands_missing_what_they_need(proj):
    proj.recipe("m", GOOD)
    assert_user_error(proj.run("explain"), "explain needs a target")
    assert_user_error(proj.run("check"), "tfbuild.lock: no lock file")
    assert_user_error(proj.run("status", "-B"), "-B does not apply to `tfbuild status`")
    assert proj.run("-j", "0").code == 2


def test_dry_runs_and_queries_leave_the_disk_alone(proj):
    proj.recipe("m", GOOD)
    before = sorted(p.relative_to(proj.root) for p in proj.root.rglob("*"))
    for args in (["-n"], ["-n", "targets.int8.io=uint8"], ["status"], ["list"], ["explain", "m:fp32"]):
        proj.run(*args)
    assert sorted(p.relative_to(proj.root) for p in proj.root.rglob("*")) == before


def test_user_errors_write_nothing(proj):
    proj.recipe("m", GOOD.replace("  fp32: {}", "  fp32: {quantise: float16}"))
    proj.run()
    assert not proj.path("build").exists()
    assert not proj.path("tfbuild.lock").exists()
