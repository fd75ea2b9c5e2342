"""Keras 2 model files keep their Keras 2 meaning.

Keras 3 reads many files Keras 2 wrote, but not always as Keras 2 computed them: it redefined
`hard_sigmoid` (Keras 2: clip(0.2 x + 0.5, 0, 1); Keras 3: relu6(x + 3) / 6, i.e. clip(x / 6 +
0.5, 0, 1)), the default recurrent activation of Keras 2.0-2.2's LSTM and GRU. A GRU model read
that way loads without a word and computes something else, and a build that verifies the .tflite
against it passes. So a file written by Keras 2 is read by Keras 2 itself, tf-keras, when it is
installed (`tfbuild[keras2]`); without it, a file whose config uses a redefined function stops
the build with that fix, and any other Keras 2 file is read by Keras 3 with a note.

No TensorFlow here: the planner asks which files were written by Keras 2 (so that tf-keras's
version enters their keys, and only theirs), reading a few bytes of metadata, remembered by the
digest cache while the file's stat is unchanged.
"""

from __future__ import annotations

import json
import re
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

EXTRA = "keras2"
DISTRIBUTION = "tf-keras"
INSTALL = f"pip install 'tfbuild[{EXTRA}]'"

# Functions Keras 3 computes differently under the same name (checked against tf-keras by
# tests/test_keras2.py, which sweeps the activations and layers both can load).
REDEFINED = {
    "hard_sigmoid": "Keras 2 computes clip(0.2*x + 0.5, 0, 1), Keras 3 relu6(x + 3) / 6",
}
ACTIVATION_KEYS = ("activation", "recurrent_activation")


def writer_version(path: Path) -> str | None:
    """The Keras version that wrote a .h5/.hdf5/.keras file, as the file records it."""
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                return str(json.loads(archive.read("metadata.json")).get("keras_version") or "") or None
        import h5py

        with h5py.File(path, "r") as handle:
            found = handle.attrs.get("keras_version")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, UnicodeDecodeError):
        return None
    return (found.decode() if isinstance(found, bytes) else str(found)) if found is not None else None


def is_keras2(writer: str | None) -> bool:
    """Keras 1 and 2 (tf.keras included) wrote `keras_version` 1.x / 2.x; Keras 3 writes 3.x."""
    return bool(writer) and re.match(r"^[12]\.", writer) is not None


def model_file(root: Path, spec: str) -> Path | None:
    """The Keras file a model source names, or None for SavedModels and py: factories."""
    if spec.startswith("py:"):
        return None
    path = root / spec
    return path if path.suffix in (".keras", ".h5", ".hdf5") else None


def tool_version() -> str | None:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return None


def key_versions(root: Path, spec: str, digests, installed: str | None) -> dict[str, str]:
    """What a Keras 2 file adds to its targets' keys: which Keras reads it (`installed`, tf-keras's
    version, or `missing` when Keras 3 reads it instead). Other sources add nothing."""
    path = model_file(root, spec)
    if path is None or not path.is_file():
        return {}
    writer = digests.derived(path, "keras-writer", lambda: writer_version(path))
    if not is_keras2(writer):
        return {}
    return {f"version:{DISTRIBUTION}": installed or "missing"}


def meaning_changes(config_text: str) -> list[str]:
    """Where a Keras 2 config uses a function Keras 3 redefined: `layer 'gru' (GRU)
    recurrent_activation: hard_sigmoid`, one entry per use."""
    try:
        config = json.loads(config_text)
    except ValueError:
        return []
    found: list[str] = []
    _walk(config, found)
    return found


def _walk(node, found: list[str], layer: str = "?", kind: str = "?") -> None:
    if isinstance(node, list):
        for item in node:
            _walk(item, found, layer, kind)
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("class_name"), str) and isinstance(node.get("config"), dict):
        kind = node["class_name"]
        layer = str(node["config"].get("name") or node.get("name") or kind)
    for key, value in node.items():
        if key in ACTIVATION_KEYS and isinstance(value, str) and value in REDEFINED:
            found.append(f"layer {layer!r} ({kind}) {key}: {value}")
        elif key in ACTIVATION_KEYS and isinstance(value, dict) and value.get("config") in REDEFINED:
            found.append(f"layer {layer!r} ({kind}) {key}: {value['config']}")
        else:
            _walk(value, found, layer, kind)


def unused_entries(names: list[str], config_text: str) -> list[str]:
    """Registry entries whose name the model's config never mentions: Keras ignores them."""
    return [name for name in names if f'"{name.rsplit(">", 1)[-1]}"' not in config_text
            and f'"{name}"' not in config_text]
