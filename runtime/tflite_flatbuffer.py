"""A small, bounds-checked reader of the ``.tflite`` flatbuffer (TFLite ``schema.fbs``, file id ``TFL3``).

It reads what maskconver needs to check and describe a model without LiteRT or TensorFlow: operator codes
(``builtin_code`` vs the old ``deprecated_builtin_code``), subgraphs, tensors with shape, shape signature,
type and per-tensor/per-channel quantisation, operators with inputs, outputs and the builtin options that
the delegate checks use (conv strides/dilation, resize ``half_pixel_centers``...), buffers, signature defs
and the model's ``metadata`` list (where the TFLite metadata ``TFLITE_METADATA`` buffer lives).

Every read is bounds-checked, so truncated or random bytes raise :class:`TFLiteFormatError` (a
:class:`~maskconver.runtime.model_info.ModelFileError`) instead of crashing or looping.

Field ids follow the public ``tensorflow/lite/schema/schema.fbs`` (table field order); a vtable slot ``i``
sits at byte ``4 + 2 * i`` of the vtable.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flatbuffers import number_types as N
from flatbuffers.table import Table
from maskconver.runtime.model_info import ModelFileError

TFLITE_FILE_IDENTIFIER = b"TFL3"
METADATA_FILE_IDENTIFIER = b"M001"
TFLITE_METADATA_NAME = "TFLITE_METADATA"

# BuiltinOperator enum, codes 0.. in order (schema.fbs). Unknown (newer) codes print as BUILTIN_<n>.
_BUILTIN_NAMES = """
ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE EMBEDDING_LOOKUP FLOOR
FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION
LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH
CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER
BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE
BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM
ARG_MAX MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE
TILE EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK
LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL
FLOOR_MOD RANGE RESIZE_NEAREST_NEIGHBOR LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL
REVERSE_V2 ADD_N GATHER_ND COS WHERE RANK ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND
HARD_SWISH IF WHILE NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM
BATCH_MATMUL PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D IMAG REAL
COMPLEX_ABS HASHTABLE HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL CONV_3D_TRANSPOSE VAR_HANDLE
READ_VARIABLE ASSIGN_VARIABLE BROADCAST_ARGS RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM MULTINOMIAL GELU
DYNAMIC_UPDATE_SLICE RELU_0_TO_1 UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2
UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR RIGHT_SHIFT STABLEHLO_LOGISTIC STABLEHLO_ADD STABLEHLO_DIVIDE
STABLEHLO_MULTIPLY STABLEHLO_MAXIMUM STABLEHLO_RESHAPE STABLEHLO_CLAMP STABLEHLO_CONCATENATE
STABLEHLO_BROADCAST_IN_DIM STABLEHLO_CONVOLUTION STABLEHLO_SLICE STABLEHLO_CUSTOM_CALL STABLEHLO_REDUCE
STABLEHLO_ABS STABLEHLO_AND STABLEHLO_COSINE STABLEHLO_EXPONENTIAL STABLEHLO_FLOOR STABLEHLO_LOG
STABLEHLO_MINIMUM STABLEHLO_NEGATE STABLEHLO_OR STABLEHLO_POWER STABLEHLO_REMAINDER STABLEHLO_RSQRT
STABLEHLO_SELECT STABLEHLO_SUBTRACT STABLEHLO_TANH STABLEHLO_SCATTER STABLEHLO_COMPARE STABLEHLO_CONVERT
STABLEHLO_DYNAMIC_SLICE STABLEHLO_DYNAMIC_UPDATE_SLICE STABLEHLO_PAD STABLEHLO_IOTA STABLEHLO_DOT_GENERAL
STABLEHLO_REDUCE_WINDOW STABLEHLO_SORT STABLEHLO_WHILE STABLEHLO_GATHER STABLEHLO_TRANSPOSE DILATE
STABLEHLO_RNG_BIT_GENERATOR REDUCE_WINDOW STABLEHLO_COMPOSITE STABLEHLO_SHIFT_LEFT STABLEHLO_CBRT STABLEHLO_CASE
""".split()
BUILTIN_CODES: dict[str, int] = {name: code for code, name in enumerate(_BUILTIN_NAMES)}

# TensorType enum -> numpy dtype name ("" where numpy has no equivalent).
_TENSOR_TYPES = (
    ("FLOAT32", "float32"),
    ("FLOAT16", "float16"),
    ("INT32", "int32"),
    ("UINT8", "uint8"),
    ("INT64", "int64"),
    ("STRING", ""),
    ("BOOL", "bool"),
    ("INT16", "int16"),
    ("COMPLEX64", "complex64"),
    ("INT8", "int8"),
    ("FLOAT64", "float64"),
    ("COMPLEX128", "complex128"),
    ("UINT64", "uint64"),
    ("RESOURCE", ""),
    ("VARIANT", ""),
    ("UINT32", "uint32"),
    ("UINT16", "uint16"),
    ("INT4", ""),
    ("BFLOAT16", ""),
    ("INT2", ""),
    ("UINT4", ""),
)

_PADDING = ("SAME", "VALID")
_ACTIVATION = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT")

# BuiltinOptions union type ids (schema.fbs) of the option tables parsed below.
_OPT_CONV2D, _OPT_DEPTHWISE, _OPT_POOL2D, _OPT_FULLY_CONNECTED = 1, 2, 5, 8
_OPT_CONCAT, _OPT_ADD, _OPT_RESIZE_BILINEAR, _OPT_RESHAPE, _OPT_MUL = 10, 11, 15, 17, 21
_OPT_REDUCER, _OPT_SUB, _OPT_STRIDED_SLICE, _OPT_TRANSPOSE_CONV, _OPT_RESIZE_NN = 27, 28, 32, 49, 74


class TFLiteFormatError(ModelFileError):
    """The bytes are not a readable TFLite flatbuffer (truncated, corrupt, foreign or unsupported)."""


def builtin_name(code: int) -> str:
    """Name of a ``BuiltinOperator`` code (``BUILTIN_<n>`` for codes newer than this table)."""
    return _BUILTIN_NAMES[code] if 0 <= code < len(_BUILTIN_NAMES) else f"BUILTIN_{code}"


def tensor_type_name(code: int) -> str:
    return _TENSOR_TYPES[code][0] if 0 <= code < len(_TENSOR_TYPES) else f"TYPE_{code}"


class CheckedTable(Table):
    """``flatbuffers.table.Table`` whose reads are bounds-checked against the buffer.

    Field accessors take a *slot* (the field id in the schema) rather than a vtable byte offset.
    """

    __slots__ = ()

    def Get(self, flags, off):  # noqa: N802 - flatbuffers naming
        if off < 0 or off + flags.bytewidth > len(self.Bytes):
            raise TFLiteFormatError(
                f"flatbuffer read at byte {off} runs past the end ({len(self.Bytes)} bytes)"
            )
        return flags.packer_type.unpack_from(self.Bytes, off)[0]

    def Offset(self, vtableOffset):  # noqa: N802, N803
        vtable = self.Pos - self.Get(N.SOffsetTFlags, self.Pos)
        vtable_end = self.Get(N.VOffsetTFlags, vtable)
        if vtable_end < 4 or vtable_end % 2:
            raise TFLiteFormatError(f"corrupt flatbuffer vtable at byte {vtable}")
        if vtableOffset < vtable_end:
            return self.Get(N.VOffsetTFlags, vtable + vtableOffset)
        return 0

    def Indirect(self, off):  # noqa: N802
        target = off + self.Get(N.UOffsetTFlags, off)
        if target >= len(self.Bytes):
            raise TFLiteFormatError(
                f"flatbuffer offset at byte {off} points past the end ({len(self.Bytes)} bytes)"
            )
        return target

    # -- slot based helpers ---------------------------------------------------------------------------
    def field_pos(self, slot: int) -> int:
        """Absolute position of field ``slot`` or 0 when the field is absent."""
        o = self.Offset(4 + 2 * slot)
        return self.Pos + o if o else 0

    def scalar(self, slot: int, flags, default):
        pos = self.field_pos(slot)
        return self.Get(flags, pos) if pos else default

    def table(self, slot: int) -> CheckedTable | None:
        pos = self.field_pos(slot)
        return CheckedTable(self.Bytes, self.Indirect(pos)) if pos else None

    def vector(self, slot: int, elem_size: int) -> tuple[int, int]:
        """``(start, length)`` of vector field ``slot``; ``(0, 0)`` when absent."""
        pos = self.field_pos(slot)
        if not pos:
            return 0, 0
        vpos = self.Indirect(pos)
        n = self.Get(N.UOffsetTFlags, vpos)
        start = vpos + 4
        if start + n * elem_size > len(self.Bytes):
            raise TFLiteFormatError(
                f"flatbuffer vector of {n} elements at byte {vpos} runs past the end ({len(self.Bytes)} bytes)"
            )
        return start, n

    def numbers(self, slot: int, dtype: str) -> np.ndarray:
        dt = np.dtype(dtype).newbyteorder("<")
        start, n = self.vector(slot, dt.itemsize)
        if not n:
            return np.zeros(0, dtype=dt)
        return np.frombuffer(self.Bytes, dtype=dt, count=n, offset=start).copy()

    def tables(self, slot: int) -> list[CheckedTable]:
        start, n = self.vector(slot, 4)
        return [CheckedTable(self.Bytes, self.Indirect(start + 4 * i)) for i in range(n)]

    def string(self, slot: int) -> str | None:
        start, n = self.vector(slot, 1)
        if not start:
            return None
        try:
            return bytes(self.Bytes[start : start + n]).decode("utf-8")
        except UnicodeDecodeError as e:
            raise TFLiteFormatError(f"flatbuffer string at byte {start} is not UTF-8") from e

    def strings(self, slot: int) -> list[str]:
        start, n = self.vector(slot, 4)
        out = []
        for i in range(n):
            spos = self.Indirect(start + 4 * i)
            length = self.Get(N.UOffsetTFlags, spos)
            if spos + 4 + length > len(self.Bytes):
                raise TFLiteFormatError(f"flatbuffer string at byte {spos} runs past the end")
            out.append(bytes(self.Bytes[spos + 4 : spos + 4 + length]).decode("utf-8", "replace"))
        return out

    def max_slot_present(self) -> int:
        """Highest field id present in this table's vtable (-1 if none)."""
        vtable = self.Pos - self.Get(N.SOffsetTFlags, self.Pos)
        end = self.Get(N.VOffsetTFlags, vtable)
        top = -1
        for slot in range((end - 4) // 2):
            if self.Get(N.VOffsetTFlags, vtable + 4 + 2 * slot):
                top = slot
        return top


def root_table(data: bytes | bytearray | memoryview, identifier: bytes | None) -> CheckedTable:
    """The root table of a flatbuffer, checking the 4-byte file identifier when given."""
    if len(data) < 8:
        raise TFLiteFormatError(f"only {len(data)} bytes: too short for a flatbuffer")
    if identifier is not None and bytes(data[4:8]) != identifier:
        raise TFLiteFormatError(
            f"file identifier is {bytes(data[4:8])!r}, expected {identifier!r}: "
            + ("not a TFLite model" if identifier == TFLITE_FILE_IDENTIFIER else "not TFLite metadata")
        )
    root = struct.unpack_from("<I", data, 0)[0]
    if root < 8 or root + 4 > len(data):
        raise TFLiteFormatError(f"root table offset {root} is outside the {len(data)}-byte buffer")
    return CheckedTable(data, root)


# ------------------------------------------------------------------------------------------------------
# The parsed model
# ------------------------------------------------------------------------------------------------------
@dataclass
class Quantization:
    scale: np.ndarray  # float32 [n] (n = 1 per-tensor, n = channels per-axis)
    zero_point: np.ndarray  # int64 [n]
    quantized_dimension: int = 0
    # Byte positions of the first element of the stored scale / zero-point vectors (0: absent), for in-place edits.
    scale_pos: int = field(default=0, compare=False, repr=False)
    zero_point_pos: int = field(default=0, compare=False, repr=False)

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1


@dataclass
class TensorInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...] | None  # None when the model did not store one (== shape)
    type_code: int
    buffer: int
    quantization: Quantization | None
    is_variable: bool = False

    @property
    def type_name(self) -> str:
        return tensor_type_name(self.type_code)

    @property
    def dtype(self) -> str:
        """NumPy dtype name ('' for types numpy cannot hold)."""
        return _TENSOR_TYPES[self.type_code][1] if 0 <= self.type_code < len(_TENSOR_TYPES) else ""

    @property
    def is_dynamic(self) -> bool:
        return self.shape_signature is not None and any(d < 0 for d in self.shape_signature)


@dataclass
class OperatorCodeInfo:
    builtin_code: int
    deprecated_builtin_code: int
    custom_code: str | None
    version: int

    @property
    def code(self) -> int:
        """Effective builtin code: old models only fill the int8 ``deprecated_builtin_code``."""
        return max(self.builtin_code, self.deprecated_builtin_code)

    @property
    def name(self) -> str:
        return builtin_name(self.code)


@dataclass
class OperatorInfo:
    index: int
    opcode_index: int
    op_name: str  # builtin name, e.g. "DEPTHWISE_CONV_2D"; "CUSTOM" for custom/Flex ops
    custom_code: str | None
    inputs: tuple[int, ...]  # tensor indices, -1 = optional input left out
    outputs: tuple[int, ...]
    options_type: int
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SubGraphInfo:
    name: str
    tensors: list[TensorInfo]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    operators: list[OperatorInfo]


@dataclass
class BufferInfo:
    data_start: int  # absolute position of the bytes in the file (0 if empty)
    data_size: int
    external_offset: int = 0  # >2 GB models keep data outside the flatbuffer (offset, size)
    external_size: int = 0


@dataclass
class SignatureInfo:
    key: str
    subgraph_index: int
    inputs: dict[str, int]  # signature name -> tensor index
    outputs: dict[str, int]


@dataclass
class TFLiteModel:
    data: bytes
    version: int
    description: str | None
    operator_codes: list[OperatorCodeInfo]
    subgraphs: list[SubGraphInfo]
    buffers: list[BufferInfo]
    metadata: dict[str, int]  # metadata entry name -> buffer index
    signatures: list[SignatureInfo]

    def buffer_bytes(self, index: int) -> bytes:
        if not 0 <= index < len(self.buffers):
            raise TFLiteFormatError(f"buffer index {index} out of range ({len(self.buffers)} buffers)")
        b = self.buffers[index]
        if b.external_offset > 1:
            start, size = b.external_offset, b.external_size
            if start + size > len(self.data):
                raise TFLiteFormatError(f"buffer {index} lies outside the file (truncated model?)")
            return bytes(self.data[start : start + size])
        return bytes(self.data[b.data_start : b.data_start + b.data_size])

    def metadata_bytes(self, name: str) -> bytes | None:
        """The bytes of metadata entry ``name`` (e.g. ``TFLITE_METADATA``), None if absent."""
        if name not in self.metadata:
            return None
        return self.buffer_bytes(self.metadata[name])

    def tensor_data(self, tensor: TensorInfo) -> np.ndarray | None:
        """Constant data of ``tensor`` as an array of its shape, None for activations."""
        if tensor.buffer == 0 or not tensor.dtype:
            return None
        raw = self.buffer_bytes(tensor.buffer)
        if not raw:
            return None
        dt = np.dtype(tensor.dtype).newbyteorder("<")
        if len(raw) != int(np.prod(tensor.shape, dtype=np.int64)) * dt.itemsize:
            raise TFLiteFormatError(f"tensor {tensor.name!r}: buffer size {len(raw)} does not match shape")
        return np.frombuffer(raw, dtype=dt).reshape(tensor.shape)

    def main_signature(self) -> SignatureInfo | None:
        for s in self.signatures:
            if s.key == "serving_default":
                return s
        return self.signatures[0] if self.signatures else None

    def io_names(self, subgraph: int = 0) -> tuple[dict[int, str], dict[int, str]]:
        """Tensor index -> public name for inputs and outputs (signature names where present)."""
        sg = self.subgraphs[subgraph]
        ins = {i: sg.tensors[i].name for i in sg.inputs}
        outs = {i: sg.tensors[i].name for i in sg.outputs}
        for s in self.signatures:
            if s.subgraph_index == subgraph:
                ins.update({t: n for n, t in s.inputs.items() if t in ins})
                outs.update({t: n for n, t in s.outputs.items() if t in outs})
                break
        return ins, outs


def _parse_options(tab: CheckedTable | None, opt_type: int) -> dict[str, Any]:
    if tab is None:
        return {}
    i8, i32, b = N.Int8Flags, N.Int32Flags, N.BoolFlags
    if opt_type in (_OPT_CONV2D, _OPT_DEPTHWISE):
        dw = opt_type == _OPT_DEPTHWISE
        o = {
            "padding": _PADDING[tab.scalar(0, i8, 0) % 2],
            "stride_w": tab.scalar(1, i32, 0),
            "stride_h": tab.scalar(2, i32, 0),
        }
        if dw:
            o["depth_multiplier"] = tab.scalar(3, i32, 0)
        act = tab.scalar(4 if dw else 3, i8, 0)
        o["activation"] = _ACTIVATION[act] if 0 <= act < len(_ACTIVATION) else str(act)
        o["dilation_w"] = tab.scalar(5 if dw else 4, i32, 1)
        o["dilation_h"] = tab.scalar(6 if dw else 5, i32, 1)
        return o
    if opt_type == _OPT_POOL2D:
        return {
            "padding": _PADDING[tab.scalar(0, i8, 0) % 2],
            "stride_w": tab.scalar(1, i32, 0),
            "stride_h": tab.scalar(2, i32, 0),
            "filter_w": tab.scalar(3, i32, 0),
            "filter_h": tab.scalar(4, i32, 0),
        }
    if opt_type == _OPT_RESIZE_BILINEAR:
        return {"align_corners": bool(tab.scalar(2, b, 0)), "half_pixel_centers": bool(tab.scalar(3, b, 0))}
    if opt_type == _OPT_RESIZE_NN:
        return {"align_corners": bool(tab.scalar(0, b, 0)), "half_pixel_centers": bool(tab.scalar(1, b, 0))}
    if opt_type == _OPT_CONCAT:
        return {"axis": tab.scalar(0, i32, 0)}
    if opt_type in (_OPT_ADD, _OPT_MUL, _OPT_SUB, _OPT_FULLY_CONNECTED):
        act = tab.scalar(0, i8, 0)
        return {"activation": _ACTIVATION[act] if 0 <= act < len(_ACTIVATION) else str(act)}
    if opt_type == _OPT_REDUCER:
        return {"keep_dims": bool(tab.scalar(0, b, 0))}
    if opt_type == _OPT_RESHAPE:
        return {"new_shape": tuple(int(v) for v in tab.numbers(0, "int32"))}
    if opt_type == _OPT_STRIDED_SLICE:
        names = ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")
        return {n: tab.scalar(i, i32, 0) for i, n in enumerate(names)}
    if opt_type == _OPT_TRANSPOSE_CONV:
        return {
            "padding": _PADDING[tab.scalar(0, i8, 0) % 2],
            "stride_w": tab.scalar(1, i32, 0),
            "stride_h": tab.scalar(2, i32, 0),
        }
    return {}


def _parse_tensor(t: CheckedTable, index: int) -> TensorInfo:
    shape = tuple(int(v) for v in t.numbers(0, "int32"))
    sig = t.numbers(7, "int32")
    q = t.table(4)
    quant = None
    if q is not None:
        scale = q.numbers(2, "float32")
        if scale.size:
            zp = q.numbers(3, "int64")
            zp_pos = q.vector(3, 8)[0] if zp.size == scale.size else 0
            if zp.size == 0:
                zp = np.zeros(scale.size, dtype=np.int64)
            quant = Quantization(
                scale.astype(np.float32),
                zp.astype(np.int64),
                q.scalar(6, N.Int32Flags, 0),
                scale_pos=q.vector(2, 4)[0],
                zero_point_pos=zp_pos,
            )
    return TensorInfo(
        index=index,
        name=t.string(3) or "",
        shape=shape,
        shape_signature=tuple(int(v) for v in sig) if sig.size else None,
        type_code=t.scalar(1, N.Int8Flags, 0),
        buffer=t.scalar(2, N.Uint32Flags, 0),
        quantization=quant,
        is_variable=bool(t.scalar(5, N.BoolFlags, 0)),
    )


def _parse_subgraph(sg: CheckedTable, codes: list[OperatorCodeInfo], n_buffers: int) -> SubGraphInfo:
    tensors = [_parse_tensor(t, i) for i, t in enumerate(sg.tables(0))]
    nt = len(tensors)

    def check_indices(idx: np.ndarray, what: str) -> tuple[int, ...]:
        bad = [int(i) for i in idx if not -1 <= i < nt]
        if bad:
            raise TFLiteFormatError(f"{what} refers to tensor {bad[0]}, but the subgraph has {nt} tensors")
        return tuple(int(i) for i in idx)

    for t in tensors:
        if not 0 <= t.buffer < max(n_buffers, 1):
            raise TFLiteFormatError(f"tensor {t.name!r} refers to buffer {t.buffer} of {n_buffers}")
    ops = []
    for i, op in enumerate(sg.tables(3)):
        opcode_index = op.scalar(0, N.Uint32Flags, 0)
        if opcode_index >= len(codes):
            raise TFLiteFormatError(f"operator {i} uses opcode {opcode_index}, but there are {len(codes)}")
        code = codes[opcode_index]
        opt_type = op.scalar(3, N.Uint8Flags, 0)
        ops.append(
            OperatorInfo(
                index=i,
                opcode_index=opcode_index,
                op_name=code.name,
                custom_code=code.custom_code,
                inputs=check_indices(op.numbers(1, "int32"), f"operator {i} input"),
                outputs=check_indices(op.numbers(2, "int32"), f"operator {i} output"),
                options_type=opt_type,
                options=_parse_options(op.table(4), opt_type),
            )
        )
    return SubGraphInfo(
        name=sg.string(4) or "",
        tensors=tensors,
        inputs=check_indices(sg.numbers(1, "int32"), "subgraph input"),
        outputs=check_indices(sg.numbers(2, "int32"), "subgraph output"),
        operators=ops,
    )


def _parse_model(data: bytes) -> TFLiteModel:
    m = root_table(data, TFLITE_FILE_IDENTIFIER)
    codes = [
        OperatorCodeInfo(
            builtin_code=c.scalar(3, N.Int32Flags, 0),
            deprecated_builtin_code=c.scalar(0, N.Int8Flags, 0),
            custom_code=c.string(1),
            version=c.scalar(2, N.Int32Flags, 1),
        )
        for c in m.tables(1)
    ]
    buffers = []
    for b in m.tables(4):
        start, n = b.vector(0, 1)
        buffers.append(BufferInfo(start, n, b.scalar(1, N.Uint64Flags, 0), b.scalar(2, N.Uint64Flags, 0)))
    subgraphs = [_parse_subgraph(sg, codes, len(buffers)) for sg in m.tables(2)]
    if not subgraphs:
        raise TFLiteFormatError("the model has no subgraph")
    metadata = {}
    for md in m.tables(6):
        name = md.string(0) or ""
        buf = md.scalar(1, N.Uint32Flags, 0)
        if buf >= len(buffers):
            raise TFLiteFormatError(f"metadata {name!r} refers to buffer {buf} of {len(buffers)}")
        metadata[name] = buf
    signatures = []
    for s in m.tables(7):

        def tensor_map(slot: int, s: CheckedTable = s) -> dict[str, int]:
            return {tm.string(0) or "": tm.scalar(1, N.Uint32Flags, 0) for tm in s.tables(slot)}

        signatures.append(
            SignatureInfo(s.string(2) or "", s.scalar(4, N.Uint32Flags, 0), tensor_map(0), tensor_map(1))
        )
    return TFLiteModel(
        data=data,
        version=m.scalar(0, N.Uint32Flags, 0),
        description=m.string(3),
        operator_codes=codes,
        subgraphs=subgraphs,
        buffers=buffers,
        metadata=metadata,
        signatures=signatures,
    )


def parse_tflite(data: bytes | bytearray) -> TFLiteModel:
    """Parse ``.tflite`` bytes; raises :class:`TFLiteFormatError` with the reason on any defect."""
    data = bytes(data)
    if not data:
        raise TFLiteFormatError("the file is empty (0 bytes)")
    try:
        return _parse_model(data)
    except TFLiteFormatError as e:
        raise TFLiteFormatError(f"not a readable TFLite model: {e}") from None
    except (struct.error, IndexError, TypeError, ValueError, OverflowError, RecursionError, MemoryError) as e:
        raise TFLiteFormatError(f"not a readable TFLite model (corrupt or truncated flatbuffer: {e})") from e


# ------------------------------------------------------------------------------------------------------
# TFLite metadata (metadata_schema.fbs, file id "M001"): a reader for what maskconver writes
# ------------------------------------------------------------------------------------------------------
ASSOCIATED_FILE_TYPES = (
    "UNKNOWN",
    "DESCRIPTIONS",
    "TENSOR_AXIS_LABELS",
    "TENSOR_VALUE_LABELS",
    "TENSOR_AXIS_SCORE_CALIBRATION",
    "VOCABULARY",
    "SCANN_INDEX_FILE",
)
COLOR_SPACES = ("UNKNOWN", "RGB", "GRAYSCALE")


def _assoc_files(t: CheckedTable, slot: int) -> list[dict[str, Any]]:
    out = []
    for f in t.tables(slot):
        kind = f.scalar(2, N.Int8Flags, 0)
        out.append(
            {
                "name": f.string(0) or "",
                "description": f.string(1) or "",
                "type": ASSOCIATED_FILE_TYPES[kind] if 0 <= kind < len(ASSOCIATED_FILE_TYPES) else str(kind),
                "locale": f.string(3),
            }
        )
    return out


def _tensor_metadata(t: CheckedTable) -> dict[str, Any]:
    d: dict[str, Any] = {"name": t.string(0) or "", "description": t.string(1) or ""}
    content = t.table(3)
    if content is not None:
        ptype = content.scalar(0, N.Uint8Flags, 0)
        props = content.table(1)
        d["content_properties"] = {1: "FeatureProperties", 2: "ImageProperties"}.get(ptype, str(ptype))
        if ptype == 2 and props is not None:
            cs = props.scalar(0, N.Int8Flags, 0)
            d["color_space"] = COLOR_SPACES[cs] if 0 <= cs < len(COLOR_SPACES) else str(cs)
            size = props.table(1)
            if size is not None:
                d["default_size"] = (size.scalar(0, N.Uint32Flags, 0), size.scalar(1, N.Uint32Flags, 0))
    for pu in t.tables(4):
        if pu.scalar(0, N.Uint8Flags, 0) == 1:  # NormalizationOptions
            norm = pu.table(1)
            if norm is not None:
                d["normalization"] = {
                    "mean": [float(v) for v in norm.numbers(0, "float32")],
                    "std": [float(v) for v in norm.numbers(1, "float32")],
                }
    stats = t.table(5)
    if stats is not None:
        d["stats"] = {
            "max": [float(v) for v in stats.numbers(0, "float32")],
            "min": [float(v) for v in stats.numbers(1, "float32")],
        }
    d["associated_files"] = _assoc_files(t, 6)
    return d


def parse_model_metadata(data: bytes) -> dict[str, Any]:
    """Read a ``ModelMetadata`` flatbuffer (``TFLITE_METADATA`` buffer) into a plain dict."""
    try:
        m = root_table(bytes(data), METADATA_FILE_IDENTIFIER)
        out: dict[str, Any] = {
            "name": m.string(0) or "",
            "description": m.string(1) or "",
            "version": m.string(2) or "",
            "author": m.string(4) or "",
            "license": m.string(5) or "",
            "associated_files": _assoc_files(m, 6),
            "min_parser_version": m.string(7) or "",
            "subgraphs": [],
        }
        for sg in m.tables(3):
            out["subgraphs"].append(
                {
                    "name": sg.string(0) or "",
                    "description": sg.string(1) or "",
                    "inputs": [_tensor_metadata(t) for t in sg.tables(2)],
                    "outputs": [_tensor_metadata(t) for t in sg.tables(3)],
                    "associated_files": _assoc_files(sg, 4),
                }
            )
        return out
    except TFLiteFormatError as e:
        raise TFLiteFormatError(f"TFLITE_METADATA is not a readable metadata flatbuffer: {e}") from None
    except (struct.error, IndexError, TypeError, ValueError, OverflowError) as e:
        raise TFLiteFormatError(f"TFLITE_METADATA is corrupt ({e})") from e


def all_associated_files(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """Every associated file named anywhere in parsed metadata (model, subgraph and tensor level)."""
    files = list(metadata.get("associated_files", []))
    for sg in metadata.get("subgraphs", []):
        files += sg.get("associated_files", [])
        for t in sg.get("inputs", []) + sg.get("outputs", []):
            files += t.get("associated_files", [])
    return files


def patch_per_tensor_quantization(
    data: bytearray, model: TFLiteModel, tensor: TensorInfo, scale: float, zero_point: int
) -> None:
    """Overwrite a per-tensor quantised tensor's stored scale and zero point in ``data`` (same size, in place).

    ``model`` is ``parse_tflite(data)``. Refused (``ValueError``) for a tensor without a stored per-tensor scale
    and zero point, and for vectors that another tensor shares (an edit must change one tensor only).
    """
    q = tensor.quantization
    if q is None or q.per_channel or not q.scale_pos or not q.zero_point_pos:
        raise ValueError(
            f"tensor {tensor.index} ({tensor.name}) has no stored per-tensor scale and zero point"
        )
    for sg in model.subgraphs:
        for t in sg.tensors:
            o = t.quantization
            if (
                t is not tensor
                and o is not None
                and {o.scale_pos, o.zero_point_pos} & {q.scale_pos, q.zero_point_pos}
            ):
                raise ValueError(
                    f"tensor {tensor.index} shares its quantisation vectors with tensor {t.index}"
                )
    stored = np.float32(scale)
    if not (np.isfinite(stored) and stored > 0):
        raise ValueError(f"scale must be finite and > 0 as a float32, got {scale}")
    limits = {"INT8": (-128, 127), "UINT8": (0, 255), "INT16": (0, 0)}.get(tensor.type_name)
    if limits is not None and not limits[0] <= zero_point <= limits[1]:
        raise ValueError(f"zero point {zero_point} is outside {limits} for a {tensor.type_name} tensor")
    struct.pack_into("<f", data, q.scale_pos, float(stored))
    struct.pack_into("<q", data, q.zero_point_pos, int(zero_point))
