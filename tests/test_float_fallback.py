"""float_fallback: the search for the fewest float layers (unit), and int8 models with outlier
activations that fail plain int8 and are rescued, reused and explained (end to end)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from models import write_dense_project, write_outlier_project
from tfbuild import fallback, verify
from tfbuild.html_report import MARKER_R, place_markers


def _unit(name: str, score: float, ops: tuple[str, ...], index: int) -> fallback.Unit:
    return fallback.Unit(name, "FULLY_CONNECTED", score, ops, index)


def _evaluator(needed: set[str], calls: list):
    """A fake quantize-and-check: passes when every op in `needed` is kept in float."""
    def evaluate(layers):
        calls.append(tuple(layers))
        missing = needed - set(layers)
        metrics = {"outputs": {"p": {"top1_agreement": 1.0 - 0.1 * len(missing), "cosine": 1.0}}}
        return fallback.Trial(tuple(layers), b"m" * (10 + len(layers)), metrics,
                              [f"top1_agreement < 0.9 ({len(missing)} missing)"] if missing else [])
    return evaluate


UNITS = [_unit("t1", 0.9, ("a", "b"), 3), _unit("t2", 0.5, ("c", "b"), 1), _unit("t3", 0.4, ("d",), 5),
         _unit("t4", 0.1, ("e", "f"), 0), _unit("t5", 0.05, ("g",), 2)]


def test_search_finds_the_fewest_layers_deterministically_in_few_trials():
    calls: list = []
    result = fallback.search(_evaluator({"a", "d"}, calls), UNITS, limit=8)
    assert result.passed and set(result.chosen.layers) == {"a", "d"}
    assert len(calls) == len(set(map(frozenset, calls)))  # each set is tried once
    assert len(calls) <= 2 + math.ceil(math.log2(len(UNITS))) + 5
    again: list = []
    assert fallback.search(_evaluator({"a", "d"}, again), UNITS, limit=8).chosen.layers == result.chosen.layers
    assert again == calls
    # the fully quantized model passes: nothing kept, one trial
    calls.clear()
    nothing = fallback.search(_evaluator(set(), calls), UNITS, limit=8)
    assert nothing.passed and nothing.chosen.layers == () and calls == [()]


def test_search_starts_from_the_last_set_and_prunes_it():
    calls: list = []
    result = fallback.search(_evaluator({"c"}, calls), UNITS, limit=8, start=("a", "b", "c"))
    assert calls[0] == ("a", "b", "c") and result.chosen.layers == ("c",)


def test_search_within_the_limit_rejects_with_the_best_and_every_set_tried():
    calls: list = []
    result = fallback.search(_evaluator({"a", "d", "g"}, calls), UNITS, limit=3)
    assert not result.passed
    assert [t.layers for t in result.tried] == calls and all(len(layers) <= 3 for layers in calls)
    assert result.chosen.layers == ("a", "b", "c")  # one of the three: the best tried
    assert fallback.chain(UNITS, (), 3) == [(), ("a", "b"), ("a", "b", "c")]  # d would make 4


def test_near_ties_count_as_agreeing_within_one_output_step():
    reference = np.array([[0.50, 0.49, 0.01], [0.9, 0.05, 0.05], [0.2, 0.7, 0.1]], np.float32)
    candidate = np.array([[0.48, 0.51, 0.01], [0.05, 0.9, 0.05], [0.2, 0.7, 0.1]], np.float32)
    coarse = verify.output_metrics(reference, candidate, "scores", step=1 / 64)
    assert coarse["top1_agreement"] == pytest.approx(2 / 3) and coarse["top1_exact"] == pytest.approx(1 / 3)
    assert coarse["near_ties"] == 1 and coarse["tie_tolerance"] == 1 / 64
    fine = verify.output_metrics(reference, candidate, "scores")  # float output: a tiny epsilon
    assert fine["top1_agreement"] == pytest.approx(1 / 3) and fine["near_ties"] == 0


@pytest.mark.parametrize("points", [
    [(100.0, 100.0)] * 6,  # int8 and dynamic on the same spot, and more
    [(100.0 + i, 100.0 + (i % 2)) for i in range(12)],
    [(60.0, 60.0), (470.0, 250.0), (60.5, 60.5), (471.0, 249.0)],  # corners: rings leave the plot
])
def test_markers_never_overlap(points):
    bounds = (57.0, 48.0, 472.0, 243.0)
    spots = place_markers(points, MARKER_R, bounds)
    assert len(spots) == len(points)
    for i, (x1, y1) in enumerate(spots):
        for x2, y2 in spots[i + 1:]:
            assert math.hypot(x1 - x2, y1 - y2) >= 2 * MARKER_R
    assert spots[0] == points[0]  # the first point keeps its place
    assert place_markers(points, MARKER_R, bounds) == spots


def _report(project, target: str, rejected: bool = False) -> dict:
    where = f".tfbuild/rejected/spiky/{target}" if rejected else f"build/spiky/{target}"
    return json.loads(project.path(f"{where}/report.json").read_text())


@pytest.mark.slow
def test_auto_rescues_outlier_activations_records_the_set_and_reuses_it(project):
    write_outlier_project(project, targets="""\
fp32: {}
int8: {quantize: int8, io: uint8}
auto: {quantize: int8, io: uint8, float_fallback: auto}
named: {quantize: int8, float_fallback: [outlier1]}""")
    first = project.run("-k")
    assert first.code == 1, first.text  # plain int8 is rejected
    assert "rejected spiky:int8" in first.out and "built spiky:auto" in first.out, first.text
    assert "built spiky:named" in first.out, first.text
    plain = _report(project, "int8", rejected=True)
    assert plain["metrics"]["outputs"]["probs"]["top1_agreement"] < 0.5  # far below 0.9
    assert plain["float_fallback"] == {"mode": "none", "layers": []}
    rows = plain["layer_errors"]
    assert {"tensor", "op", "rmse_scale", "error", "local_error", "cost"} <= set(rows[0])
    worst = max(rows, key=lambda r: r["cost"])
    assert worst["local_error"] > 0.5 and worst["rmse_scale"] < 0.5  # outliers: within half a step

    auto = _report(project, "auto")
    chosen = auto["float_fallback"]
    assert auto["verdict"] == "passed" and chosen["search"] == "searched" and chosen["passed"]
    assert 1 <= len(chosen["layers"]) <= 3 and len(chosen["tried"]) == chosen["trials"] <= 12
    assert auto["size_bytes"] <= 0.6 * _report(project, "fp32")["size_bytes"]
    assert {r["tensor"] for r in auto["layer_errors"] if r["kept_float"]} == set(chosen["layers"])
    assert "kept in float" in first.out
    lock = json.loads(project.path("tfbuild.lock").read_text())["targets"]
    assert lock["spiky:auto"]["float_fallback"] == {"layers": chosen["layers"], "search_key": chosen["search_key"]}
    assert "float_fallback" not in lock["spiky:fp32"]
    assert lock["spiky:auto"]["summary"]["float_layers"] == chosen["layers"]  # what tfbuild diff compares
    assert lock["spiky:named"]["summary"]["float_layers"] == _report(project, "named")["float_fallback"]["layers"]
    assert _report(project, "named")["float_fallback"]["mode"] == "list"

    explained = project.run("explain", "spiky:auto", "spiky:int8")
    assert "search: searched; kept in float: #" in explained.out, explained.out
    assert "spiky:int8 was rejected" in explained.out and "worst layers" in explained.out
    assert worst["tensor"] in explained.out

    # same key, the conversion runs again (its output was deleted): the set is reused, not searched
    model = project.path("build/spiky/auto/model.tflite")
    before = model.read_bytes()
    model.unlink()
    again = project.run("spiky:auto")
    assert again.code == 0, again.text
    reused = _report(project, "auto")["float_fallback"]
    assert reused["search"] == "reused" and reused["trials"] == 0 and reused["layers"] == chosen["layers"]
    assert model.read_bytes() == before

    # a key change searches again, starting from the last set
    changed = project.run("spiky:auto", "targets.auto.accept.min_cosine=0.96")
    assert changed.code == 0, changed.text
    resumed = _report(project, "auto")["float_fallback"]
    assert resumed["search"] == "resumed" and resumed["tried"][0] == chosen["layers"]

    page = project.run("report")
    assert page.code == 0, page.text
    text = project.path("build/report.html").read_text()
    assert "class='worst'" in text and 'class="layers"' in text and 'class="reference"' in text
    assert text.count('<g class="marker">') == 4 and "near-ties" in text


@pytest.mark.slow
def test_auto_that_cannot_be_rescued_within_max_float_layers_is_rejected_with_what_it_tried(project):
    write_outlier_project(project, outliers=3,
                          targets="auto: {quantize: int8, float_fallback: auto, max_float_layers: 3}")
    result = project.run()
    assert result.code == 1, result.text
    assert "rejected spiky:auto" in result.out and "no set of at most 3 float layer(s) passes" in result.out
    report = _report(project, "auto", rejected=True)
    chosen = report["float_fallback"]
    assert not chosen["passed"] and len(chosen["tried"]) >= 2
    assert all(len(layers) <= 3 for layers in chosen["tried"]) and chosen["layers"] in chosen["tried"]
    lock = json.loads(project.path("tfbuild.lock").read_text()) if project.path("tfbuild.lock").exists() else {}
    assert "spiky:auto" not in lock.get("targets", {})
    explained = project.run("explain", "spiky:auto")
    assert "none passed" in explained.out and "worst layers" in explained.out, explained.out


@pytest.mark.slow
def test_a_name_the_model_does_not_have_is_a_user_error(project):
    from conftest import assert_user_error

    write_outlier_project(project, targets="named: {quantize: int8, float_fallback: [no_such_layer]}")
    assert_user_error(project.run(), "no layer, tensor or op type 'no_such_layer'", "FULLY_CONNECTED")


def test_float_fallback_needs_int8():
    from tfbuild.recipe import Target

    with pytest.raises(ValueError, match="float_fallback needs quantize: int8"):
        Target(quantize="int16x8", float_fallback="auto")
    assert Target(quantize="int8", float_fallback=["CONV_2D"]).max_float_layers == 8


@pytest.mark.slow
def test_a_passing_int8_target_measures_its_layers_only_on_request(project):
    """Per-layer figures cost most of a conversion on long activations and a passing target does
    not need them: the build skips them, `explain` measures them from what the build kept under
    .tfbuild/analysis (LiteRT only) and caches them under the target's key."""
    write_dense_project(project, targets="int8: {quantize: int8, io: uint8}\nauto: {quantize: int8, float_fallback: auto}")
    built = project.run()
    assert built.code == 0, built.text
    for target in ("int8", "auto"):
        report = json.loads(project.path(f"build/clf/{target}/report.json").read_text())
        assert report["verdict"] == "passed" and "layer_errors" not in report, target
    assert json.loads(project.path("build/clf/auto/report.json").read_text())["float_fallback"]["search"] == "not needed"
    cached = project.path(".tfbuild/analysis/clf/int8/layer_errors.json")
    assert not cached.exists()
    explained = project.run("explain", "clf:int8")
    assert explained.code == 0 and "worst layers of the fully quantized model" in explained.out, explained.text
    assert "FULLY_CONNECTED" in explained.out and cached.is_file()
    rows = json.loads(cached.read_text())
    cached.write_text(json.dumps([{**row, "op": "FROM_THE_CACHE"} for row in rows]))
    assert "FROM_THE_CACHE" in project.run("explain", "clf:int8").out  # asked twice: not measured again
    assert not list(project.path("build").rglob("calibrated.tflite"))  # never shipped
    pulled = project.path(".tfbuild/analysis/clf/auto")
    shutil.rmtree(pulled)  # as for a target pulled from a shared cache
    assert "not measured (the target passed)" in project.run("explain", "clf:auto").out


@pytest.mark.slow
def test_an_int8_target_that_is_not_integer_only_says_so_and_max_float_ops_rejects_it(project):
    """ELU has no int8 kernel the quantizer uses: it and the CONCATENATION that reads it stay in
    float behind DEQUANTIZE/QUANTIZE, and the file still says int8."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((16,), name="features")
    h = keras.layers.Dense(24, activation="elu")(x)
    joined = keras.layers.Concatenate()([keras.layers.Dense(12, activation="elu")(h), keras.layers.Dense(12)(h)])
    keras.Model(x, keras.layers.Dense(4, activation="softmax")(joined)).save(project.path("models/clf.keras"))
    project.save_arrays("data/clf.npz", features=np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32))
    project.recipe("clf", """\
        tfbuild: 1
        model: {source: models/clf.keras}
        data: {calibration: data/clf.npz, evaluation: data/clf.npz}
        targets:
          int8: {quantize: int8, io: int8}
          strict: {quantize: int8, io: int8, accept: {max_float_ops: 0}}
        """)
    result = project.run("-k")
    assert result.code == 1 and "built clf:int8" in result.out and "rejected clf:strict" in result.out, result.text
    assert "float_ops 3 > 0 (by 3): ELU x2, CONCATENATION" in result.out
    assert "3 op(s) still compute in float (ELU x2, CONCATENATION)" in result.out and "float ops 3" in result.out
    report = json.loads(project.path("build/clf/int8/report.json").read_text())
    assert report["float_ops"]["by_type"] == {"ELU": 2, "CONCATENATION": 1}
    assert "3 op(s) compute in float: ELU x2, CONCATENATION" in project.run("explain", "clf:int8").out
