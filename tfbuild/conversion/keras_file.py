"""Source kind: a Keras file (.keras, .h5, .hdf5), written by Keras 3 or by Keras 2.

Keras 3 files are read by Keras 3. Keras 2 files are read by Keras 2 (tf-keras) where it is
installed, since Keras 3 redefined functions they use (keras2.py), and Keras 3's reading is then
compared with it (`keras3_drift`); the Keras that reads a file enters its targets' keys. Nothing
is deserialized before the config has been read for code-running layers.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tfbuild import keras2
from tfbuild.conversion.source import Source
from tfbuild.conversion.kind import Kind, seamed_version
from tfbuild.conversion.tf import tensorflow
from tfbuild.errors import UserError, describe_exception
from tfbuild.recipe import Recipe

if TYPE_CHECKING:
    import numpy as np

    from tfbuild.recipe import ModelSection

SUFFIXES = (".keras", ".h5", ".hdf5")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
HDF5_OFFSETS = (0, 512, 1024, 2048)  # the superblock may follow a user block of 512 * 2^n bytes


def _matches(model: "ModelSection", path: Path | None) -> bool:
    return path is not None and path.suffix in SUFFIXES and not path.is_dir()


def _check(path: Path) -> str | None:
    """A .keras file is a zip archive holding config.json (only its directory is read); an .h5
    file starts with HDF5's signature."""
    if path.suffix != ".keras":
        try:
            with open(path, "rb") as handle:
                head = handle.read(HDF5_OFFSETS[-1] + len(HDF5_MAGIC))
        except OSError as err:
            return f"unreadable ({err.strerror})"
        found = any(head[at:at + len(HDF5_MAGIC)] == HDF5_MAGIC for at in HDF5_OFFSETS)
        return None if found else "not an HDF5 file"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return "not a zip archive"
    except (OSError, ValueError, EOFError, RuntimeError, NotImplementedError) as err:
        return f"unreadable ({err})"
    return None if "config.json" in names else "the archive has no config.json"


def _key_versions(root: Path, spec: str, digests: Any) -> dict[str, str]:
    return keras2.key_versions(root, spec, digests, seamed_version(keras2.DISTRIBUTION, keras2.tool_version))


def _load(recipe: Recipe, root: Path, file: str) -> Source:
    from tfbuild.conversion.keras_model import custom_objects, keras_source

    loaded = _load_keras_file(root / recipe.model.source, recipe, file)
    source = keras_source(loaded.model, recipe, file, objects=custom_objects(recipe, file),
                          keras_module=loaded.keras)
    source.notes += loaded.notes
    source.warnings += loaded.warnings
    source.keras3_twin = loaded.keras3_twin
    return source


KIND = Kind("keras-file", ".keras or .h5 file", _matches, _load, check=_check, key_versions=_key_versions)


CODE_RUNNING_LAYERS = ("Lambda", "TFOpLambda", "SlicingOpLambda")


def _config_mentions_code(config_text: str) -> list[str]:
    found = set(re.findall(r'"class_name":\s*"(\w+)"', config_text))
    return sorted(found.intersection(CODE_RUNNING_LAYERS))


def _saved_config(path: Path, file: str) -> str:
    """The model's architecture JSON, read without deserializing anything."""
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                return archive.read("config.json").decode()
        import h5py

        with h5py.File(path, "r") as handle:
            config = handle.attrs.get("model_config", "")
            return config.decode() if isinstance(config, bytes) else str(config)
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        raise UserError(f"not a readable {path.suffix} model: {err}", file=file, key="model.source",
                        hint="a Git LFS pointer? run `git lfs pull`") from None


def _refuse_code_without_trust(config_text: str, recipe: Recipe, file: str) -> None:
    """Refuse code-carrying layers unless the recipe trusts the model."""
    layers = _config_mentions_code(config_text)
    if layers and not recipe.model.trust_code:
        raise UserError(
            f"the model contains {', '.join(layers)} layer(s), whose loading runs Python code "
            "stored in the model file", file=file, key="model.trust_code",
            expected="trust_code: true, only for a model you produced yourself",
            hint="or replace the Lambda with a registered custom layer (model.custom_objects)")


@dataclass
class Loaded:
    """A Keras model read from a file, and how: by Keras 3 (`keras`) or by Keras 2 (`tf_keras`),
    with what the build should say about it."""
    model: object
    keras: object  # the module that read it: its custom_object_scope rebuilds twins
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    keras3_twin: Callable[[], object] | None = None  # Keras 3's reading of a Keras 2 file, to compare


def _load_keras_file(path: Path, recipe: Recipe, file: str) -> Loaded:
    """Keras 3 files by Keras 3; Keras 2 files by Keras 2 (tf-keras) where installed, else by
    Keras 3 when nothing in their config changed meaning (keras2.py)."""
    import keras

    config_text = _saved_config(path, file)
    _refuse_code_without_trust(config_text, recipe, file)
    from tfbuild.conversion.keras_model import custom_objects

    objects = custom_objects(recipe, file)
    warnings = _registry_warnings(recipe, config_text)
    writer = keras2.writer_version(path)
    if writer is not None and keras2.is_keras2(writer):
        loaded = _load_keras2_file(path, recipe, file, writer, config_text, objects)
        loaded.warnings += warnings
        return loaded
    return Loaded(_keras3_load(path, recipe, file, objects), keras, warnings=warnings)


def _keras3_load(path: Path, recipe: Recipe, file: str, objects: dict, *, writer: str | None = None):
    import keras

    try:
        with keras.saving.custom_object_scope(objects):
            return keras.saving.load_model(path, custom_objects=objects, compile=False,
                                           safe_mode=not recipe.model.trust_code)
    except Exception as err:  # Keras raises many types for a model it cannot rebuild
        raise _load_error(err, file, writer=writer) from None


def _tf_keras():
    """tf-keras (Keras 2 as TensorFlow ships it), or None when it is not installed."""
    tensorflow()
    try:
        import tf_keras
    except ImportError:
        return None
    return tf_keras


def _load_keras2_file(path: Path, recipe: Recipe, file: str, writer: str, config_text: str,
                      objects: dict) -> Loaded:
    changes = keras2.meaning_changes(config_text)
    tf_keras = _tf_keras()
    if tf_keras is None:
        if changes:
            raise UserError(
                f"written by Keras {writer}, and Keras 3 would compute it differently: {changes[0]}"
                f"{f' (and {len(changes) - 1} more)' if len(changes) > 1 else ''}; "
                f"{keras2.REDEFINED[changes[0].rsplit(': ', 1)[1]]}", file=file, key="model.source",
                expected=f"tf-keras installed to read it as Keras 2 does: {keras2.INSTALL}")
        import keras

        model = _keras3_load(path, recipe, file, objects, writer=writer)
        return Loaded(model, keras, notes=[
            f"written by Keras {writer}, read by Keras 3 (nothing in its config changed meaning "
            f"between them; {keras2.INSTALL} reads it with Keras 2 itself)"])
    try:
        with tf_keras.utils.custom_object_scope(objects):
            model = tf_keras.models.load_model(path, custom_objects=objects, compile=False,
                                               safe_mode=not recipe.model.trust_code)
    except Exception as err:  # as in _keras3_load: many types, one meaning
        raise _load_error(err, file, writer=writer) from None
    note = f"written by Keras {writer}: read by tf-keras {tf_keras.__version__}, as its authors' Keras computed it"
    if changes:
        note += f" (Keras 3 would change {len(changes)} use(s) of {', '.join(sorted({c.rsplit(': ', 1)[1] for c in changes}))})"
    return Loaded(model, tf_keras, notes=[note],
                  keras3_twin=lambda: _keras3_load(path, recipe, file, objects, writer=writer))


def _registry_warnings(recipe: Recipe, config_text: str) -> list[str]:
    """Entries of model.custom_objects that the model never names: Keras ignores them silently."""
    return [f"model.custom_objects.{name} is not used: the model's config never names "
            f"{name.rsplit('>', 1)[-1]!r}, so Keras ignores the entry"
            for name in keras2.unused_entries(list(recipe.model.custom_objects), config_text)]


def _load_error(err: Exception, file: str, *, writer: str | None = None) -> UserError:
    text = str(err)
    cause = describe_exception(err)
    keras2_file = keras2.is_keras2(writer)
    missing = re.search(r"Could not locate (?:class|function) '([^']+)'|Unknown (?:layer|object)[^']*'([^']+)'", text)
    if missing:
        name = missing.group(1) or missing.group(2)
        registered = re.findall(r"'registered_name': '([^']+)'", text[missing.end():])
        name = next((r for r in registered if r.rsplit(">", 1)[-1] == name), name)
        from tfbuild.conversion.keras_model import keras_builtin

        if keras_builtin(name):
            return UserError(f"Keras 3 cannot rebuild the built-in {name!r} from this file's config "
                             f"(written by Keras {writer or 'an older version'}): {cause}",
                             file=file, key="model.source",
                             expected=f"tf-keras to read Keras 2 files: {keras2.INSTALL}")
        return UserError(f"the model uses {name!r}, which is not registered", file=file,
                         key=f"model.custom_objects.{name}",
                         expected=f"{name}: package.module:{name.rsplit('>', 1)[-1]}")
    if "safe_mode" in text or "lambda" in text.lower():
        return UserError("loading the model would run code stored in it", file=file, key="model.trust_code",
                         expected="trust_code: true, only for a model you produced yourself")
    if keras2_file:
        return UserError(f"cannot load this Keras {writer} file with Keras 3: {cause}", file=file,
                         key="model.source", expected=f"tf-keras to read Keras 2 files: {keras2.INSTALL}")
    return UserError(f"cannot load the model: {cause}", file=file, key="model.source",
                     hint="was it saved completely, by Keras 3 (.keras) or Keras 2 (.h5)?")


def keras3_drift(source: Source, inputs: dict[str, np.ndarray], reference: dict, kinds: dict) -> str:
    """How far Keras 3's reading of a Keras 2 file is from Keras 2's, on the evaluation data: the
    difference a build with Keras 3 would have verified against, and passed."""
    import numpy as np

    from tfbuild import verify

    tf = tensorflow()
    try:
        assert source.keras3_twin is not None, "a Keras 2 file read by tf-keras"
        twin = source.keras3_twin()
        args = [inputs[name] for name in source.input_names]
        result = twin(args[0] if len(args) == 1 else args, training=False)
        flat = list(result.values()) if isinstance(result, dict) else tf.nest.flatten(result)
        theirs = {name: np.asarray(value) for name, value in zip(source.output_names, flat)}
        metrics = verify.compare(reference, theirs, None, kinds)["outputs"]
    except Exception as err:  # Keras 3 cannot read or run it: only tf-keras's reading exists
        cause = err.message if isinstance(err, UserError) else f"Keras 3 cannot run it: {describe_exception(err)}"
        return f"{cause}; built from tf-keras's reading"
    worst = max(m["max_abs_error"] for m in metrics.values())
    agreement = [f"top-1 agreement{' per frame' if m.get('positions') else ''} {m['top1_agreement']:.3f}"
                 for m in metrics.values() if "top1_agreement" in m]
    if worst <= 1e-4:
        return f"Keras 3 reads this Keras 2 file the same way (max difference {worst:.2g})"
    return (f"Keras 3 reads this Keras 2 file differently: max difference {worst:.3g}"
            f"{', ' + ', '.join(agreement) if agreement else ''} on the evaluation data; built from "
            "tf-keras's reading, which is what its authors' Keras computed")
