"""What every model source kind loads into, whatever converts it.

A kind (tfbuild.conversion.sources) loads a model into a `Source`: named input specs with the
batch pinned as the recipe says, named outputs (the recipe's `model.outputs` applied), the
reference the converted files are verified against, and a `Backend` that converts it. The job
(tfbuild.conversion.job) only ever talks to a `Source`, so a kind whose converter is not
TensorFlow's (litert-torch) brings its own backend and changes nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from tfbuild.errors import UserError
from tfbuild.recipe import Recipe, Target

if TYPE_CHECKING:
    import numpy as np

InputSpec = tuple[str, list[Any], str]  # name, shape (None: dynamic), dtype
Arrays = dict[str, "np.ndarray"]


@dataclass
class Calibrated:
    """An integer target calibrated once and quantized as often as asked: calibration (running
    the calibration data through the model) is what a conversion costs, a quantization pass is
    milliseconds, so the float-fallback search tries sets of float layers for little."""
    model: bytes  # float ops carrying calibration statistics: the per-layer reference
    quantize: Callable[..., bytes]  # (ops kept in float, op types kept in float) -> .tflite bytes
    warnings: list[str]


class Backend(Protocol):
    """How a source becomes .tflite bytes for a target (its mode says how: conversion.modes)."""

    def convert(self, source: "Source", target: Target, calibration: Arrays | None,
                target_name: str) -> tuple[bytes, list[str]]:
        """The file, and warnings about how it was made."""
        ...

    def calibrate(self, source: "Source", target: Target, calibration: Arrays | None,
                  target_name: str) -> Calibrated:
        """A calibrating mode's model, calibrated once and quantized as often as asked."""
        ...


@dataclass
class Source:
    """A loaded model, whatever its kind: named inputs (batch pinned as the recipe says), named
    outputs, the reference it is verified against, and the backend that converts it."""
    input_specs: list[InputSpec]
    output_names: list[str]
    reference: Callable[[Arrays], Arrays]
    backend: Backend
    output_kinds: dict[str, str] = field(default_factory=dict)  # scores | values, where known
    notes: list[str] = field(default_factory=list)  # said once in the build output and the report
    warnings: list[str] = field(default_factory=list)  # added to each target converted from it
    keras3_twin: Callable[[], Any] | None = None  # a Keras 2 file as Keras 3 reads it (drift check)

    @property
    def input_names(self) -> list[str]:
        return [name for name, _, _ in self.input_specs]

    @property
    def batch(self) -> int:
        """The pinned batch of the first input (1 where dynamic): the step data is fed in."""
        shape = self.input_specs[0][1]
        return (shape[0] if shape else None) or 1

    def convert(self, target: Target, calibration: Arrays | None, target_name: str) -> tuple[bytes, list[str]]:
        return self.backend.convert(self, target, calibration, target_name)

    def calibrate(self, target: Target, calibration: Arrays | None, target_name: str) -> Calibrated:
        return self.backend.calibrate(self, target, calibration, target_name)


def pin_batch(shape: list, recipe: Recipe, declared: bool) -> list:
    """The recipe's batch size in place of the model's own first dimension (unless the recipe
    declared the whole shape)."""
    if declared or not shape:
        return shape
    return [recipe.model.batch_size, *shape[1:]]


def apply_output_specs(names: list[str], recipe: Recipe, file: str) -> tuple[list[str], dict[str, str]]:
    """The recipe's `model.outputs`: new names (positional list, or a mapping from the names the
    model gives) and the kinds the user declared, by new name."""
    declared = recipe.model.outputs
    if declared is None:
        return names, {}
    if isinstance(declared, list):
        if len(declared) != len(names):
            raise UserError(f"{len(declared)} output(s) named, but the model has {len(names)}: "
                            f"{', '.join(names)}", file=file, key="model.outputs",
                            expected=f"a list of {len(names)} names in the model's output order")
        pairs: list[tuple[str, Any]] = list(zip(names, declared))
    else:
        unknown = [name for name in declared if name not in names]
        if unknown:
            raise UserError(f"the model has no output {unknown[0]!r}", file=file,
                            key=f"model.outputs.{unknown[0]}", expected=f"one of: {', '.join(names)}")
        pairs = [(name, declared.get(name)) for name in names]
    renamed: list[str] = []
    kinds: dict[str, str] = {}
    for original, spec in pairs:
        new = spec if isinstance(spec, str) else (spec.name if spec is not None and spec.name else original)
        renamed.append(new)
        if spec is not None and not isinstance(spec, str) and spec.kind:
            kinds[new] = spec.kind
    if len(set(renamed)) != len(renamed):
        raise UserError(f"output names repeat: {', '.join(renamed)}", file=file, key="model.outputs",
                        expected="a distinct name for every output")
    return renamed, kinds
