"""TFLite metadata inside a .tflite: written and read back the way the official writers do it.

The format belongs to TensorFlow Lite Support (now MediaPipe): a `ModelMetadata` flatbuffer
(file identifier `M001`, schema `metadata_schema.fbs`) stored as one of the model's buffers and
named `TFLITE_METADATA` in the model's `metadata` list, and the associated files (labels) packed
as a zip archive appended to the flatbuffer. Nothing here is hand-typed: the metadata tables come
from the object API generated from the official schema (`mediapipe.tasks.metadata.
metadata_schema_py_generated`, the optional extra `tfbuild[metadata]`), the model is rewritten
through LiteRT's own generated object API (`ai_edge_litert.schema_py_generated.ModelT`), exactly as
tflite-support's `MetadataPopulator` does (`_populate_metadata_buffer`, then
`_populate_associated_files` appending the files with Python's zipfile in append mode).

Two deliberate differences from the populator: the zip entries carry a fixed timestamp (the
populator stamps the current time, and a build must give the same bytes for the same key), and
the minimum parser version is not computed by a C++ extension but stated: every field written
here belongs to metadata schema 1.0.0, which is what `GetMinimumMetadataParserVersion` returns for
such metadata (tflite-support `metadata_version.cc` lists the later members: vocabulary files,
subgraph process units, tensor groups, tokenizers, audio properties).

The common currency is a *description*: a JSON-ready dict (model fields, `inputs` and `outputs`
in the subgraph's tensor order, `associated_files`). `write` turns one into bytes, `read` turns
bytes back into one, so a build can check that the file says what the recipe asked for.

Imported only in conversion workers.
"""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np

from tfbuild.data import label_lines

METADATA_NAME = "TFLITE_METADATA"
MODEL_IDENTIFIER = b"TFL3"
METADATA_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"  # every field written here is in metadata schema 1.0.0 (see above)
LABELS_DESCRIPTION = "Labels for categories that the model can recognize."  # the official writers' text
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: the same bytes on every build
GENERAL = ("name", "description", "version", "author", "license")


class MetadataError(Exception):
    """The model cannot carry metadata, or what was read back is not what was written."""


def _fb():
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    return fb


def _litert():
    from ai_edge_litert import schema_py_generated as schema

    return schema


# ---------------------------------------------------------------- the model's tensors

def io_names(model_bytes: bytes) -> tuple[list[str], list[str]]:
    """The signature names of the subgraph's inputs and outputs, in the subgraph's order: the order
    tensor metadata must follow (readers match metadata to tensors by position)."""
    schema = _litert()
    model = schema.Model.GetRootAs(model_bytes, 0)
    if not model.SignatureDefsLength():
        raise MetadataError("the model has no signature")
    signature = model.SignatureDefs(0)
    graph = model.Subgraphs(signature.SubgraphIndex())

    def by_index(count, get) -> dict[int, str]:
        return {get(i).TensorIndex(): get(i).Name().decode() for i in range(count)}
    inputs = by_index(signature.InputsLength(), signature.Inputs)
    outputs = by_index(signature.OutputsLength(), signature.Outputs)
    return ([inputs[int(i)] for i in graph.InputsAsNumpy()],
            [outputs[int(i)] for i in graph.OutputsAsNumpy()])


# ---------------------------------------------------------------- writing

def write(model_bytes: bytes, description: dict, files: dict[str, bytes]) -> bytes:
    """The model with `description` as its TFLITE_METADATA buffer and `files` appended as a zip."""
    fb = _fb()
    import flatbuffers

    builder = flatbuffers.Builder(0)
    builder.Finish(_model_metadata(description, fb).Pack(builder), METADATA_IDENTIFIER)
    metadata_buffer = bytes(builder.Output())
    recorded = {f["name"] for f in description["associated_files"]}
    if recorded != set(files):
        raise MetadataError(f"associated files {sorted(recorded)} recorded, {sorted(files)} given")
    return _append_files(_with_metadata_buffer(model_bytes, metadata_buffer), files)


def _with_metadata_buffer(model_bytes: bytes, metadata_buffer: bytes) -> bytes:
    """MetadataPopulator._populate_metadata_buffer: a new buffer, and a `metadata` entry naming
    it (or the existing entry's buffer replaced), the model packed again."""
    schema = _litert()
    import flatbuffers

    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    if any(getattr(buffer, "offset", 0) > 1 for buffer in model.buffers or []):
        raise MetadataError("the model stores its weights after the flatbuffer (a model over 2 GB): "
                            "rewriting it to add metadata would move them")
    entry = schema.BufferT()
    entry.data = np.frombuffer(metadata_buffer, dtype=np.uint8)
    model.metadata = model.metadata or []
    model.buffers = model.buffers or []
    existing = next((m for m in model.metadata if _text(m.name) == METADATA_NAME), None)
    if existing is not None:
        model.buffers[existing.buffer] = entry
    else:
        model.buffers.append(entry)
        named = schema.MetadataT()
        named.name, named.buffer = METADATA_NAME, len(model.buffers) - 1
        model.metadata.append(named)
    builder = flatbuffers.Builder(len(model_bytes) + len(metadata_buffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=MODEL_IDENTIFIER)
    return bytes(builder.Output())


def _append_files(model_bytes: bytes, files: dict[str, bytes]) -> bytes:
    """MetadataPopulator._populate_associated_files: a zip appended after the flatbuffer (zipfile in
    append mode on a file that is not a zip), entries stored uncompressed, in name order."""
    if not files:
        return model_bytes
    out = io.BytesIO(model_bytes)
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a") as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name], compress_type=zipfile.ZIP_STORED)
    return out.getvalue()


def _model_metadata(description: dict, fb):
    metadata = fb.ModelMetadataT()
    for key in GENERAL:
        setattr(metadata, key, description.get(key))
    metadata.minParserVersion = MIN_PARSER_VERSION
    subgraph = fb.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [_tensor_metadata(t, fb) for t in description["inputs"]]
    subgraph.outputTensorMetadata = [_tensor_metadata(t, fb) for t in description["outputs"]]
    metadata.subgraphMetadata = [subgraph]
    return metadata


def _tensor_metadata(tensor: dict, fb):
    """One TensorMetadata, built as the official writers' TensorMd / InputImageTensorMd /
    ClassificationTensorMd build it: content properties, a normalization process unit, stats,
    and the labels as a TENSOR_AXIS_LABELS associated file."""
    meta = fb.TensorMetadataT()
    meta.name, meta.description = tensor["name"], tensor.get("description")
    content = fb.ContentT()
    if tensor["content"] == "image":
        content.contentPropertiesType = fb.ContentProperties.ImageProperties
        content.contentProperties = fb.ImagePropertiesT()
        content.contentProperties.colorSpace = getattr(fb.ColorSpaceType, tensor["color_space"].upper())
    else:
        content.contentPropertiesType = fb.ContentProperties.FeatureProperties
        content.contentProperties = fb.FeaturePropertiesT()
    meta.content = content
    if tensor.get("normalization"):
        unit = fb.ProcessUnitT()
        unit.optionsType = fb.ProcessUnitOptions.NormalizationOptions
        unit.options = fb.NormalizationOptionsT()
        unit.options.mean = list(tensor["normalization"]["mean"])
        unit.options.std = list(tensor["normalization"]["std"])
        meta.processUnits = [unit]
    meta.stats = fb.StatsT()
    if tensor.get("range"):
        meta.stats.min, meta.stats.max = list(tensor["range"]["min"]), list(tensor["range"]["max"])
    if tensor.get("labels"):
        labels = fb.AssociatedFileT()
        labels.name, labels.description = tensor["labels"]["file"], LABELS_DESCRIPTION
        labels.type = fb.AssociatedFileType.TENSOR_AXIS_LABELS
        meta.associatedFiles = [labels]
    return meta


# ---------------------------------------------------------------- reading

def read(model_bytes: bytes) -> dict | None:
    """The description a model's TFLITE_METADATA and packed files give, or None without metadata."""
    fb = _fb()
    buffer = metadata_buffer(model_bytes)
    if buffer is None:
        return None
    if not fb.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0):
        raise MetadataError(f"the {METADATA_NAME} buffer is not metadata (no M001 identifier)")
    metadata = fb.ModelMetadataT.InitFromPackedBuf(buffer, 0)
    if len(metadata.subgraphMetadata or []) != 1:
        raise MetadataError("metadata must describe exactly one subgraph")
    subgraph = metadata.subgraphMetadata[0]
    files = packed_files(model_bytes)
    description = {key: _text(getattr(metadata, key)) for key in GENERAL}
    description["min_parser_version"] = _text(metadata.minParserVersion)
    description["inputs"] = [_tensor_description(t, fb, files) for t in subgraph.inputTensorMetadata or []]
    description["outputs"] = [_tensor_description(t, fb, files) for t in subgraph.outputTensorMetadata or []]
    description["associated_files"] = [{"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                                       for name, data in sorted(files.items())]
    return description


def metadata_buffer(model_bytes: bytes) -> bytes | None:
    schema = _litert()
    model = schema.Model.GetRootAs(model_bytes, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _text(entry.Name()) == METADATA_NAME:
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None


def packed_files(model_bytes: bytes) -> dict[str, bytes]:
    """The associated files of the zip appended to the model ({} when there is none)."""
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        return {}


def _tensor_description(meta, fb, files: dict[str, bytes]) -> dict:
    content = meta.content
    image = content is not None and content.contentPropertiesType == fb.ContentProperties.ImageProperties
    spaces = {v: k.lower() for k, v in vars(fb.ColorSpaceType).items() if not k.startswith("_")}
    normalization = next((unit.options for unit in meta.processUnits or []
                          if unit.optionsType == fb.ProcessUnitOptions.NormalizationOptions), None)
    stats = meta.stats
    labels = next((f for f in meta.associatedFiles or [] if f.type == fb.AssociatedFileType.TENSOR_AXIS_LABELS), None)
    tensor = {
        "name": _text(meta.name), "description": _text(meta.description),
        "content": "image" if image else "feature",
        "color_space": spaces.get(content.contentProperties.colorSpace) if image else None,
        "normalization": {"mean": _floats(normalization.mean), "std": _floats(normalization.std)}
        if normalization is not None else None,
        "range": {"min": _floats(stats.min), "max": _floats(stats.max)}
        if stats is not None and stats.min is not None and stats.max is not None else None,
        "labels": None,
    }
    if labels is not None:
        name = _text(labels.name)
        if name not in files:
            raise MetadataError(f"the labels file {name!r} is recorded in the metadata but not packed")
        tensor["labels"] = {"file": name, "count": len(label_lines(files[name].decode("utf-8")))}
    return tensor


def _floats(values) -> list[float]:
    return [float(v) for v in values]


def _text(value) -> str | None:
    return value.decode("utf-8") if isinstance(value, bytes) else value
