"""The files a recipe names, checked for being what they claim before any worker starts.

A .keras that is a Git LFS pointer, an .npz that is a renamed CSV, a labels file in Latin-1:
each would otherwise fail seconds later in a worker that has just imported TensorFlow. These
checks read only what identifies a file (magic bytes, a zip's directory, each array's header,
the labels' text), import no TensorFlow, and run only for targets about to be converted or
rendered: a no-op build reads nothing more than it did.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

from tfbuild.errors import UserError

LFS_POINTER = b"version https://git-lfs"
# What reading a damaged file can raise: all of it is the file's fault, none of it a bug.
UNREADABLE = (OSError, ValueError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile,
              zlib.error, struct.error)


def check_plans(project, plans) -> None:
    """Check the inputs of each recipe with a target to convert (model, data, labels) or only
    to render (labels)."""
    actions: dict[str, tuple] = {}
    for plan in plans:
        loaded, seen = actions.get(plan.loaded.name, (plan.loaded, set()))
        actions[plan.loaded.name] = (loaded, seen | {plan.action})
    for loaded, seen in actions.values():
        if "convert" in seen:
            check_recipe(project, loaded)
        elif "render" in seen:
            check_labels(project, loaded)


def check_recipe(project, loaded) -> None:
    check_model(project, loaded)
    check_data(project, loaded)
    check_labels(project, loaded)
    check_metadata(project, loaded)


def _existing(project, spec: str | None, *, allow_dir: bool = False) -> Path | None:
    """The file (or folder) a spec names, or None where the planner reports it (missing,
    unreadable, py:)."""
    if spec is None or spec.startswith("py:"):
        return None
    path = project.root / spec
    try:
        return path if path.is_file() or (allow_dir and path.is_dir()) else None
    except OSError:
        return None


def check_model(project, loaded) -> None:
    """The model source, as its kind checks it (conversion.sources): a file that is not what it
    claims is named as such, a Git LFS pointer as one."""
    from tfbuild.conversion.sources import kind_of

    where = dict(file=loaded.file, key="model.source")
    path = _existing(project, loaded.recipe.model.source, allow_dir=True)
    if path is None:
        return
    problem = kind_of(loaded.recipe.model, project.root, file=loaded.file).check(path)
    if problem is None:
        return
    if path.is_dir():
        raise UserError(problem, **where)
    lfs = _head(path, len(LFS_POINTER)) == LFS_POINTER
    raise UserError(f"not a readable {path.suffix} model: "
                    f"{'a Git LFS pointer, not the model' if lfs else problem}", **where,
                    hint="run `git lfs pull`" if lfs else "a Git LFS pointer? run `git lfs pull`")


def _head(path: Path, size: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def check_data(project, loaded) -> None:
    for key in ("calibration", "evaluation"):
        spec = getattr(loaded.recipe.data, key)
        path = _existing(project, spec)
        if path is None:
            continue
        where = dict(file=loaded.file, key=f"data.{key}")
        if path.suffix not in (".npz", ".npy"):  # the words data.load_arrays would use, earlier
            raise UserError(f"unsupported data file {spec!r}", **where, expected=".npz, .npy or py:module:function")
        problem = _npz_problem(path) if path.suffix == ".npz" else _npy_problem(path)
        if problem:
            raise UserError(f"cannot read {spec}: {problem}", **where,
                            expected="a numpy .npz/.npy file without pickled objects")


def _npz_problem(path: Path) -> str | None:
    """Every member an array numpy can load without pickle; each header read, no data."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
            if not members:
                return "it holds no arrays"
            for name in members:
                if not name.endswith(".npy"):
                    return f"{name!r} is not a numpy array"
                with archive.open(name) as member:
                    problem = _array_header_problem(member)
                if problem:
                    return f"array {name[:-4]!r}: {problem}"
    except zipfile.BadZipFile:
        return "not a numpy .npz archive (not a zip archive)"
    except UNREADABLE as err:
        return f"not a numpy .npz archive ({err})"
    return None


def _npy_problem(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            return _array_header_problem(handle)
    except UNREADABLE as err:
        return f"not a numpy .npy file ({err})"


def _array_header_problem(handle) -> str | None:
    from numpy.lib import format as npy

    version = npy.read_magic(handle)
    read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
    shape, _, dtype = read_header(handle)
    if dtype.hasobject:
        return "it holds Python objects, which load only through pickle"
    if not shape:
        return "a scalar, not samples"
    return None


def check_labels(project, loaded) -> None:
    mobile = loaded.recipe.mobile
    _check_text(project, loaded, mobile.labels if mobile else None, "mobile.labels")


def _check_text(project, loaded, spec: str | None, key: str) -> None:
    path = _existing(project, spec)
    if path is None:
        return
    try:
        data = path.read_bytes()
    except OSError:
        return  # the planner says why it cannot be read
    where = dict(file=loaded.file, key=key, expected="UTF-8 text, one class label per line")
    if b"\0" in data:
        line = data[:data.index(b"\0")].count(b"\n") + 1
        raise UserError(f"{spec} is not text (a NUL byte on line {line})", **where)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise UserError(f"{spec} is not UTF-8 (byte 0x{data[err.start]:02x} on line {line})",
                        **where) from None


def check_metadata(project, loaded) -> None:
    """Targets with TFLite metadata need the extra that writes it (asked without importing it:
    mediapipe imports TensorFlow), and their labels files must be text."""
    from tfbuild import metadata

    for target in loaded.recipe.targets:
        wanted = metadata.wanted(loaded.recipe, target, loaded.file)
        if wanted is None:
            continue
        if not metadata.extra_installed():
            raise UserError(f"target {target!r} has TFLite metadata, which needs the optional extra "
                            f"{metadata.EXTRA} (mediapipe's metadata schema); it is not installed",
                            file=loaded.file, key=wanted.where[""],
                            expected=f"pip install '{metadata.EXTRA}'",
                            hint=f"or set targets.{target}.metadata: false to build it without metadata")
        for key, spec in metadata.label_files(wanted).items():
            _check_text(project, loaded, spec, key)
