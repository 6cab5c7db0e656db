"""Put the maskconver metadata into an ONNX model's ``metadata_props``.

The same three files as in the ``.tflite`` (see ``shared/reference/model-file.md``) so one reader serves
both: ``maskconver.json`` and ``labels.txt`` as text, ``mask_head.npz`` base64, each with a
``<file>.sha256`` entry, plus ``name``, ``description``, ``version``, ``author`` and ``license``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np
from maskconver.converter.tflite_metadata import DEFAULT_META, MetadataError, associated_files
from maskconver.runtime.model_file import INFO_FILE, LABELS_FILE, MASK_HEAD_FILE, ONNX_HASH_SUFFIX, sha256_hex
from maskconver.runtime.model_info import OUTPUT_NAMES, ModelInfo


def _check_graph(model, info: ModelInfo) -> None:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if len(inputs) != 1:
        raise MetadataError(f"the ONNX graph has {len(inputs)} inputs; a maskconver model has one (image)")
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in inputs[0].type.tensor_type.shape.dim)
    h, w = info.input_size
    if dims != (1, h, w, 3):
        raise MetadataError(
            f"ONNX input {inputs[0].name} has shape {dims}, ModelInfo implies (1, {h}, {w}, 3)"
        )
    names = [v.name for v in model.graph.output]
    if sorted(names) != sorted(OUTPUT_NAMES):
        raise MetadataError(f"ONNX outputs are named {names}; expected {list(OUTPUT_NAMES)}")


def add_onnx_metadata(
    model,
    info: ModelInfo,
    mask_head: Mapping[str, np.ndarray],
    labels: list[str] | None = None,
    meta: Mapping[str, Any] | None = None,
):
    """Set the maskconver ``metadata_props`` on an ``onnx.ModelProto`` in place and return it.

    ``labels`` defaults to ``info.labels()``; ``meta`` may set name, description, version, author, license.
    """
    unknown = set(meta or {}) - set(DEFAULT_META)
    if unknown:
        raise MetadataError(f"unknown metadata keys {sorted(unknown)}; allowed: {sorted(DEFAULT_META)}")
    fields = {**DEFAULT_META, **{k: str(v) for k, v in (meta or {}).items()}}
    _check_graph(model, info)
    files = associated_files(info, mask_head, info.labels() if labels is None else labels)
    props = dict(fields)
    props[INFO_FILE] = files[INFO_FILE].decode("utf-8")
    props[LABELS_FILE] = files[LABELS_FILE].decode("utf-8")
    props[MASK_HEAD_FILE] = base64.b64encode(files[MASK_HEAD_FILE]).decode("ascii")
    for name, content in files.items():
        props[name + ONNX_HASH_SUFFIX] = sha256_hex(content)
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for key, value in kept + sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = fields["description"]
    return model


def populate_onnx_metadata(
    onnx_bytes: bytes,
    info: ModelInfo,
    mask_head: Mapping[str, np.ndarray],
    labels: list[str] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> bytes:
    """``onnx_bytes`` with the maskconver metadata in ``metadata_props`` (graph untouched)."""
    import onnx

    model = onnx.ModelProto.FromString(onnx_bytes)
    return add_onnx_metadata(model, info, mask_head, labels, meta).SerializeToString()
