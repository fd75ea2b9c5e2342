"""One job in a worker: a recipe's model loaded once, each selected target converted from it,
verified in LiteRT and staged, each reported (tfbuild.jobs events) as it finishes.

Whatever the source kind, the job sees a `Source` (conversion.source) and asks the target's mode
(conversion.modes) what to do: calibrating modes are calibrated once and handed to the float
fallback; the others are converted once.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Callable

from tfbuild import data as data_mod
from tfbuild import fallback, jobs, layer_error, metadata, verify
from tfbuild.conversion import modes, sources
from tfbuild.conversion.keras_file import keras3_drift
from tfbuild.conversion.source import Calibrated, Source
from tfbuild.errors import ConversionFailed, UserError, describe_exception, machine_fault
from tfbuild.fingerprint import sha256_bytes
from tfbuild.jobs import STAGE, Event, JobSpec, TargetResult, TargetSpec, enter_stage
from tfbuild.recipe import Recipe


def _data(recipe: Recipe, root: Path, file: str, source: Source, which: str) -> tuple[dict | None, object]:
    return data_mod.recipe_arrays(recipe, root, file, source.input_specs, source.batch, which)


def _evaluation_set(recipe: Recipe, root: Path, file: str, source: Source):
    return data_mod.evaluation_set(recipe, root, file, source.input_specs, source.batch)


def _labels_count(recipe: Recipe, root: Path) -> int | None:
    if recipe.mobile is None or recipe.mobile.labels is None:
        return None
    try:
        text = (root / recipe.mobile.labels).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return len(data_mod.label_lines(text))


def run_job(job: JobSpec, emit: Callable[[Event], None]) -> None:
    """Convert, verify and stage every target of one recipe; report each as it finishes."""
    recipe = Recipe.model_validate(job["recipe"])
    root, file = Path(job["root"]), job["file"]
    started = time.perf_counter()

    def phase(target: str | None, what: str) -> None:
        enter_stage(what)
        emit(jobs.phase(target, what))

    phase(None, "loading the model")
    source = sources.load(recipe, root, file)
    for said in source.notes:
        emit(jobs.note(said))
    enter_stage("reading the data")
    calibration, _ = _data(recipe, root, file, source, "calibration")
    eval_inputs, labels, eval_from = _evaluation_set(recipe, root, file, source)
    loaded = time.perf_counter()
    phase(None, "running the source model on the evaluation data")
    verify.load_runtime()
    imported = time.perf_counter()
    reference = source.reference(eval_inputs)
    kinds = verify.output_kinds(reference, source.output_kinds, _labels_count(recipe, root))
    if source.keras3_twin is not None:
        phase(None, "comparing with Keras 3's reading of the file")
        note = keras3_drift(source, eval_inputs, reference, kinds)
        source.notes.append(note)
        emit(jobs.note(note))
    shared = {"load_s": round(loaded - started, 3), "runtime_import_s": round(imported - loaded, 3),
              "reference_s": round(time.perf_counter() - imported, 3)}
    described = {item["name"]: metadata.prepare(recipe, item["recipe"], item["name"], source.input_specs,
                                                reference, kinds, root, file)
                 for item in job["targets"]}  # a metadata mistake stops the job before any conversion
    for item in job["targets"]:
        emit(jobs.started(item["name"]))
        began = time.perf_counter()
        try:
            result = _build_target(recipe, item, source, calibration, (eval_inputs, labels, eval_from),
                                   reference, kinds, shared, phase, (root, file), described[item["name"]])
            emit(jobs.done(item["name"], result, time.perf_counter() - began))
        except ConversionFailed as err:
            emit(jobs.failed(item["name"], f"while {STAGE['now']}: {err}", time.perf_counter() - began))
        except UserError:
            raise
        except Exception as err:  # a bug, or TensorFlow failing on this model: this target only
            fault = machine_fault(err, root, item["stage"])
            if fault is not None:  # a full disk or a read-only folder: not the converter's crash
                emit(jobs.failed(item["name"], f"while {STAGE['now']}: {fault}", time.perf_counter() - began,
                                 machine_fault=True))
                continue
            traceback.print_exc()
            emit(jobs.crashed(STAGE["now"], describe_exception(err), target=item["name"]))


def _build_target(recipe: Recipe, item: TargetSpec, source: Source, calibration, evaluation: tuple,
                  reference, kinds: dict[str, str], shared_timings: dict, phase: Callable,
                  where: tuple[Path, str] = (Path("."), ""), described: metadata.Prepared | None = None) -> TargetResult:
    """Convert, verify and stage one target. Shared timings (model load, source-model run on the
    evaluation data) are paid once per recipe and reported with every target. Integer targets are
    calibrated once, measured layer by layer, and given their float fallback (fallback.apply).
    TFLite metadata is written before the file is staged and verified: what ships is what passed."""
    target = recipe.targets[item["name"]]
    eval_inputs, labels, eval_from = evaluation
    thresholds, user_set = verify.effective_thresholds(
        target.quantize, recipe.accept.model_dump() if recipe.accept else None,
        target.accept.model_dump() if target.accept else None)
    started = time.perf_counter()
    timings: dict = {}
    extra: dict = {}
    fallback_failures: list[str] = []
    mode = modes.mode(target.quantize)
    if mode.calibrates:
        calibrated = source.calibrate(target, calibration, item["name"])
        conversion_warnings = calibrated.warnings
        timings["convert_s"] = time.perf_counter() - started
        phase(item["name"], "quantizing" if target.float_fallback != "auto" else "choosing float layers")

        def check(candidate: bytes) -> tuple[dict, list[str]]:
            metrics, _, _ = verify.measure(candidate, verify.signature(candidate), eval_inputs, labels,
                                           reference, source.batch, kinds)
            metrics["float_ops"] = layer_error.float_ops(candidate)
            return metrics, verify.judge(metrics, thresholds, len(candidate) / 1024, None)
        context = fallback.Context(where[1], item["recipe"], recipe, item["name"], item["key"],
                                   item["float_fallback_before"])
        model_bytes, extra, fallback_failures = fallback.apply(calibrated, check, eval_inputs, source.batch,
                                                               context)
        timings["layers_and_fallback_s"] = time.perf_counter() - started - timings["convert_s"]
    else:
        model_bytes, conversion_warnings = source.convert(target, calibration, item["name"])
        timings["convert_s"] = time.perf_counter() - started
    model_bytes, metadata_report, metadata_warnings = metadata.embed(model_bytes, described)
    enter_stage("writing the outputs")
    stage = Path(item["stage"])
    stage.mkdir(parents=True, exist_ok=True)
    (stage / target.output).write_bytes(model_bytes)
    phase(item["name"], "verifying in LiteRT")
    verify_started = time.perf_counter()
    golden_count = recipe.mobile.golden_samples if recipe.mobile else 3
    report = verify_model(model_bytes, eval_inputs, labels, reference, thresholds, user_set,
                          batch=source.batch, golden_count=golden_count, kinds=kinds,
                          integer=mode.integer)
    report.update({
        "recipe": item["recipe"], "target": item["name"], "quantize": target.quantize, "io": target.io,
        "select_tf_ops": target.select_tf_ops, "evaluated_on": eval_from, "versions": item["versions"],
        "model_file": target.output, "model_sha256": sha256_bytes(model_bytes),
        "size_bytes": len(model_bytes), "thresholds": thresholds, "output_kinds": kinds,
        "notes": source.notes, **extra,
    })
    if metadata_report is not None:
        report["metadata"] = metadata_report
        conversion_warnings = conversion_warnings + metadata_warnings
    if "float_fallback" in extra:
        if report["float_fallback"]["mode"] == "auto":  # what the state and the lock may record
            report["float_fallback"]["passed"] = report["verdict"] == "passed" and not fallback_failures
        kept = fallback.describe(report["float_fallback"], report.get("layer_errors") or [])
        if kept and not fallback_failures:
            conversion_warnings = conversion_warnings + [kept]
    if fallback_failures:
        report["verdict"] = "rejected"
        report["failures"] = report["failures"] + fallback_failures
    report["warnings"] = conversion_warnings + report["warnings"]
    timings["verify_s"] = time.perf_counter() - verify_started
    private: list[str] = []
    if mode.calibrates:
        private = _analysis_inputs(stage, calibrated, report)
        if report["verdict"] == "rejected" and "layer_errors" not in report:  # the diagnosis it needs
            phase(item["name"], "measuring per-layer errors")
            layers_started = time.perf_counter()
            report["layer_errors"] = fallback.layer_rows(calibrated.model, calibrated.quantize(), eval_inputs,
                                                         source.batch, report["float_fallback"]["layers"])
            timings["layers_s"] = time.perf_counter() - layers_started
    report["timings"] = {**{k: round(v, 3) for k, v in timings.items()}, **shared_timings}
    golden = report.pop("golden", None)
    files = [target.output, "report.json"]
    (stage / "report.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    if golden is not None:
        (stage / "golden.json").write_text(json.dumps(golden) + "\n")
        files.append("golden.json")
    return {"files": files, "verdict": report["verdict"], "failures": report["failures"],
            "warnings": report["warnings"], "timings": report["timings"], "private": private}


def _analysis_inputs(stage: Path, calibrated: Calibrated, report: dict) -> list[str]:
    """What per-layer figures measured later need, written beside the outputs for the parent to
    keep under .tfbuild/ (never shipped): the calibrated float model, and the fully quantized one
    when the shipped file keeps layers in float."""
    from tfbuild.analysis import CALIBRATED, FULLY_QUANTIZED

    (stage / CALIBRATED).write_bytes(calibrated.model)
    if not report["float_fallback"]["layers"]:
        return [CALIBRATED]
    (stage / FULLY_QUANTIZED).write_bytes(calibrated.quantize())
    return [CALIBRATED, FULLY_QUANTIZED]


def verify_model(model_bytes: bytes, eval_inputs, labels, reference, thresholds: dict,
                 user_set: bool, batch: int, golden_count: int = 3, kinds: dict | None = None,
                 integer: bool = False) -> dict:
    """Report dict with verdict passed / rejected / unverified, and its failures and warnings.
    An integer target also says which of its ops still compute in float (`float_ops`)."""
    size_kb = len(model_bytes) / 1024
    warnings: list[str] = []
    signature = verify.signature(model_bytes)
    if integer:
        found = layer_error.float_ops(model_bytes)
        warnings += _float_ops_warning(found)
    if verify.uses_flex(signature):
        warnings.append("uses select TF ops: the app needs the Flex runtime "
                        "(org.tensorflow:tensorflow-lite-select-tf-ops / TensorFlowLiteSelectTfOps)")
        failures = verify.judge({}, thresholds, size_kb, None)
        if user_set and not thresholds.get("waive"):
            failures.append("not verified: Flex ops cannot run in the local LiteRT interpreter; "
                            "set accept.waive: '<reason>' to accept this target unverified")
        verdict = "rejected" if failures else "unverified"
        if thresholds.get("waive"):
            warnings.append(f"verification waived: {thresholds['waive']}")
        return {"verdict": verdict, "failures": failures, "warnings": warnings, "metrics": {},
                "latency_ms": None, "signature": signature, "uses_flex": True, "golden": None}
    metrics, raw_in, raw_out = verify.measure(model_bytes, signature, eval_inputs, labels, reference, batch, kinds)
    if integer:
        metrics["float_ops"] = found
    used = metrics["samples"]
    latency = verify.median_latency_ms(model_bytes, signature, eval_inputs, int(thresholds["latency_runs"]),
                                       int(thresholds["latency_threads"]))
    failures = verify.judge(metrics, thresholds, size_kb, latency)
    golden_count = min(golden_count, used)
    golden = {"count": golden_count,
              "inputs": {k: v[:golden_count].tolist() for k, v in raw_in.items()},
              "outputs": {k: v[:golden_count].tolist() for k, v in raw_out.items()}}
    return {"verdict": "rejected" if failures else "passed", "failures": failures, "warnings": warnings,
            "metrics": metrics, "latency_ms": round(latency, 4), "signature": signature,
            "uses_flex": False, "golden": golden, **({"float_ops": found} if integer else {})}


def _float_ops_warning(found: dict) -> list[str]:
    if not found["count"]:
        return []
    return [f"{found['count']} op(s) still compute in float ({verify.float_op_types(found)}): an int8-only NPU, DSP, Edge TPU "
            "or microcontroller runs them on the CPU or refuses the model; accept.max_float_ops: 0 "
            "makes that a failure"]
