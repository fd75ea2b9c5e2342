"""Quantization modes: one entry each, and everything the rest of tfbuild asks about a mode.

A mode used to be a string compared in six files. Each question now has one answer here: whether
the mode calibrates (and so needs calibration data and keeps analysis inputs), which I/O types it
can give, its default acceptance thresholds, whether float fallback applies, and the converter
settings that make it. Adding a mode is one `Mode` entry plus its settings function.

No TensorFlow import: a settings function receives the `tensorflow` module from the one module
that imports it (tfbuild.conversion.tf), so recipes, plans and reports can read this registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

IoType = Literal["float32", "int8", "uint8", "int16"]
# TFLiteConverter settings of a mode: (converter, tensorflow module) -> the ops sets it needs.
Settings = Callable[[Any, Any], list[Any]]


@dataclass(frozen=True)
class Mode:
    name: str
    summary: str  # for the recipe schema's description
    settings: Settings
    calibrates: bool = False  # runs calibration data through the model (integer activations)
    io: tuple[IoType, ...] = ("float32",)  # the types its inputs and outputs may have
    thresholds: dict[str, float] = field(default_factory=dict)  # defaults when a recipe sets none
    # Which quantizer turns the calibrated model into the shipped one: the MLIR quantizer, which can
    # keep chosen ops in float (float_fallback), or TensorFlow's older one, which cannot.
    quantizer: Literal["mlir", "legacy"] | None = None

    @property
    def float_fallback(self) -> bool:
        """Whether chosen layers can stay float inside the quantized model."""
        return self.quantizer == "mlir"

    @property
    def integer(self) -> bool:
        """Activations in integers: the report counts the ops left in float, and per-layer errors
        can be measured from the calibrated model."""
        return self.calibrates


def _float32(converter: Any, tf: Any) -> list[Any]:
    return [tf.lite.OpsSet.TFLITE_BUILTINS]


def _float16(converter: Any, tf: Any) -> list[Any]:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return [tf.lite.OpsSet.TFLITE_BUILTINS]


def _dynamic(converter: Any, tf: Any) -> list[Any]:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return [tf.lite.OpsSet.TFLITE_BUILTINS]


def _int8(converter: Any, tf: Any) -> list[Any]:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]


def _int16x8(converter: Any, tf: Any) -> list[Any]:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]


MODES: dict[str, Mode] = {mode.name: mode for mode in (
    Mode("float32", "no quantization", _float32,
         thresholds={"min_cosine": 0.9999, "top1_agreement": 0.99}),
    Mode("float16", "float16 weights", _float16,
         thresholds={"min_cosine": 0.999, "top1_agreement": 0.98}),
    Mode("dynamic", "dynamic-range int8 weights", _dynamic,
         thresholds={"min_cosine": 0.99, "top1_agreement": 0.95}),
    Mode("int8", "full integer, calibrated", _int8, calibrates=True, io=("float32", "int8", "uint8"),
         thresholds={"min_cosine": 0.95, "top1_agreement": 0.9}, quantizer="mlir"),
    Mode("int16x8", "int16 activations, int8 weights, calibrated", _int16x8, calibrates=True,
         io=("float32", "int16"), thresholds={"min_cosine": 0.99, "top1_agreement": 0.95},
         quantizer="legacy"),
)}


def mode(name: str) -> Mode:
    return MODES[name]


def calibrates(name: str | None) -> bool:
    """For readers of reports and recipes, where a mode name may be absent or from elsewhere."""
    return name in MODES and MODES[name].calibrates


def described() -> str:
    return ", ".join(f"{m.name} ({m.summary})" for m in MODES.values())


def io_problem(name: str, io: str) -> str | None:
    """Why a mode cannot give this I/O type (None if it can), naming the modes that can."""
    if io in MODES[name].io:
        return None
    able = [m.name for m in MODES.values() if io in m.io]
    return f"io: {io} needs quantize: {' or '.join(able)} (got quantize: {name})"


def fallback_problem(name: str) -> str | None:
    if MODES[name].float_fallback:
        return None
    able = [m.name for m in MODES.values() if m.float_fallback]
    why = ("; TensorFlow's int16x8 quantizer cannot keep chosen layers in float"
           if MODES[name].quantizer == "legacy" else "")
    return f"float_fallback needs quantize: {' or '.join(able)} (got quantize: {name}){why}"
