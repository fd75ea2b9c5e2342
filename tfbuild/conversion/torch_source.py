"""Source kinds for PyTorch: `py:package.module:function` returning a `torch.nn.Module` (the
recipe says `model.framework: torch`, so planning knows without importing it), and a saved
`torch.export` program (`.pt2`).

Loading, naming and converting live in tfbuild.torch_models (litert-torch for the float file,
ai-edge-quantizer for every quantized mode); this module fits them to the seams: a `Source` whose
`TorchBackend` converts a target, or calibrates an integer one once and quantizes it as often as
the float fallback asks. Nothing here imports torch at planning: the kinds' `matches` and `check`
read the recipe and the file's first bytes, and their `tools` put torch's, litert-torch's,
ai-edge-quantizer's and litert-converter's versions (not TensorFlow's) into torch targets' keys.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tfbuild.conversion import modes
from tfbuild.conversion.kind import TORCH_TOOLS, Kind
from tfbuild.conversion.source import Arrays, Calibrated, Source, apply_output_specs
from tfbuild.errors import ConversionFailed, UserError
from tfbuild.jobs import enter_stage
from tfbuild.recipe import Target

if TYPE_CHECKING:
    from tfbuild.recipe import ModelSection, Recipe
    from tfbuild.torch_models import TorchModel


def _is_factory(model: "ModelSection", path: Path | None) -> bool:
    return model.source.startswith("py:") and model.torch


def _is_program(model: "ModelSection", path: Path | None) -> bool:
    """A .pt2 file, or any file the recipe says is torch (loading then says what is wrong)."""
    return path is not None and model.torch


def _check_program(path: Path) -> str | None:
    if not path.is_file():
        return "a .pt2 source is a file (torch.export.save writes a zip archive)"
    if not zipfile.is_zipfile(path):
        return "not a torch.export program (.pt2 files are zip archives written by torch.export.save)"
    return None


def _load(recipe: "Recipe", root: Path, file: str) -> Source:
    from tfbuild.torch_models import load_torch_model

    model = recipe.model
    if not model.source.startswith("py:"):
        problem = _check_program(root / model.source) if (root / model.source).exists() else None
        if problem:
            raise UserError(problem, file=file, key="model.source")

    def rename(names: list[str]) -> tuple[list[str], dict[str, str]]:
        return apply_output_specs(names, recipe, file)

    loaded = load_torch_model(model.source, root, file=file, trust_code=model.trust_code,
                              inputs=model.inputs, batch_size=model.batch_size, rename=rename,
                              channel_last=model.channel_last)
    backend = TorchBackend(loaded, recipe.data.calibration_samples)
    return Source(loaded.input_specs, loaded.output_names, _in_steps(loaded), backend,
                  output_kinds=loaded.output_kinds, notes=list(loaded.notes))


def _in_steps(loaded: "TorchModel") -> Callable[[Arrays], Arrays]:
    """The reference run in steps of the pinned batch: a saved torch.export program guards its
    exported batch size, and the .tflite is verified batch by batch anyway."""
    import numpy as np

    shape = loaded.input_specs[0][1] if loaded.input_specs else []
    step = shape[0] if shape and shape[0] is not None else None

    def reference(inputs: Arrays) -> Arrays:
        count = len(next(iter(inputs.values())))
        if step is None or count <= step:
            return loaded.reference(inputs)
        parts = [loaded.reference({name: value[start:start + step] for name, value in inputs.items()})
                 for start in range(0, count - count % step, step)]
        return {name: np.concatenate([part[name] for part in parts]) for name in loaded.output_names}
    return reference


KIND = Kind("torch-factory", "py:package.module:function with model.framework: torch",
            _is_factory, _load, python=True, tools=TORCH_TOOLS)
PROGRAM_KIND = Kind("torch-program", "a .pt2 file (torch.export.save)", _is_program, _load,
                    check=_check_program, tools=TORCH_TOOLS)


def _refuse(target: Target, target_name: str) -> None:
    """What litert-torch and ai-edge-quantizer cannot make, said before any work."""
    from tfbuild.torch_models import IO_TYPES, MODES

    if target.quantize != "float32" and target.quantize not in MODES:
        raise ConversionFailed(f"quantize: {target.quantize} has no ai-edge-quantizer recipe for PyTorch "
                               f"sources (expected one of float32, {', '.join(MODES)}): set "
                               f"targets.{target_name}.quantize to one of those")
    if target.select_tf_ops:
        raise ConversionFailed(f"select_tf_ops has no meaning for a PyTorch source (litert-torch writes "
                               f"builtin LiteRT ops only): remove targets.{target_name}.select_tf_ops")
    if target.io != "float32" and target.io not in IO_TYPES.get(target.quantize, ()):
        raise ConversionFailed(f"io: {target.io} is not possible with quantize: {target.quantize} for a "
                               f"PyTorch source (set targets.{target_name}.io to float32)")


@dataclass
class TorchBackend:
    """A loaded torch model converted by litert-torch (the float file, once per recipe) and
    quantized by ai-edge-quantizer (per target)."""
    model: "TorchModel"
    samples: int = 200  # data.calibration_samples

    def convert(self, source: Source, target: Target, calibration: Arrays | None,
                target_name: str) -> tuple[bytes, list[str]]:
        _refuse(target, target_name)
        if modes.mode(target.quantize).calibrates:
            calibrated = self.calibrate(source, target, calibration, target_name)
            return calibrated.quantize(), calibrated.warnings
        enter_stage("converting with litert-torch" if target.quantize == "float32"
                    else "converting with litert-torch and quantizing with ai-edge-quantizer")
        return self.model.convert(target.quantize, target.io, calibration, samples=self.samples), list(source.warnings)

    def calibrate(self, source: Source, target: Target, calibration: Arrays | None,
                  target_name: str) -> Calibrated:
        """The float file and its calibration statistics (every tensor's), computed once; each
        quantization reuses them, whichever layers it keeps in float."""
        from tfbuild.torch_models import calibrate_model, calibration_batches, quantize_model

        _refuse(target, target_name)
        enter_stage("converting with litert-torch")
        float_bytes = self.model.float_file(calibration)
        enter_stage("calibrating with ai-edge-quantizer")
        batches = calibration_batches(calibration, self.model.input_specs, self.samples) if calibration else None
        statistics = calibrate_model(float_bytes, target.quantize, target.io, batches)

        def quantize(nodes: Any = (), op_types: Any = ()) -> bytes:
            return quantize_model(float_bytes, target.quantize, target.io, keep_float=[*op_types, *nodes],
                                  statistics=statistics)
        return Calibrated(float_bytes, quantize, list(source.warnings))
