"""Calibration and evaluation arrays, matched to the model's inputs by name.

Numpy only: workers call it before and after TensorFlow has run, and it must give the same
user errors (file, key, expected names) for every source kind.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from tfbuild.errors import UserError
from tfbuild.registry import load_object

LABEL_KEYS = ("labels", "label", "y")


def label_lines(text: str) -> list[str]:
    """One label per non-empty line, stripped: how the generated loaders read a labels file."""
    return [line.strip() for line in text.splitlines() if line.strip()]


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
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise UserError(f"cannot read {spec}: {err}", file=file, key=key,
                            expected="a numpy .npz/.npy file without pickled objects") from None
    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    for name, value in arrays.items():
        if value.ndim == 0:
            raise UserError(f"array {name or spec!r} is a scalar", file=file, key=key,
                            expected="arrays whose first dimension is the sample")
    return arrays


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


def conform(arrays: dict[str, np.ndarray], specs: list[tuple[str, list, str]], batch: int, *,
            file: str, key: str) -> dict[str, np.ndarray]:
    """Check each array against its input's shape (sample dims) and cast to its dtype, so a
    mismatch is a user error naming the data, not a crash deep inside Keras or LiteRT."""
    out = {}
    for name, shape, dtype in specs:
        value = arrays[name]
        wanted = shape[1:]
        fits = value.ndim == len(shape) and all(d is None or d == v for d, v in zip(wanted, value.shape[1:]))
        if not fits:
            shown = ", ".join("any" if d is None else str(d) for d in wanted)
            raise UserError(f"array {name!r} has samples of shape {list(value.shape[1:])}", file=file,
                            key=key, expected=f"samples of shape [{shown}] for input {name!r}")
        if np.issubdtype(value.dtype, np.floating) != dtype.startswith("float") and dtype != "bool":
            raise UserError(f"array {name!r} is {value.dtype}", file=file, key=key,
                            expected=f"{dtype} values for input {name!r}")
        out[name] = value.astype(dtype, copy=False)
    count = len(next(iter(out.values())))
    if count < batch:
        raise UserError(f"{count} sample(s), fewer than the pinned batch of {batch}", file=file, key=key,
                        expected=f"at least {batch} samples, or a smaller model.batch_size")
    return out


def conform_labels(labels: np.ndarray | None, count: int, *, file: str, key: str) -> np.ndarray | None:
    """The labels as given, one entry per sample: class indices ([n], or [n, frames] for models
    that score every frame) or one-hot rows ([n, classes], [n, frames, classes]). Which it is
    depends on the output they are compared with (verify.label_indices), not on the values."""
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.reshape(len(labels))
    if labels.ndim == 0 or len(labels) < count:
        raise UserError(f"{labels.size if labels.ndim == 0 else len(labels)} labels for {count} samples",
                        file=file, key=key, expected="one label per sample (or one per frame: [samples, frames])")
    return labels[:count]


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


def recipe_arrays(recipe, root: Path, file: str, specs, batch: int, which: str) -> tuple[dict | None, object]:
    """A recipe's calibration or evaluation arrays, matched to the model's inputs and conformed
    to their specs (name, shape, dtype), with their labels; (None, None) when it names none."""
    spec = getattr(recipe.data, which)
    if spec is None:
        return None, None
    key = f"data.{which}"
    arrays = load_arrays(spec, root, file=file, key=key)
    inputs, labels = match_inputs(arrays, [name for name, _, _ in specs], file=file, key=key)
    inputs = conform(take(inputs, getattr(recipe.data, f"{which}_samples")), specs, batch, file=file, key=key)
    count = len(next(iter(inputs.values())))
    return inputs, conform_labels(labels, count, file=file, key=key)


def evaluation_set(recipe, root: Path, file: str, specs, batch: int):
    """(inputs, labels, what they are): the evaluation data, else the calibration data, else
    deterministic random samples, as every report says (`evaluated_on`)."""
    inputs, labels = recipe_arrays(recipe, root, file, specs, batch, "evaluation")
    if inputs is not None:
        return inputs, labels, "evaluation"
    inputs, labels = recipe_arrays(recipe, root, file, specs, batch, "calibration")
    if inputs is not None:
        return inputs, labels, "calibration (no evaluation data)"
    count = max(min(recipe.data.evaluation_samples, 32), batch)
    return generated_samples(specs, count), None, "generated random samples (no data)"
