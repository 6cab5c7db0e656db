"""Write the standard TFLite model metadata into a maskconver ``.tflite``.

The metadata is a ``ModelMetadata`` flatbuffer (public ``metadata_schema.fbs``, file identifier ``M001``)
stored in a new model buffer named by a ``TFLITE_METADATA`` entry of the model's ``metadata`` list, with
the associated files (``labels.txt``, ``maskconver.json``, ``mask_head.npz``) zipped onto the end of the
file (uncompressed, as metadata readers such as MediaPipe expect). The layout is what the TFLite Support
``MetadataPopulator`` produces, written here with the ``flatbuffers`` Builder directly.

How the model is re-serialised: the original flatbuffer is embedded unchanged (16-byte aligned) at the end
of a new flatbuffer whose root ``Model`` table is rebuilt in front of it. The new root points at the
original operator codes, subgraphs, signature defs and description, and at new ``buffers`` / ``metadata``
vectors that reuse the original ``Buffer`` / ``Metadata`` tables and add one buffer and entry. Because every
tensor, operator and weight byte is the original, the graph computes bit-identical outputs.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from typing import Any

import flatbuffers
import numpy as np
from flatbuffers import number_types as N
from maskconver.runtime.model_file import (
    INFO_FILE,
    LABELS_FILE,
    MASK_HEAD_FILE,
    SHA256_TAG,
    check_mask_head,
    labels_text,
    npz_bytes,
    sha256_hex,
)
from maskconver.runtime.model_info import OUTPUT_NAMES, ModelFileError, ModelInfo
from maskconver.runtime.tflite_flatbuffer import (
    METADATA_FILE_IDENTIFIER,
    TFLITE_FILE_IDENTIFIER,
    TFLITE_METADATA_NAME,
    CheckedTable,
    TFLiteModel,
    parse_tflite,
    root_table,
)

MIN_PARSER_VERSION = "1.0.0"  # we only use fields present since metadata schema 1.0.0
# metadata_schema.fbs enum values
_FILE_UNKNOWN, _FILE_DESCRIPTIONS, _FILE_TENSOR_AXIS_LABELS = 0, 1, 2
_COLOR_RGB = 1
_CONTENT_FEATURE, _CONTENT_IMAGE = 1, 2
_PROCESS_NORMALIZATION = 1
_MODEL_FIELDS = 10  # Model table fields known to this writer (version .. external_buffers)

OUTPUT_DESCRIPTIONS = {
    "heatmap": "Center-heatmap logits [1, H/8, W/8, C], one channel per category id (labels.txt); apply a "
    "sigmoid, then peaks by 3x3 max-pool equality and joint top-K over locations and classes.",
    "center_embeddings": "Center embeddings [1, H/8, W/8, D], gathered at the top-K peaks and multiplied by the "
    "class embedding row of each peak (mask_head.npz) before the mask MLP.",
    "mask_features": "Mask features [1, H/8, W/8, D]; mask logits are their dot product with each proposal's "
    "MLP output, resized bilinearly (half-pixel) to the image.",
}
DEFAULT_META = {
    "name": "MaskConver",
    "description": "MaskConver panoptic segmentation (center heatmap, center embeddings, mask features); "
    "decode with maskconver.runtime.",
    "version": "1",
    "author": "maskconver",
    "license": "Apache-2.0",
}


class MetadataError(ModelFileError):
    """The model or the metadata given to :func:`populate_metadata` do not fit together."""


# ------------------------------------------------------------------------------------------------------
# metadata flatbuffer
# ------------------------------------------------------------------------------------------------------
def _vector_of_offsets(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _float_vector(b: flatbuffers.Builder, values) -> int:
    return b.CreateNumpyVector(np.asarray(values, dtype=np.float32))


def _associated_file(b: flatbuffers.Builder, name: str, description: str, kind: int) -> int:
    name_off, desc_off = b.CreateString(name), b.CreateString(description)
    b.StartObject(4)  # name, description, type, locale
    b.PrependUOffsetTRelativeSlot(0, name_off, 0)
    b.PrependUOffsetTRelativeSlot(1, desc_off, 0)
    b.PrependInt8Slot(2, kind, _FILE_UNKNOWN)
    return b.EndObject()


def _content(b: flatbuffers.Builder, image_size: tuple[int, int] | None) -> int:
    if image_size is None:
        b.StartObject(0)  # FeatureProperties {}
        props, kind = b.EndObject(), _CONTENT_FEATURE
    else:
        b.StartObject(2)  # ImageSize: width, height
        b.PrependUint32Slot(0, image_size[1], 0)
        b.PrependUint32Slot(1, image_size[0], 0)
        size = b.EndObject()
        b.StartObject(2)  # ImageProperties: color_space, default_size
        b.PrependInt8Slot(0, _COLOR_RGB, 0)
        b.PrependUOffsetTRelativeSlot(1, size, 0)
        props, kind = b.EndObject(), _CONTENT_IMAGE
    b.StartObject(3)  # Content: content_properties_type, content_properties, range
    b.PrependUint8Slot(0, kind, 0)
    b.PrependUOffsetTRelativeSlot(1, props, 0)
    return b.EndObject()


def _normalization_unit(b: flatbuffers.Builder, mean, std) -> int:
    mean_off, std_off = _float_vector(b, mean), _float_vector(b, std)
    b.StartObject(2)  # NormalizationOptions: mean, std
    b.PrependUOffsetTRelativeSlot(0, mean_off, 0)
    b.PrependUOffsetTRelativeSlot(1, std_off, 0)
    norm = b.EndObject()
    b.StartObject(2)  # ProcessUnit: options_type, options
    b.PrependUint8Slot(0, _PROCESS_NORMALIZATION, 0)
    b.PrependUOffsetTRelativeSlot(1, norm, 0)
    return b.EndObject()


def _stats(b: flatbuffers.Builder, vmax, vmin) -> int:
    max_off, min_off = _float_vector(b, vmax), _float_vector(b, vmin)
    b.StartObject(2)  # Stats: max, min
    b.PrependUOffsetTRelativeSlot(0, max_off, 0)
    b.PrependUOffsetTRelativeSlot(1, min_off, 0)
    return b.EndObject()


def _tensor_metadata(
    b: flatbuffers.Builder,
    name: str,
    description: str,
    content: int,
    process_units: list[int] | None = None,
    stats: int | None = None,
    files: list[int] | None = None,
) -> int:
    name_off, desc_off = b.CreateString(name), b.CreateString(description)
    units_off = _vector_of_offsets(b, process_units) if process_units else 0
    files_off = _vector_of_offsets(b, files) if files else 0
    b.StartObject(7)  # name, description, dimension_names, content, process_units, stats, associated_files
    b.PrependUOffsetTRelativeSlot(0, name_off, 0)
    b.PrependUOffsetTRelativeSlot(1, desc_off, 0)
    b.PrependUOffsetTRelativeSlot(3, content, 0)
    if units_off:
        b.PrependUOffsetTRelativeSlot(4, units_off, 0)
    if stats is not None:
        b.PrependUOffsetTRelativeSlot(5, stats, 0)
    if files_off:
        b.PrependUOffsetTRelativeSlot(6, files_off, 0)
    return b.EndObject()


def build_metadata_flatbuffer(
    info: ModelInfo,
    meta: Mapping[str, str],
    file_hashes: Mapping[str, str],
    input_name: str = "image",
    output_order: list[str] | tuple[str, ...] = OUTPUT_NAMES,
) -> bytes:
    """The ``ModelMetadata`` flatbuffer (file identifier ``M001``) describing a maskconver model.

    ``file_hashes`` maps each associated file name to the SHA-256 of its bytes; it is recorded at the end
    of the file's description so readers can tell edited files. ``output_order`` lists the output names
    in the order of the TFLite subgraph's outputs, which the output tensor metadata must follow.
    """
    if sorted(output_order) != sorted(OUTPUT_NAMES):
        raise MetadataError(
            f"output_order {list(output_order)} must be a permutation of {list(OUTPUT_NAMES)}"
        )
    b = flatbuffers.Builder(4096)
    h, w = info.input_size
    norm = _normalization_unit(b, info.mean, info.std)
    in_place = "inside the graph" if info.input_dtype == "uint8" else "by the caller before the model"
    input_desc = (
        f"RGB image [1, {h}, {w}, 3] {info.input_dtype}. Resize keeping the aspect ratio and pad bottom/right "
        f"with {tuple(info.pad_value)}; normalisation (x - mean) / std per channel is done {in_place}."
    )
    stats = _stats(b, [255.0], [0.0]) if info.input_dtype == "uint8" else None
    image_md = _tensor_metadata(b, input_name, input_desc, _content(b, (h, w)), [norm], stats)
    labels_file = _associated_file(
        b,
        LABELS_FILE,
        f"Category names for heatmap channels 0..C-1. {SHA256_TAG}{file_hashes[LABELS_FILE]}",
        _FILE_TENSOR_AXIS_LABELS,
    )
    outputs = []
    for name in output_order:
        files = [labels_file] if name == "heatmap" else None
        outputs.append(_tensor_metadata(b, name, OUTPUT_DESCRIPTIONS[name], _content(b, None), files=files))
    sg_name, sg_desc = b.CreateString(info.config_name), b.CreateString("MaskConver panoptic segmentation")
    inputs_off, outputs_off = _vector_of_offsets(b, [image_md]), _vector_of_offsets(b, outputs)
    b.StartObject(5)  # SubGraphMetadata: name, description, inputs, outputs, associated_files, ...
    b.PrependUOffsetTRelativeSlot(0, sg_name, 0)
    b.PrependUOffsetTRelativeSlot(1, sg_desc, 0)
    b.PrependUOffsetTRelativeSlot(2, inputs_off, 0)
    b.PrependUOffsetTRelativeSlot(3, outputs_off, 0)
    subgraph = b.EndObject()
    model_files = [
        _associated_file(
            b,
            INFO_FILE,
            f"maskconver.json: ModelInfo for the decoder. {SHA256_TAG}{file_hashes[INFO_FILE]}",
            _FILE_DESCRIPTIONS,
        ),
        _associated_file(
            b,
            MASK_HEAD_FILE,
            f"mask_head.npz: float32 class embeddings and mask MLP weights applied after top-K. "
            f"{SHA256_TAG}{file_hashes[MASK_HEAD_FILE]}",
            _FILE_UNKNOWN,
        ),
    ]
    strings = {
        k: b.CreateString(str(meta[k])) for k in ("name", "description", "version", "author", "license")
    }
    subgraphs_off = _vector_of_offsets(b, [subgraph])
    files_off = _vector_of_offsets(b, model_files)
    parser_off = b.CreateString(MIN_PARSER_VERSION)
    b.StartObject(8)  # ModelMetadata
    b.PrependUOffsetTRelativeSlot(0, strings["name"], 0)
    b.PrependUOffsetTRelativeSlot(1, strings["description"], 0)
    b.PrependUOffsetTRelativeSlot(2, strings["version"], 0)
    b.PrependUOffsetTRelativeSlot(3, subgraphs_off, 0)
    b.PrependUOffsetTRelativeSlot(4, strings["author"], 0)
    b.PrependUOffsetTRelativeSlot(5, strings["license"], 0)
    b.PrependUOffsetTRelativeSlot(6, files_off, 0)
    b.PrependUOffsetTRelativeSlot(7, parser_off, 0)
    b.Finish(b.EndObject(), file_identifier=METADATA_FILE_IDENTIFIER)
    return bytes(b.Output())


# ------------------------------------------------------------------------------------------------------
# inserting a metadata buffer into a .tflite
# ------------------------------------------------------------------------------------------------------
def strip_appended_zip(data: bytes) -> bytes:
    """Model bytes without a zip of associated files appended by an earlier populate (if any)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            if not infos:
                return data
            start = min(i.header_offset for i in infos)
    except zipfile.BadZipFile:
        return data
    return data[:start] if 8 <= start <= len(data) else data


def add_metadata_buffer(tflite: bytes, name: str, payload: bytes) -> bytes:
    """Return ``tflite`` with a metadata entry ``name`` pointing at a new buffer holding ``payload``.

    An existing entry of the same name is replaced (its old buffer stays, unreferenced). All other model
    content is kept byte for byte (see the module docstring).
    """
    model = parse_tflite(tflite)
    _reject_external_buffers(model)
    old = root_table(tflite, TFLITE_FILE_IDENTIFIER)
    if old.max_slot_present() >= _MODEL_FIELDS:
        raise MetadataError(
            "the TFLite model uses Model fields newer than this writer knows; update maskconver"
        )
    b = flatbuffers.Builder(len(tflite) + len(payload) + 4096)
    # 1. the original flatbuffer, unchanged, 16-byte aligned (its buffers are force_align 16)
    b.Prep(16, len(tflite))
    b.head = b.head - len(tflite)
    b.Bytes[b.head : b.head + len(tflite)] = tflite
    base = b.Offset()  # builder offset (distance from the end) of the original's byte 0

    def old_ref(pos: int) -> int:
        return base - pos

    def target(table: CheckedTable, slot: int) -> int:
        pos = table.field_pos(slot)
        return table.Indirect(pos) if pos else 0

    # 2. the new buffer holding the payload
    b.StartVector(1, len(payload), 16)
    b.head = b.head - len(payload)
    b.Bytes[b.head : b.head + len(payload)] = payload
    data_vec = b.EndVector()
    b.StartObject(3)  # Buffer: data, offset, size
    b.PrependUOffsetTRelativeSlot(0, data_vec, 0)
    new_buffer = b.EndObject()
    new_index = len(model.buffers)
    # 3. buffers: the original Buffer tables + the new one
    start, n = old.vector(4, 4)
    buffer_refs = [old_ref(old.Indirect(start + 4 * i)) for i in range(n)] + [new_buffer]
    buffers_vec = _vector_of_offsets(b, buffer_refs)
    # 4. metadata: original entries except a previous `name`, then the new entry
    name_off = b.CreateString(name)
    b.StartObject(2)  # Metadata: name, buffer
    b.PrependUOffsetTRelativeSlot(0, name_off, 0)
    b.PrependUint32Slot(1, new_index, 0)
    entry = b.EndObject()
    kept = [old_ref(md.Pos) for md in old.tables(6) if md.string(0) != name]
    metadata_vec = _vector_of_offsets(b, kept + [entry])
    # 5. the new root Model table
    b.StartObject(_MODEL_FIELDS)
    b.PrependUint32Slot(0, old.scalar(0, N.Uint32Flags, 0), 0)
    for slot in (1, 2, 3, 5, 7, 8, 9):  # operator_codes, subgraphs, description, metadata_buffer, ...
        pos = target(old, slot)
        if pos:
            b.PrependUOffsetTRelativeSlot(slot, old_ref(pos), 0)
    b.PrependUOffsetTRelativeSlot(4, buffers_vec, 0)
    b.PrependUOffsetTRelativeSlot(6, metadata_vec, 0)
    b.Finish(b.EndObject(), file_identifier=TFLITE_FILE_IDENTIFIER)
    return bytes(b.Output())


def _reject_external_buffers(model: TFLiteModel) -> None:
    if any(buf.external_offset > 1 for buf in model.buffers):
        raise MetadataError(
            "the model keeps weights outside the flatbuffer (a >2 GB model layout); adding metadata to such "
            "models is not supported"
        )


def append_zip(model: bytes, files: Mapping[str, bytes]) -> bytes:
    """``model`` followed by an uncompressed zip of ``files`` (offsets relative to the file start)."""
    buf = io.BytesIO()
    buf.write(model)
    with zipfile.ZipFile(buf, "a", zipfile.ZIP_STORED) as zf:
        for name, content in files.items():
            zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            zf.writestr(zi, content)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------------
def _check_model_against_info(model: TFLiteModel, info: ModelInfo) -> tuple[str, list[str]]:
    """Check the graph I/O against ``info``; returns the input's name and the outputs' names in order."""
    ins, outs = model.io_names(0)
    sg = model.subgraphs[0]
    if len(ins) != 1:
        raise MetadataError(f"the model has {len(ins)} inputs; a maskconver model has one (image)")
    ((in_index, in_name),) = ins.items()
    t = sg.tensors[in_index]
    h, w = info.input_size
    if t.shape != (1, h, w, 3) or t.dtype != info.input_dtype:
        raise MetadataError(
            f"model input {in_name} is {t.dtype} {t.shape}, but ModelInfo says {info.input_dtype} (1, {h}, {w}, 3)"
        )
    names = list(outs.values())
    if sorted(names) != sorted(OUTPUT_NAMES):
        raise MetadataError(
            f"model outputs are named {names}; expected {list(OUTPUT_NAMES)} (signature output names)"
        )
    oh, ow = -(-h // info.stride), -(-w // info.stride)
    channels = {"heatmap": info.num_classes, "center_embeddings": info.embedding_size}
    channels["mask_features"] = info.embedding_size
    for i, name in outs.items():
        want = (1, oh, ow, channels[name])
        if sg.tensors[i].shape != want:
            raise MetadataError(f"output {name} has shape {sg.tensors[i].shape}, ModelInfo implies {want}")
    return in_name, [outs[i] for i in sg.outputs]


def associated_files(
    info: ModelInfo, mask_head: Mapping[str, np.ndarray], labels: list[str]
) -> dict[str, bytes]:
    """The three associated files' bytes after validating them against ``info``."""
    if len(labels) != info.num_classes:
        raise MetadataError(f"{len(labels)} labels given for num_classes={info.num_classes}")
    head = check_mask_head(dict(mask_head), info.num_classes, info.embedding_size)
    return {
        LABELS_FILE: labels_text(labels).encode("utf-8"),
        INFO_FILE: info.to_json().encode("utf-8"),
        MASK_HEAD_FILE: npz_bytes(head),
    }


def populate_metadata(
    tflite_bytes: bytes,
    info: ModelInfo,
    mask_head: Mapping[str, np.ndarray],
    labels: list[str] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> bytes:
    """Return ``tflite_bytes`` with TFLite metadata and the associated files zipped on the end.

    ``labels`` defaults to ``info.labels()`` (the category names, one per heatmap channel). ``meta`` may set ``name``, ``description``, ``version``, ``author`` and ``license`` (defaults in
    ``DEFAULT_META``). Re-populating an already populated model replaces its metadata.
    """
    unknown = set(meta or {}) - set(DEFAULT_META)
    if unknown:
        raise MetadataError(f"unknown metadata keys {sorted(unknown)}; allowed: {sorted(DEFAULT_META)}")
    fields = {**DEFAULT_META, **{k: str(v) for k, v in (meta or {}).items()}}
    model_bytes = strip_appended_zip(bytes(tflite_bytes))
    model = parse_tflite(model_bytes)
    input_name, output_order = _check_model_against_info(model, info)
    files = associated_files(info, mask_head, info.labels() if labels is None else labels)
    hashes = {name: sha256_hex(content) for name, content in files.items()}
    md = build_metadata_flatbuffer(info, fields, hashes, input_name, output_order)
    with_md = add_metadata_buffer(model_bytes, TFLITE_METADATA_NAME, md)
    return append_zip(with_md, files)
