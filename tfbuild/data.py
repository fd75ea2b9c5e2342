"""Calibration and evaluation arrays, matched to the model's inputs by name.

Numpy only: workers call it before and after TensorFlow has run, and it must give the same
user errors (file, key, expected names) for every source kind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfbuild.errors import UserError
from tfbuild.registry import load_object

LABEL_KEYS = ("labels", "label", "y")


def load_arrays(spec: str, root: Path, *, file: str, key: str) -> dict[str, np.ndarray]:
    """Arrays from .npz / .npy / `py:module:function` (returning an array or a dict of arrays)."""
    if spec.startswith("py:"):
        produced = load_object(spec[3:], file=file, key=key)()
        arrays = produced if isinstance(produced, dict) else {"": produced}
    else:
        path = root / spec
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as npz:
                    arrays = {name: npz[name] for name in npz.files}
            elif path.suffix == ".npy":
                arrays = {"": np.load(path, allow_pickle=False)}
            else:
                raise UserError(f"unsupported data file {spec!r}", file=file, key=key,
                                expected=".npz, .npy or py:module:function")
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read {spec}: {err}", file=file, key=key,
                            expected="a numpy .npz/.npy file without pickled objects") from None
    return {name: np.asarray(value) for name, value in arrays.items()}


def match_inputs(arrays: dict[str, np.ndarray], input_names: list[str], *, file: str,
                 key: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Split arrays into one per model input (by name) and optional labels."""
    labels = next((arrays[k] for k in LABEL_KEYS if k in arrays), None)
    features = {k: v for k, v in arrays.items() if k not in LABEL_KEYS}
    if list(features) == [""] or (len(input_names) == 1 and len(features) == 1):
        features = {input_names[0]: next(iter(features.values()))}
    missing = [name for name in input_names if name not in features]
    if missing:
        raise UserError(f"no array for input(s) {', '.join(missing)}", file=file, key=key,
                        expected=f"arrays named {', '.join(input_names)} (and optionally 'labels'); "
                                 f"found {', '.join(sorted(features)) or 'none'}")
    matched = {name: features[name] for name in input_names}
    counts = {len(v) for v in matched.values()}
    if len(counts) != 1:
        raise UserError("inputs have different sample counts", file=file, key=key,
                        expected="the same first dimension in every array")
    return matched, labels


def take(arrays: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
    return {name: value[:count] for name, value in arrays.items()}


def generated_samples(specs: list[tuple[str, list[int | None], str]], count: int) -> dict[str, np.ndarray]:
    """Deterministic stand-in inputs when a recipe has no data, said so in the report."""
    rng = np.random.default_rng(0)
    out = {}
    for name, shape, dtype in specs:
        dims = [1 if d is None else d for d in shape[1:]]
        if dtype.startswith("float"):
            out[name] = rng.random((count, *dims), dtype=np.float32).astype(dtype)
        else:
            out[name] = rng.integers(0, 2, size=(count, *dims)).astype(dtype)
    return out
