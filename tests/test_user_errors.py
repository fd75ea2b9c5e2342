"""Every user mistake: exit 2, one message naming the file and key path, no traceback, and
nothing written. These run the real command in a subprocess and never reach TensorFlow."""

from __future__ import annotations

import re
import time
import zipfile

import numpy as np
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
    keras_like(project.path("models/m.keras"))  # planning reads only the zip's directory
    project.save_arrays("data/calib.npz", features=np.zeros((4, 8), np.float32))
    return project


def keras_like(path, members=("config.json",)):
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name in members:
            archive.writestr(name, "{}")


def test_bad_yaml_names_file_and_line(proj):
    proj.recipe("m", "tfbuild: 1\nmodel: [unclosed\n")
    assert_user_error(proj.run("-n"), "recipes/m.yaml", "line ", "invalid YAML")


def test_unknown_key_names_key_path(proj):
    proj.recipe("m", GOOD.replace("  fp32: {}", "  fp32: {quantise: float16}"))
    # the line it was written at: GOOD's targets.fp32 is on line 7
    assert_user_error(proj.run("-n"), "recipes/m.yaml: line 7: targets.fp32.quantise: unknown key")


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
    assert_user_error(proj.run("-n"), "recipes/m.yaml: line 10: mobile.ios", "belong to api: interpreter",
                      "mobile.ios.api: interpreter")
    proj.recipe("m", GOOD + "mobile:\n  ios: {class_name: Model, api: interpreter, delegates: [metal]}\n")
    result = proj.run("-n")
    assert result.code == 0, result.text


def test_a_litert_swift_source_must_be_a_commit_or_a_path(proj):
    # SwiftPM refuses LiteRT by version (its unsafe linker flags): a tag or a version is refused.
    proj.recipe("m", GOOD + "mobile:\n  ios: {class_name: Model, litert: {revision: v2.2.0}}\n")
    assert_user_error(proj.run("-n"), "recipes/m.yaml", "mobile.ios.litert", "must be a full commit hash",
                      "145c7523ff08d5e57ab5c582141775eea47da9c7")
    proj.recipe("m", GOOD + "mobile:\n  ios: {class_name: Model, litert: {path: ../LiteRT, revision: "
                + "a" * 40 + "}}\n")
    assert_user_error(proj.run("-n"), "mobile.ios.litert", "a path or a url and revision, not both")
    proj.recipe("m", GOOD + "mobile:\n  ios: {class_name: Model, api: interpreter, litert: {path: ../LiteRT}}\n")
    assert_user_error(proj.run("-n"), "mobile.ios", "which api: interpreter does not use")
    proj.recipe("m", GOOD + "mobile:\n  ios: {class_name: Model, litert: {path: ../LiteRT}}\n")
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


# ---------------------------------------------------------------- malformed YAML, located

def refused(proj, recipe: str, *args: str) -> list[str]:
    """Plan recipe m: exit 2 without a traceback; the lines of the error."""
    proj.recipe("m", recipe)
    result = proj.run("-n", *args)
    assert_user_error(result)
    return result.err.splitlines()


def test_self_referencing_alias_is_refused_at_its_line(proj):
    lines = refused(proj, "a: &a [*a, *a]\n" + GOOD)
    assert lines == ["error: recipes/m.yaml: line 1: alias *a is inside the value it names (&a)",
                     "  hint: YAML aliases that refer to themselves are not allowed"]


def test_deep_nesting_is_refused_at_its_line(proj):
    lines = refused(proj, GOOD + "x: " + "[" * 200 + "]" * 200 + "\n")
    assert lines[0] == "error: recipes/m.yaml: line 9: nesting deeper than 32 levels"


def test_duplicate_key_from_a_merge_names_both_lines(proj):
    lines = refused(proj, GOOD + "model:\n  source: models/m.keras\n")
    assert lines[0] == 'error: recipes/m.yaml: line 9: duplicate key "model" (also on line 2)'


def test_malformed_defaults_entry_is_refused_before_hydra(proj):
    proj.write("recipes/quant/int8_strict.yaml", "quantize: int8\nio: int8\n")
    lines = refused(proj, "defaults:\n  - quant@targets.int8: int8_strict\n  - nested: _self_\n" + GOOD)
    assert lines == ['error: recipes/m.yaml: line 3: defaults list entry 2: expected '
                     '"group@package: option" or "_self_", got {nested: _self_}',
                     "  hint: `_self_` stands alone: `- _self_`"]


def test_pieces_are_checked_at_their_own_file(proj):
    proj.write("recipes/quant/int8_strict.yaml", "quantize: int8\nio: int8\nquantize: float16\n")
    lines = refused(proj, "defaults:\n  - quant@targets.int8: int8_strict\n  - _self_\n" + GOOD)
    assert lines[0] == 'error: recipes/quant/int8_strict.yaml: line 3: duplicate key "quantize" (also on line 1)'


ALIAS_BOMB = 'zlol0: &l0 "lol"\n' + "".join(
    f"zlol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 8))


def test_alias_bomb_is_refused_in_milliseconds(proj):
    from tfbuild.errors import UserError
    from tfbuild.project import Project

    assert refused(proj, GOOD + ALIAS_BOMB)[0].startswith("error: recipes/m.yaml: line 13: more than 2000 values")
    started = time.perf_counter()
    with pytest.raises(UserError) as raised:
        Project.open(proj.root, read_only=True).load("m", [])
    assert time.perf_counter() - started < 1.0
    assert raised.value.render().startswith(
        "error: recipes/m.yaml: line 13: more than 2000 values once aliases are expanded")


def test_interpolation_bomb_is_refused_before_omegaconf_resolves_it(proj):
    lines = refused(proj, GOOD + "z0: lol\n" + "".join(f"z{i}: '{'${z%d}' % (i - 1) * 9}'\n" for i in range(1, 9)))
    assert lines[0] == "error: recipes/m.yaml: line 13: z4: interpolations expand to more than 2000 values"


def test_what_hydra_still_refuses_is_located_too(proj):
    lines = refused(proj, GOOD + "x: ${nosuch}\n")
    assert lines[0].startswith("error: recipes/m.yaml: line 9: cannot compose recipe: "
                               "Interpolation key 'nosuch' not found")


def test_tags_that_build_objects_are_refused(proj):
    lines = refused(proj, GOOD + "x: !!python/object/apply:os.system [echo hi]\n")
    assert lines[0] == "error: recipes/m.yaml: line 9: the tag !!python/object/apply:os.system is not allowed in a recipe"
    assert lines[1].startswith("  expected: plain values")


def test_deeply_nested_override_is_refused(proj):
    proj.recipe("m", GOOD)
    assert_user_error(proj.run("-n", "+x=" + "[" * 300 + "]" * 300), "bad override", "nesting deeper than 32")


def test_our_own_exceptions_are_not_dressed_up_as_user_errors():
    from tfbuild.recipe import _raised_while_composing

    try:
        {}["not from hydra"]
    except KeyError as err:
        assert not _raised_while_composing(err)


# ---------------------------------------------------------------- input files, before any worker

def test_model_that_is_a_git_lfs_pointer(proj):
    proj.recipe("m", GOOD)
    proj.write("models/m.keras", "version https://git-lfs.github.com/spec/v1\noid sha256:abc\n")
    assert_user_error(proj.run("-n"), "recipes/m.yaml: model.source: not a readable .keras model: "
                                      "a Git LFS pointer", "hint: run `git lfs pull`")


def test_model_that_is_no_keras_archive(proj):
    proj.recipe("m", GOOD)
    keras_like(proj.path("models/m.keras"), members=("model.weights.h5",))
    assert_user_error(proj.run("-n"), "model.source: not a readable .keras model: the archive has no config.json")
    proj.write("models/m.keras", "garbage")
    assert_user_error(proj.run("status"), "model.source: not a readable .keras model: not a zip archive")


def test_h5_model_that_is_not_hdf5(proj):
    proj.recipe("m", GOOD.replace("models/m.keras", "models/m.h5"))
    proj.write("models/m.h5", "<html>404</html>")
    assert_user_error(proj.run("-n"), "recipes/m.yaml: model.source: not a readable .h5 model: not an HDF5 file")


def test_data_that_is_not_a_numpy_archive(proj):
    proj.recipe("m", GOOD)
    proj.write("data/calib.npz", "a,b\n1,2\n")
    assert_user_error(proj.run("-n"), "recipes/m.yaml: data.calibration: cannot read data/calib.npz: "
                                      "not a numpy .npz archive")
    proj.save_arrays("data/calib.npz", features=np.array([{"a": 1}, None], dtype=object))
    assert_user_error(proj.run("-n"), "data.calibration", "array 'features': it holds Python objects")


def test_labels_that_are_not_utf8(proj):
    proj.recipe("m", GOOD + "mobile:\n  labels: data/labels.txt\n  ios: {class_name: M}\n")
    proj.path("data/labels.txt").write_bytes("zero\none\ndeux \u00e9\n".encode("latin-1"))
    assert_user_error(proj.run("-n"), "recipes/m.yaml: mobile.labels: data/labels.txt is not UTF-8 "
                                      "(byte 0xe9 on line 3)")


def test_inputs_of_up_to_date_targets_are_not_read(proj, monkeypatch):
    """A no-op build rereads nothing: only targets about to be converted or rendered are checked."""
    import dataclasses

    from tfbuild import inputs_check
    from tfbuild.api import plans as plan_targets
    from tfbuild.conversion import keras_file
    from tfbuild.project import Project

    proj.recipe("m", GOOD)
    proj.write("models/m.keras", "garbage")
    project = Project.open(proj.root, read_only=True)
    plans = plan_targets(project, [], [])
    opened = []
    monkeypatch.setattr(keras_file, "KIND", dataclasses.replace(keras_file.KIND, check=opened.append))
    inputs_check.check_plans(project, plans)  # action "none": up to date
    assert opened == []
    for plan in plans:
        plan.action = "convert"
    inputs_check.check_plans(project, plans)
    assert opened == [proj.path("models/m.keras")]


def test_hydra_settings_are_not_recipe_keys(proj):
    lines = refused(proj, GOOD + "hydra: {job: {chdir: true}}\n")
    assert lines[0] == "error: recipes/m.yaml: line 9: hydra: unknown key (Hydra would take it for its own settings and drop it)"
    lines = refused(proj, GOOD, "hydra.run.dir=x")
    assert lines[0] == "error: recipes/m.yaml: hydra.run.dir: bad override 'hydra.run.dir=x': not a recipe key (Hydra's own settings)"
    # Pieces merged into Hydra's node: Hydra's own groups are left out of compositions, so its
    # "Multiple values" error no longer catches the first one; both are refused at their entry.
    proj.write("recipes/hydra/job_logging/quiet.yaml", "version: 1\n")
    proj.write("recipes/quant/q.yaml", "quantize: int8\n")
    for entry in ("hydra/job_logging: quiet", "quant@hydra.x: q"):
        lines = refused(proj, f"defaults:\n  - {entry}\n  - _self_\n" + GOOD)
        assert lines[0] == (f"error: recipes/m.yaml: line 2: defaults list entry 1: {entry.split(':')[0]} would "
                            "merge into Hydra's own settings, which composing drops"), lines


def test_paths_the_system_cannot_take_are_refused_at_their_key(proj):
    lines = refused(proj, GOOD.replace("data/calib.npz", "data/" + "x" * 300 + ".npz"))
    assert lines[0].startswith("error: recipes/m.yaml: line 5: data.calibration: a path of at most 1024 bytes, "
                               "names of at most 255")
    lines = refused(proj, GOOD.replace("models/m.keras", '"models/m\\0.keras"'))
    assert lines[0].startswith("error: recipes/m.yaml: line 3: model.source: a path cannot contain a NUL character")


def test_schema_errors_name_the_line_in_the_piece_that_wrote_the_key(proj):
    """A key merged from a defaults-list piece is blamed on the piece's line; a missing key on
    its parent's line; a value an override set on the override, not on a line of the file."""
    proj.write("recipes/quant/strict.yaml", "quantize: int8\naccept:\n  top1_agreement: 0.97\n  min_top: 1\n")
    proj.recipe("m", "defaults:\n  - quant@targets.int8: strict\n  - _self_\n" + GOOD.replace(
        "  int8: {quantize: int8}\n", "  int8: {}\n"))
    assert_user_error(proj.run("-n"), "recipes/quant/strict.yaml: line 4: targets.int8.accept.min_top: unknown key")
    proj.recipe("m", GOOD.replace("  source: models/m.keras\n", "  signature: serving_default\n"))
    assert_user_error(proj.run("-n"), "recipes/m.yaml: line 2: model.source: required key is missing")
    proj.recipe("m", GOOD)
    overridden = proj.run("-n", "targets.fp32.quantize=int4")
    assert_user_error(overridden, "bad override 'targets.fp32.quantize=int4'")
    assert not re.search(r"\bline \d+:", overridden.err.splitlines()[0])
