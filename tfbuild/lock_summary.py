"""What the lock keeps of a target's verdict: the figures a reviewer compares (`tfbuild diff`).

A target's report.json holds everything measured, but also what differs on every run or
machine (timings, latency) and far more than a review needs (layer errors, golden vectors).
The lock keeps a small summary of it instead: the size, the metrics its thresholds can check
(per output), the ops left in float in an integer target, the layers `float_fallback` kept in
float, how many warnings it carries, and the verdict. Everything in it is a function of the
shipped file and the evaluation data, so it changes only when the target is rebuilt; floats are
rounded to `DIGITS` significant digits, which hides the last-bit noise of another machine's
LiteRT kernels but keeps a cosine of 0.99998 apart from one of 0.99996. Latency is left out:
it belongs to the machine that measured it, and a lock that changed with it would churn on
every rebuild.

Non-finite figures (an SNR of a file that reproduces its source exactly is infinite) are kept
as the strings "inf", "-inf" and "nan", since JSON has no numbers for them.
"""

from __future__ import annotations

import math

from tfbuild.jsonfile import ListOf, MapOf

DIGITS = 6  # significant digits a figure keeps in the lock
OUTPUT_FIGURES = ("top1_agreement", "max_abs_error", "mean_abs_error", "cosine", "snr_db")
NUMBER = (int, float, str)  # str: "inf", "-inf", "nan"
SHAPE = {"verdict": str, "size_bytes": int, "outputs?": MapOf(MapOf(NUMBER)), "accuracy?": NUMBER,
         "accuracy_drop?": NUMBER, "float_ops?": int, "float_layers?": ListOf(str), "warnings?": int}


def summarize(report: dict | None) -> dict | None:
    """The lock's summary of a target's report.json (None without a report to take it from).
    Keys are only present when the target measures them: an output's top-1 agreement only for
    class scores, accuracy only with labels, float ops only for integer targets."""
    if not isinstance(report, dict) or not isinstance(report.get("size_bytes"), int):
        return None
    summary: dict = {"verdict": str(report.get("verdict", "passed")), "size_bytes": report["size_bytes"]}
    metrics = report.get("metrics") or {}
    outputs = {name: {key: rounded(values[key]) for key in OUTPUT_FIGURES if values.get(key) is not None}
               for name, values in sorted((metrics.get("outputs") or {}).items())}
    if outputs:
        summary["outputs"] = outputs
    accuracy = metrics.get("accuracy")
    if accuracy:
        summary["accuracy"] = rounded(accuracy["tflite"])
        summary["accuracy_drop"] = rounded(accuracy["source"] - accuracy["tflite"])
    if isinstance(report.get("float_ops"), dict):
        summary["float_ops"] = int(report["float_ops"]["count"])
    kept = (report.get("float_fallback") or {}).get("layers")
    if kept:
        summary["float_layers"] = [str(layer) for layer in kept]
    if report.get("warnings"):
        summary["warnings"] = len(report["warnings"])
    return summary


def rounded(value) -> float | str:
    """A figure as the lock keeps it: DIGITS significant digits, or the name of a non-finite one."""
    value = float(value)
    return float(f"{value:.{DIGITS}g}") if math.isfinite(value) else str(value)  # "inf", "-inf", "nan"


def number(value) -> float | None:
    """A figure read back from a lock, as a float (None for anything that is not one)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if value in ("inf", "-inf", "nan"):
        return float(value)
    return None
