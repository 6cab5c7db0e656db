"""Read a maskconver model file (``.tflite`` or ``.onnx``) and everything the runtime needs from it.

A ``.tflite`` carries the standard TFLite metadata (``TFLITE_METADATA`` buffer, ``metadata_schema.fbs``)
and its associated files zipped onto the end: ``labels.txt``, ``maskconver.json`` (:class:`ModelInfo`)
and ``mask_head.npz`` (the float32 weights used after top-K). An ``.onnx`` carries the same files in
``metadata_props`` (``maskconver.json`` as text, ``mask_head.npz`` base64, ``labels.txt`` as text).
See ``shared/reference/model-file.md``.

Every defect (empty, truncated, random bytes, a foreign model, metadata removed or edited) raises
:class:`ModelFileError` naming the problem and the fix.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from maskconver.runtime.model_info import OUTPUT_NAMES, ModelFileError, ModelInfo
from maskconver.runtime.tflite_flatbuffer import (
    TFLITE_FILE_IDENTIFIER,
    TFLITE_METADATA_NAME,
    TFLiteModel,
    all_associated_files,
    parse_model_metadata,
    parse_tflite,
)

LABELS_FILE = "labels.txt"
INFO_FILE = "maskconver.json"
MASK_HEAD_FILE = "mask_head.npz"
REQUIRED_FILES = (LABELS_FILE, INFO_FILE, MASK_HEAD_FILE)
SHA256_TAG = "sha256:"  # associated-file descriptions end with "sha256:<hex>" of the file's bytes
ONNX_HASH_SUFFIX = ".sha256"  # ONNX metadata_props key "<file>.sha256"

REFIX = "re-convert the model with maskconver-convert (or re-add metadata with converter.tflite_metadata)"


def mask_head_shapes(num_classes: int, dim: int) -> dict[str, tuple[int, ...]]:
    """The arrays ``mask_head.npz`` must hold and their shapes for C classes and embedding size D."""
    return {
        "class_embeddings": (num_classes, dim),
        "mlp_dense0_kernel": (dim, dim),
        "mlp_dense0_bias": (dim,),
        "mlp_norm_gamma": (dim,),
        "mlp_norm_beta": (dim,),
        "mlp_dense1_kernel": (dim, dim),
        "mlp_dense1_bias": (dim,),
    }


def check_mask_head(mask_head: dict[str, np.ndarray], num_classes: int, dim: int) -> dict[str, np.ndarray]:
    """Validate the mask-head arrays against C and D; return them as float32. Raises ModelFileError."""
    want = mask_head_shapes(num_classes, dim)
    missing = [k for k in want if k not in mask_head]
    if missing:
        raise ModelFileError(f"mask_head.npz lacks {', '.join(missing)}; {REFIX}")
    out = {}
    for k, shape in want.items():
        a = np.asarray(mask_head[k])
        if a.shape != shape:
            raise ModelFileError(
                f"mask_head.npz: {k} has shape {a.shape}, expected {shape} (C={num_classes}, D={dim})"
            )
        if not np.issubdtype(a.dtype, np.floating) or not np.all(np.isfinite(a)):
            raise ModelFileError(f"mask_head.npz: {k} must hold finite floats (dtype {a.dtype})")
        out[k] = a.astype(np.float32, copy=False)
    return out


def labels_text(labels: list[str]) -> str:
    """``labels.txt`` content: one label per line, ids 0..C-1."""
    for i, name in enumerate(labels):
        if name.splitlines() != [name] and name:  # every separator str.splitlines knows, as the reader splits
            raise ModelFileError(f"label {i} ({name!r}) contains a line break")
    return "".join(f"{name}\n" for name in labels)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Deterministic uncompressed ``.npz`` (fixed timestamps, sorted keys), loadable by ``np.load``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            zi = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            zf.writestr(zi, npy.getvalue())
    return buf.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class TensorSpec:
    """One model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: np.ndarray | None = None  # per-tensor ([1]) or per-channel quantisation scale
    zero_point: np.ndarray | None = None


@dataclass
class ModelFile:
    """A readable maskconver model file."""

    path: Path
    format: str  # "tflite" or "onnx"
    info: ModelInfo
    mask_head: dict[str, np.ndarray]
    labels: list[str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]  # in OUTPUT_NAMES order: heatmap, center_embeddings, mask_features
    metadata: dict[str, Any] = field(default_factory=dict)  # name, description, version, author, license

    def output(self, name: str) -> TensorSpec:
        for t in self.outputs:
            if t.name == name:
                return t
        raise KeyError(name)

    def decode_settings(self, mask_dtype: str | np.dtype | type = "auto") -> dict[str, Any]:
        """Everything ``decode_panoptic(heatmap, center_embeddings, mask_features, **settings, output_size=...,
        valid_size=...)`` needs besides the outputs and the image geometry, for your own interpreter loop: the
        mask head, the outputs' int8 quantisation (None for float outputs), :meth:`ModelInfo.decode_settings` and
        the label maps' dtype (``"auto"``: the smallest that holds every id, as a ``Segmenter`` makes them).
        """
        from maskconver.runtime.decode import mask_dtype_for

        quant = {}
        for name, key in zip(OUTPUT_NAMES, ("heatmap_quant", "center_quant", "mask_quant"), strict=True):
            t = self.output(name)
            integer = t.dtype in ("int8", "uint8") and t.scale is not None and t.zero_point is not None
            quant[key] = (
                (float(t.scale.reshape(-1)[0]), float(t.zero_point.reshape(-1)[0])) if integer else None
            )
        info = self.info
        dtype = mask_dtype_for(mask_dtype, info.num_classes, info.num_proposals)
        return {"mask_head": self.mask_head, **quant, **info.decode_settings(), "mask_dtype": dtype}


# ------------------------------------------------------------------------------------------------------
def _parse_associated(files: dict[str, bytes], hashes: dict[str, str | None], where: str):
    for name in REQUIRED_FILES:
        if name not in files:
            raise ModelFileError(f"{where}: the associated file {name} is missing; {REFIX}")
    for name, want in hashes.items():
        if want is not None and name in files and sha256_hex(files[name]) != want:
            raise ModelFileError(
                f"{where}: {name} was edited after conversion (its SHA-256 no longer matches the one recorded "
                f"in the model metadata); {REFIX}"
            )
    info = ModelInfo.from_json(files[INFO_FILE])
    try:
        with np.load(io.BytesIO(files[MASK_HEAD_FILE]), allow_pickle=False) as npz:
            raw = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, NotImplementedError) as e:
        raise ModelFileError(f"{where}: mask_head.npz is not a readable .npz ({e}); {REFIX}") from e
    mask_head = check_mask_head(raw, info.num_classes, info.embedding_size)
    # decoders cache what they derive from these arrays: writes must not go stale
    for a in mask_head.values():
        a.flags.writeable = False
    try:
        labels = files[LABELS_FILE].decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ModelFileError(f"{where}: labels.txt is not UTF-8 text; {REFIX}") from e
    if len(labels) != info.num_classes:
        raise ModelFileError(
            f"{where}: labels.txt has {len(labels)} lines but maskconver.json says num_classes="
            f"{info.num_classes}; {REFIX}"
        )
    return info, mask_head, labels


def _check_graph(info: ModelInfo, inputs: list[TensorSpec], outputs: list[TensorSpec], where: str) -> None:
    """The graph's I/O must agree with maskconver.json (catches edited metadata and foreign graphs)."""
    if len(inputs) != 1:
        raise ModelFileError(f"{where}: expected 1 input (image), found {len(inputs)}")
    h, w = info.input_size
    if tuple(inputs[0].shape) != (1, h, w, 3):
        raise ModelFileError(
            f"{where}: input shape {tuple(inputs[0].shape)} does not match maskconver.json input_size {h}x{w} "
            f"(expected (1, {h}, {w}, 3)); {REFIX}"
        )
    if inputs[0].dtype != info.input_dtype:
        raise ModelFileError(
            f"{where}: input dtype {inputs[0].dtype} does not match maskconver.json input_dtype "
            f"{info.input_dtype}; {REFIX}"
        )
    names = [t.name for t in outputs]
    if sorted(names) != sorted(OUTPUT_NAMES):
        raise ModelFileError(f"{where}: outputs are {names}, expected {list(OUTPUT_NAMES)}; {REFIX}")
    oh, ow = -(-h // info.stride), -(-w // info.stride)
    channels = {"heatmap": info.num_classes, "center_embeddings": info.embedding_size}
    channels["mask_features"] = info.embedding_size
    for t in outputs:
        want = (1, oh, ow, channels[t.name])
        if tuple(t.shape) != want:
            raise ModelFileError(
                f"{where}: output {t.name} has shape {tuple(t.shape)}, but maskconver.json implies {want}; {REFIX}"
            )


def _spec_from_tflite(model: TFLiteModel, index: int, name: str) -> TensorSpec:
    t = model.subgraphs[0].tensors[index]
    q = t.quantization
    return TensorSpec(
        name, t.shape, t.dtype or t.type_name, q.scale if q else None, q.zero_point if q else None
    )


def _tflite_io(model: TFLiteModel) -> tuple[list[TensorSpec], list[TensorSpec]]:
    ins, outs = model.io_names(0)
    inputs = [_spec_from_tflite(model, i, n) for i, n in ins.items()]
    by_name = {n: _spec_from_tflite(model, i, n) for i, n in outs.items()}
    ordered = [by_name[n] for n in OUTPUT_NAMES if n in by_name]
    ordered += [s for n, s in by_name.items() if n not in OUTPUT_NAMES]
    return inputs, ordered


def _hash_from_description(text: str) -> str | None:
    pos = text.rfind(SHA256_TAG)
    if pos < 0:
        return None
    return text[pos + len(SHA256_TAG) :].strip().split()[0] if text[pos + len(SHA256_TAG) :].strip() else None


def read_tflite_model_file(data: bytes, path: Path) -> ModelFile:
    where = str(path)
    try:
        model = parse_tflite(data)
    except ModelFileError as e:
        raise ModelFileError(
            f"{where}: {e}. The file is truncated or corrupt; copy or convert it again"
        ) from None
    meta_raw = model.metadata_bytes(TFLITE_METADATA_NAME)
    if meta_raw is None:
        raise ModelFileError(
            f"{where}: no {TFLITE_METADATA_NAME} in the model: this is a plain TFLite model, not one written "
            f"by maskconver-convert, or its metadata was removed; {REFIX}"
        )
    try:
        md = parse_model_metadata(meta_raw)
    except ModelFileError as e:
        raise ModelFileError(f"{where}: {e}; {REFIX}") from None
    declared = {f["name"]: f for f in all_associated_files(md)}
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, NotImplementedError, ValueError, OSError) as e:
        raise ModelFileError(
            f"{where}: the associated files zipped onto the end of the model are missing or damaged ({e}); "
            f"the file may be truncated or its metadata stripped; {REFIX}"
        ) from e
    files: dict[str, bytes] = {}
    with zf:
        names = set(zf.namelist())
        if not names & set(declared):
            raise ModelFileError(
                f"{where}: the associated files zipped onto the end of the model are missing or damaged (the "
                f"zip found holds {sorted(names)[:4]}, none of {sorted(declared)}); the file may be truncated; "
                f"{REFIX}"
            )
        for name in declared:
            if name not in names:
                raise ModelFileError(
                    f"{where}: the metadata names the associated file {name}, but it is not in the model's "
                    f"zip (found {sorted(names)}); {REFIX}"
                )
        for name in REQUIRED_FILES:
            if name in names:
                try:
                    files[name] = zf.read(name)
                except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as e:
                    raise ModelFileError(
                        f"{where}: {name} in the model's zip is damaged ({e}); {REFIX}"
                    ) from e
    for name in REQUIRED_FILES:
        if name in files and name not in declared:
            raise ModelFileError(f"{where}: {name} is in the zip but not in the TFLite metadata; {REFIX}")
    hashes = {n: _hash_from_description(declared[n]["description"]) for n in REQUIRED_FILES if n in declared}
    info, mask_head, labels = _parse_associated(files, hashes, where)
    inputs, outputs = _tflite_io(model)
    _check_graph(info, inputs, outputs, where)
    keys = ("name", "description", "version", "author", "license", "min_parser_version")
    return ModelFile(path, "tflite", info, mask_head, labels, inputs, outputs, {k: md[k] for k in keys})


# ------------------------------------------------------------------------------------------------------
_ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    10: "float16",
    11: "float64",
}


def read_onnx_model_file(data: bytes, path: Path) -> ModelFile:
    where = str(path)
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - onnx is in the [onnx] extra
        raise ModelFileError(
            "reading .onnx model files needs the onnx package: pip install 'maskconver[onnx]'"
        ) from e
    try:
        proto = onnx.ModelProto.FromString(data)
    except Exception as e:  # protobuf raises DecodeError, RuntimeError or ValueError by backend
        raise ModelFileError(
            f"{where}: not a readable ONNX model ({type(e).__name__}: {e}); copy or convert it again"
        ) from e
    if not proto.HasField("graph") or not proto.graph.output:
        raise ModelFileError(f"{where}: not a readable ONNX model (no graph); copy or convert it again")
    props = {p.key: p.value for p in proto.metadata_props}
    if INFO_FILE not in props:
        raise ModelFileError(
            f"{where}: no {INFO_FILE} in the ONNX metadata_props: not a model written by maskconver-convert, "
            f"or its metadata was removed; {REFIX}"
        )
    files: dict[str, bytes] = {}
    for name in REQUIRED_FILES:
        if name not in props:
            raise ModelFileError(f"{where}: ONNX metadata_props lacks {name}; {REFIX}")
    files[INFO_FILE] = props[INFO_FILE].encode("utf-8")
    files[LABELS_FILE] = props[LABELS_FILE].encode("utf-8")
    try:
        files[MASK_HEAD_FILE] = base64.b64decode(props[MASK_HEAD_FILE], validate=True)
    except (binascii.Error, ValueError) as e:
        raise ModelFileError(
            f"{where}: ONNX metadata_props {MASK_HEAD_FILE} is not valid base64 ({e}); {REFIX}"
        ) from e
    hashes = {n: props.get(n + ONNX_HASH_SUFFIX) for n in REQUIRED_FILES}
    info, mask_head, labels = _parse_associated(files, hashes, where)

    initializers = {t.name for t in proto.graph.initializer}

    def spec(vi) -> TensorSpec:
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        return TensorSpec(vi.name, dims, _ONNX_DTYPES.get(tt.elem_type, f"onnx_type_{tt.elem_type}"))

    inputs = [spec(v) for v in proto.graph.input if v.name not in initializers]
    by_name = {v.name: spec(v) for v in proto.graph.output}
    outputs = [by_name[n] for n in OUTPUT_NAMES if n in by_name] + [
        s for n, s in by_name.items() if n not in OUTPUT_NAMES
    ]
    _check_graph(info, inputs, outputs, where)
    meta = {k: props.get(k, "") for k in ("name", "description", "version", "author", "license")}
    return ModelFile(path, "onnx", info, mask_head, labels, inputs, outputs, meta)


def read_model_file(path: str | Path) -> ModelFile:
    """Read a maskconver ``.tflite`` or ``.onnx`` model file. Raises :class:`ModelFileError` on any defect."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file; check the path") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path} is a directory; pass the .tflite or .onnx file") from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read the model file ({e})") from e
    if not data:
        raise ModelFileError(
            f"{path} is empty (0 bytes): the copy or conversion did not finish; convert again"
        )
    if len(data) >= 8 and data[4:8] == TFLITE_FILE_IDENTIFIER:
        return read_tflite_model_file(data, path)
    if path.suffix.lower() == ".onnx":
        return read_onnx_model_file(data, path)
    if path.suffix.lower() == ".tflite":
        raise ModelFileError(
            f"{path}: not a TFLite model (the file identifier at bytes 4..8 is {data[4:8]!r}, expected "
            f"{TFLITE_FILE_IDENTIFIER!r}); the file is corrupt or not a model; convert again"
        )
    raise ModelFileError(f"{path}: unknown model format (expected a .tflite or .onnx file)")
