"""Static delegate-compatibility check of a ``.tflite`` and a measured XNNPACK partition count.

:func:`check_delegates` reads the flatbuffer (no LiteRT needed) and reports, per delegate (TFLite GPU,
NNAPI, XNNPACK), every operator the delegate would not take, with the operator index, its first output
tensor's name (the converter names outputs after the TF ops they come from, e.g. ``"Relu_3;depthwise"``)
and the reason. It also lists ops that the maskconver model-file spec forbids anywhere (top-K, gathers,
arg-max, control flow, custom/Flex ops) and dynamic shapes, and flags XNNPACK performance cliffs (depthwise
convolutions of more than 25 taps).

The allow-lists are curated for the conv-graph ops a MaskConver export uses, from the delegates' public
documentation and source, conservative where versions differ; an op that is not listed counts as not
supported. They are a static guide: :func:`count_xnnpack_partitions` measures XNNPACK delegation in LiteRT
for real, and on-device logs remain the ground truth for GPU and NNAPI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maskconver.runtime.tflite_flatbuffer import OperatorInfo, SubGraphInfo, TFLiteModel, parse_tflite

GPU, NNAPI, XNNPACK = "gpu", "nnapi", "xnnpack"
DELEGATES = (GPU, NNAPI, XNNPACK)
XNNPACK_FAST_DW_TAPS = 25  # XNNPACK's int8 depthwise kernels are unipass up to 25 taps (3x3, 5x5)

# Ops the model-file spec keeps out of the graph entirely (decoding happens on the host).
FORBIDDEN_OPS = {
    "TOPK_V2": "top-K belongs in the host decoder, not in the graph",
    "GATHER": "gathers belong in the host decoder (GPU delegate falls back to CPU on them)",
    "GATHER_ND": "gathers belong in the host decoder (GPU delegate falls back to CPU on them)",
    "ARG_MAX": "arg-max belongs in the host decoder (not supported by the GPU delegate)",
    "ARG_MIN": "arg-min belongs in the host decoder",
    "WHILE": "control flow is not delegated and makes shapes data-dependent",
    "IF": "control flow is not delegated",
    "CALL_ONCE": "resource initialisation subgraphs are not allowed",
    "VAR_HANDLE": "resource variables are not allowed",
    "NON_MAX_SUPPRESSION_V4": "NMS belongs on the host",
    "NON_MAX_SUPPRESSION_V5": "NMS belongs on the host",
    "WHERE": "data-dependent output shape",
    "UNIQUE": "data-dependent output shape",
    "SCATTER_ND": "scatter is not delegated",
    "CUSTOM": "custom ops run on no delegate",
}

_SIMPLE_ACTS = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6")


@dataclass
class Finding:
    op_index: int
    op_name: str
    output_name: str  # first output tensor's name: tells which source op produced it
    reason: str
    severity: str  # "forbidden" | "unsupported" | "perf"

    def __str__(self) -> str:
        return f"op {self.op_index} {self.op_name} -> {self.output_name!r}: {self.reason}"


@dataclass
class DelegateReport:
    num_ops: int
    op_counts: dict[str, int]
    forbidden: list[Finding] = field(default_factory=list)
    dynamic_tensors: list[str] = field(default_factory=list)
    delegates: dict[str, list[Finding]] = field(default_factory=dict)
    input_ops: list[int] = field(default_factory=list)  # ops that read a graph input (the I/O boundary)

    def unsupported(self, delegate: str) -> list[Finding]:
        return [f for f in self.delegates.get(delegate, []) if f.severity == "unsupported"]

    def perf_warnings(self, delegate: str) -> list[Finding]:
        return [f for f in self.delegates.get(delegate, []) if f.severity == "perf"]

    def fully_supported(self, delegate: str) -> bool:
        return not self.forbidden and not self.dynamic_tensors and not self.unsupported(delegate)

    @property
    def ok(self) -> bool:
        """No forbidden op, no dynamic shape, and every delegate takes every op (perf warnings allowed)."""
        return all(self.fully_supported(d) for d in DELEGATES)

    def summary(self) -> str:
        lines = [f"{self.num_ops} ops: " + ", ".join(f"{k} {v}" for k, v in sorted(self.op_counts.items()))]
        for f in self.forbidden:
            lines.append(f"FORBIDDEN {f}")
        for name in self.dynamic_tensors:
            lines.append(f"DYNAMIC shape: tensor {name!r} has a -1 in its shape signature")
        for d in DELEGATES:
            bad, perf = self.unsupported(d), self.perf_warnings(d)
            state = "all ops supported" if not bad else f"{len(bad)} op(s) not supported"
            lines.append(f"{d}: {state}" + (f", {len(perf)} performance warning(s)" if perf else ""))
            lines += [f"  - {f}" for f in bad] + [f"  ~ {f}" for f in perf]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------------------
# constraint helpers: each returns a reason string when the op is NOT acceptable, else None
# ------------------------------------------------------------------------------------------------------
Check = Callable[[OperatorInfo, SubGraphInfo, TFLiteModel], "str | None"]


def _dtype(sg: SubGraphInfo, t: int) -> str:
    return sg.tensors[t].type_name if t >= 0 else "NONE"


def _kernel_hw(op: OperatorInfo, sg: SubGraphInfo) -> tuple[int, int]:
    """Kernel (h, w) from the weights tensor: CONV_2D [O, kh, kw, I], DEPTHWISE [1, kh, kw, C]."""
    shape = sg.tensors[op.inputs[1]].shape
    return (shape[1], shape[2]) if len(shape) == 4 else (1, 1)


def _has_data(sg: SubGraphInfo, model: TFLiteModel, t: int) -> bool:
    return t >= 0 and sg.tensors[t].buffer > 0 and model.buffers[sg.tensors[t].buffer].data_size > 0


def _is_const(sg: SubGraphInfo, model: TFLiteModel, t: int) -> bool:
    """A tensor with data in the file, or the float32 output of a DEQUANTIZE of such a FLOAT16 tensor: the
    float16-weights pattern of ``--fp16`` models, which every delegate reads as constant weights (the GPU
    delegate computes in float16 from them; XNNPACK and NNAPI dequantize them once, at delegation)."""
    if _has_data(sg, model, t):
        return True
    if t < 0 or sg.tensors[t].type_name != "FLOAT32":
        return False
    return any(
        op.op_name == "DEQUANTIZE"
        and op.outputs[:1] == (t,)
        and _dtype(sg, op.inputs[0]) == "FLOAT16"
        and _has_data(sg, model, op.inputs[0])
        for op in sg.operators
    )


def _act_simple(op: OperatorInfo, sg: SubGraphInfo, model: TFLiteModel) -> str | None:
    act = op.options.get("activation", "NONE")
    return None if act in _SIMPLE_ACTS else f"fused activation {act} is not supported"


def _act_gpu(op: OperatorInfo, sg: SubGraphInfo, model: TFLiteModel) -> str | None:
    act = op.options.get("activation", "NONE")
    return None if act in (*_SIMPLE_ACTS, "TANH") else f"fused activation {act} is not supported"


def _rank_le4(op: OperatorInfo, sg: SubGraphInfo, model: TFLiteModel) -> str | None:
    for t in (*op.inputs, *op.outputs):
        if t >= 0 and not _is_const(sg, model, t) and len(sg.tensors[t].shape) > 4:
            return f"tensor {sg.tensors[t].name!r} has rank {len(sg.tensors[t].shape)} > 4"
    return None


def _const_weights(op: OperatorInfo, sg: SubGraphInfo, model: TFLiteModel) -> str | None:
    for t in op.inputs[1:]:
        if t >= 0 and not _is_const(sg, model, t):
            return f"weights/bias tensor {sg.tensors[t].name!r} is not constant"
    return None


def _bias_present(op: OperatorInfo, sg: SubGraphInfo, model: TFLiteModel) -> str | None:
    return None if len(op.inputs) > 2 and op.inputs[2] >= 0 else "quantized conv without bias"


def _resize_attrs_gpu(op: OperatorInfo, sg: SubGraphInfo, model: TFLiteModel) -> str | None:
    if op.options.get("align_corners") and op.options.get("half_pixel_centers"):
        return "align_corners and half_pixel_centers both set"
    return None


def _resize_size_const(op: OperatorInfo, sg: SubGraphInfo, model: TFLiteModel) -> str | None:
    return None if _is_const(sg, model, op.inputs[1]) else "output size input is not constant"


def _strided_slice_gpu(op: OperatorInfo, sg: SubGraphInfo, model: TFLiteModel) -> str | None:
    for mask in ("ellipsis_mask", "new_axis_mask", "shrink_axis_mask"):
        if op.options.get(mask, 0):
            return f"{mask} is set"
    return None


def _stride_slice_const(op: OperatorInfo, sg: SubGraphInfo, model: TFLiteModel) -> str | None:
    for t in op.inputs[1:]:
        if t >= 0 and not _is_const(sg, model, t):
            return "begin/end/strides are not constant"
    return None


def _pad_const(op: OperatorInfo, sg: SubGraphInfo, model: TFLiteModel) -> str | None:
    return None if _is_const(sg, model, op.inputs[1]) else "paddings are not constant"


def _two_inputs(op: OperatorInfo, sg: SubGraphInfo, model: TFLiteModel) -> str | None:
    return None if len(op.inputs) == 2 else f"{len(op.inputs)} inputs (only 2 supported)"


def _mean_axes_const(op: OperatorInfo, sg: SubGraphInfo, model: TFLiteModel) -> str | None:
    return None if _is_const(sg, model, op.inputs[1]) else "reduction axes are not constant"


def _float_or_int8(op: OperatorInfo, sg: SubGraphInfo, model: TFLiteModel) -> str | None:
    for t in (*op.inputs[:1], *op.outputs):
        if _dtype(sg, t) not in ("FLOAT32", "FLOAT16", "INT8", "UINT8"):
            return f"tensor {sg.tensors[t].name!r} has type {_dtype(sg, t)}"
    return None


def _quantize_xnnpack(op: OperatorInfo, sg: SubGraphInfo, model: TFLiteModel) -> str | None:
    src, dst = _dtype(sg, op.inputs[0]), _dtype(sg, op.outputs[0])
    if src in ("FLOAT32", "FLOAT16") or src == dst:
        return None
    return f"requantize {src} -> {dst} is not delegated (use int8 or float I/O instead of uint8)"


def _xnnpack_depthwise_perf(op: OperatorInfo, sg: SubGraphInfo, model: TFLiteModel) -> str | None:
    kh, kw = _kernel_hw(op, sg)
    if kh * kw > XNNPACK_FAST_DW_TAPS:
        return (
            f"{kh}x{kw} depthwise kernel = {kh * kw} taps > {XNNPACK_FAST_DW_TAPS}: XNNPACK has no fast kernel "
            f"for it (~10x slower in int8); split it into row bands of <= {XNNPACK_FAST_DW_TAPS} taps"
        )
    return None


# Per delegate: op name -> list of constraint checks (empty list = supported without constraints).
GPU_OPS: dict[str, list[Check]] = {
    "ADD": [_act_gpu, _rank_le4],
    "SUB": [_act_gpu, _rank_le4],
    "MUL": [_act_gpu, _rank_le4],
    "DIV": [_act_gpu, _rank_le4],
    "CONV_2D": [_act_gpu, _const_weights],
    "DEPTHWISE_CONV_2D": [_act_gpu, _const_weights],
    "TRANSPOSE_CONV": [_const_weights],
    "FULLY_CONNECTED": [_act_gpu, _const_weights],
    "AVERAGE_POOL_2D": [_act_gpu],
    "MAX_POOL_2D": [_act_gpu],
    "CONCATENATION": [_act_gpu, _rank_le4],
    "MEAN": [_mean_axes_const, _rank_le4],
    "RESIZE_BILINEAR": [_resize_attrs_gpu, _resize_size_const],
    "RESIZE_NEAREST_NEIGHBOR": [_resize_attrs_gpu, _resize_size_const],
    "PAD": [_pad_const, _rank_le4],
    "PADV2": [_pad_const, _rank_le4],
    "MIRROR_PAD": [_pad_const],
    "STRIDED_SLICE": [_strided_slice_gpu, _stride_slice_const, _rank_le4],
    "SLICE": [_rank_le4],
    "RESHAPE": [_rank_le4],
    "QUANTIZE": [],
    "DEQUANTIZE": [],
    "RELU": [],
    "RELU6": [],
    "RELU_N1_TO_1": [],
    "LEAKY_RELU": [],
    "PRELU": [],
    "HARD_SWISH": [],
    "LOGISTIC": [],
    "TANH": [],
    "ELU": [],
    "SOFTMAX": [],
    "ABS": [],
    "EXP": [],
    "RSQRT": [],
    "SQRT": [],
    "SQUARE": [],
    "SQUARED_DIFFERENCE": [],
    "MAXIMUM": [],
    "MINIMUM": [],
    "TRANSPOSE": [_rank_le4],
    "SPACE_TO_DEPTH": [],
    "DEPTH_TO_SPACE": [],
    "SPLIT": [],
    "SPLIT_V": [],
    "REDUCE_MAX": [],
    "REDUCE_MIN": [],
    "SUM": [],
    "BATCH_MATMUL": [],
}

XNNPACK_OPS: dict[str, list[Check]] = {
    "ADD": [_act_simple, _two_inputs],
    "SUB": [_act_simple],
    "MUL": [_act_simple],
    "DIV": [_act_simple],
    "CONV_2D": [_act_simple, _const_weights, _float_or_int8],
    "DEPTHWISE_CONV_2D": [_act_simple, _const_weights, _float_or_int8],
    "TRANSPOSE_CONV": [_const_weights],
    "FULLY_CONNECTED": [_act_simple, _const_weights],
    "AVERAGE_POOL_2D": [_act_simple],
    "MAX_POOL_2D": [_act_simple],
    "CONCATENATION": [_act_simple],
    "MEAN": [_mean_axes_const],
    "RESIZE_BILINEAR": [_resize_size_const],
    "PAD": [_pad_const],
    "STRIDED_SLICE": [_stride_slice_const],
    "SLICE": [],
    "RESHAPE": [],
    "QUANTIZE": [_quantize_xnnpack],
    "DEQUANTIZE": [],
    "LEAKY_RELU": [],
    "PRELU": [],
    "HARD_SWISH": [],
    "LOGISTIC": [],
    "TANH": [],
    "ELU": [],
    "SOFTMAX": [],
    "SQUARE": [],
    "SQRT": [],
    "RSQRT": [],
    "SQUARED_DIFFERENCE": [],
    "MAXIMUM": [],
    "MINIMUM": [],
    "TRANSPOSE": [],
    "SPACE_TO_DEPTH": [],
    "DEPTH_TO_SPACE": [],
    "SPLIT": [],
    "BATCH_MATMUL": [],
    "ABS": [],
    "NEG": [],
    "RELU": [],
    "RELU6": [],
    "RELU_N1_TO_1": [],
}
# float-only XNNPACK ops: in an int8 graph they are not delegated (e.g. a standalone int8 RELU)
XNNPACK_FLOAT_ONLY = {"RELU", "RELU6", "RELU_N1_TO_1", "DIV", "SQRT", "RSQRT", "SQUARE", "SQUARED_DIFFERENCE"}

# NNAPI: op -> (minimum Android API level, checks). int8 (asymmetric signed) tensors need API 30.
NNAPI_OPS: dict[str, tuple[int, list[Check]]] = {
    "ADD": (27, [_act_simple, _rank_le4]),
    "MUL": (27, [_act_simple, _rank_le4]),
    "SUB": (28, [_act_simple, _rank_le4]),
    "DIV": (28, [_act_simple]),
    "CONV_2D": (27, [_act_simple, _const_weights]),
    "DEPTHWISE_CONV_2D": (27, [_act_simple, _const_weights]),
    "TRANSPOSE_CONV": (29, [_const_weights]),
    "FULLY_CONNECTED": (27, [_act_simple, _const_weights]),
    "AVERAGE_POOL_2D": (27, [_act_simple]),
    "MAX_POOL_2D": (27, [_act_simple]),
    "CONCATENATION": (27, [_act_simple]),
    "MEAN": (28, [_mean_axes_const]),
    "RESIZE_BILINEAR": (27, [_resize_size_const]),
    "RESIZE_NEAREST_NEIGHBOR": (29, [_resize_size_const]),
    "PAD": (28, [_pad_const]),
    "PADV2": (29, [_pad_const]),
    "STRIDED_SLICE": (28, [_stride_slice_const]),
    "SLICE": (29, []),
    "RESHAPE": (27, []),
    "QUANTIZE": (29, []),  # a requantize (quantized input) needs NNAPI 1.3 = API 30, see below
    "DEQUANTIZE": (27, []),
    "RELU": (27, []),
    "RELU6": (27, []),
    "RELU_N1_TO_1": (27, []),
    "LOGISTIC": (27, []),
    "TANH": (27, []),
    "HARD_SWISH": (30, []),
    "LEAKY_RELU": (29, []),
    "PRELU": (29, []),
    "ELU": (30, []),
    "SOFTMAX": (27, []),
    "MAXIMUM": (29, []),
    "MINIMUM": (29, []),
    "TRANSPOSE": (28, []),
    "SPACE_TO_DEPTH": (27, []),
    "DEPTH_TO_SPACE": (27, []),
    "SPLIT": (29, []),
    "SQRT": (29, []),
    "RSQRT": (29, []),
    "ABS": (29, []),
    "EXP": (29, []),
}


def _output_name(op: OperatorInfo, sg: SubGraphInfo, public: dict[int, str] | None = None) -> str:
    """First output tensor's name, plus the model output it feeds (signature name) when it is one."""
    if not op.outputs or op.outputs[0] < 0:
        return ""
    name = sg.tensors[op.outputs[0]].name
    if public and op.outputs[0] in public and public[op.outputs[0]] != name:
        name += f" (model output {public[op.outputs[0]]!r})"
    return name


def _finding(
    op: OperatorInfo, sg: SubGraphInfo, reason: str, severity: str, public: dict[int, str] | None = None
) -> Finding:
    return Finding(op.index, op.op_name, _output_name(op, sg, public), reason, severity)


def _run_checks(checks: list[Check], op: OperatorInfo, sg: SubGraphInfo, model: TFLiteModel) -> str | None:
    for check in checks:
        reason = check(op, sg, model)
        if reason:
            return reason
    return None


def _is_int8_graph(sg: SubGraphInfo) -> bool:
    return any(t.type_name == "INT8" and t.quantization is not None for t in sg.tensors)


def check_delegates(tflite_bytes: bytes, nnapi_api_level: int = 30, subgraph: int = 0) -> DelegateReport:
    """Static delegate report for subgraph ``subgraph`` of a ``.tflite``.

    ``nnapi_api_level`` is the lowest Android API level to support (30 = Android 11, NNAPI 1.3, the first
    with signed int8 tensors and ``half_pixel_centers`` resizes).
    """
    model = parse_tflite(tflite_bytes)
    sg = model.subgraphs[subgraph]
    counts: dict[str, int] = {}
    for op in sg.operators:
        counts[op.op_name] = counts.get(op.op_name, 0) + 1
    report = DelegateReport(len(sg.operators), counts, delegates={d: [] for d in DELEGATES})
    report.dynamic_tensors = [t.name for t in sg.tensors if t.is_dynamic]
    graph_inputs = set(sg.inputs)
    report.input_ops = [op.index for op in sg.operators if graph_inputs.intersection(op.inputs)]
    if len(model.subgraphs) > 1:
        report.forbidden.append(
            Finding(
                -1,
                "SUBGRAPHS",
                "",
                f"{len(model.subgraphs)} subgraphs: control flow is not allowed",
                "forbidden",
            )
        )
    int8_graph = _is_int8_graph(sg)
    public = model.io_names(subgraph)[1]

    def finding(op: OperatorInfo, reason: str, severity: str) -> Finding:
        return _finding(op, sg, reason, severity, public)

    for op in sg.operators:
        name = op.op_name
        if name in FORBIDDEN_OPS:
            reason = FORBIDDEN_OPS[name]
            if name == "CUSTOM" and (op.custom_code or "").startswith("Flex"):
                reason = f"Select-TF (Flex) op {op.custom_code}: needs the TF runtime, runs on no delegate"
            elif name == "CUSTOM":
                reason = f"custom op {op.custom_code!r}: runs on no delegate"
            report.forbidden.append(finding(op, reason, "forbidden"))
        # GPU
        if name not in GPU_OPS:
            report.delegates[GPU].append(finding(op, "op not supported by the GPU delegate", "unsupported"))
        elif reason := _run_checks(GPU_OPS[name], op, sg, model):
            report.delegates[GPU].append(finding(op, reason, "unsupported"))
        # XNNPACK
        if name not in XNNPACK_OPS:
            report.delegates[XNNPACK].append(finding(op, "op not supported by XNNPACK", "unsupported"))
        elif int8_graph and name in XNNPACK_FLOAT_ONLY and _dtype(sg, op.outputs[0]) in ("INT8", "UINT8"):
            report.delegates[XNNPACK].append(
                finding(op, f"quantized standalone {name} is not delegated by XNNPACK", "unsupported")
            )
        elif reason := _run_checks(XNNPACK_OPS[name], op, sg, model):
            report.delegates[XNNPACK].append(finding(op, reason, "unsupported"))
        elif name == "DEPTHWISE_CONV_2D" and (reason := _xnnpack_depthwise_perf(op, sg, model)):
            report.delegates[XNNPACK].append(finding(op, reason, "perf"))
        # NNAPI
        if name not in NNAPI_OPS:
            report.delegates[NNAPI].append(finding(op, "op not supported by NNAPI", "unsupported"))
            continue
        min_api, checks = NNAPI_OPS[name]
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D") and (
            op.options.get("dilation_w", 1) > 1 or op.options.get("dilation_h", 1) > 1
        ):
            min_api = max(min_api, 29)
        if name in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR") and (
            op.options.get("half_pixel_centers") or op.options.get("align_corners")
        ):
            min_api = max(min_api, 30)
        if any(_dtype(sg, t) == "INT8" for t in (*op.inputs[:1], *op.outputs) if t >= 0):
            min_api = max(min_api, 30)  # signed int8 tensors arrived with NNAPI 1.3
        if name == "QUANTIZE" and _dtype(sg, op.inputs[0]) != "FLOAT32":
            min_api = max(min_api, 30)
        if min_api > nnapi_api_level:
            report.delegates[NNAPI].append(
                finding(
                    op,
                    f"needs Android API {min_api} (NNAPI), target is API {nnapi_api_level}",
                    "unsupported",
                )
            )
        elif reason := _run_checks(checks, op, sg, model):
            report.delegates[NNAPI].append(finding(op, reason, "unsupported"))
    return report


# ------------------------------------------------------------------------------------------------------
# measured XNNPACK delegation in LiteRT
# ------------------------------------------------------------------------------------------------------
@dataclass
class PartitionReport:
    partitions: int  # DELEGATE nodes XNNPACK created
    total_ops: int  # ops in the original graph
    delegated_ops: int
    undelegated: list[tuple[int, str, list[str]]]  # (op index, op name, output tensor names)

    @property
    def fully_delegated(self) -> bool:
        return self.partitions == 1 and not self.undelegated

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: partitions, total_ops, delegated_ops, undelegated [{index, op, outputs}]."""
        return {
            "partitions": self.partitions,
            "total_ops": self.total_ops,
            "delegated_ops": self.delegated_ops,
            "undelegated": [{"index": i, "op": n, "outputs": outs} for i, n, outs in self.undelegated],
        }

    def summary(self) -> str:
        lines = [
            f"XNNPACK: {self.partitions} partition(s), {self.delegated_ops}/{self.total_ops} ops delegated, "
            f"{len(self.undelegated)} on the CPU"
        ]
        lines += [f"  - op {i} {name} -> {outs}" for i, name, outs in self.undelegated]
        return "\n".join(lines)


def delegated_ops_from_details(details: list[dict[str, Any]]) -> tuple[int, set[int]]:
    """``(partitions, indices of delegated original ops)`` from ``Interpreter._get_ops_details()``.

    LiteRT keeps the original nodes in the list and appends one ``DELEGATE`` node per partition. An
    original op is delegated when it lies between a DELEGATE node's inputs and outputs: walk back from
    each DELEGATE output through the producing ops, stopping at the DELEGATE's inputs.
    """
    original = [d for d in details if d["op_name"] != "DELEGATE"]
    delegate_nodes = [d for d in details if d["op_name"] == "DELEGATE"]
    producer = {int(t): d["index"] for d in original for t in d["outputs"]}
    by_index = {d["index"]: d for d in original}
    covered: set[int] = set()
    for node in delegate_nodes:
        boundary = {int(t) for t in node["inputs"]}
        stack = [int(t) for t in node["outputs"]]
        while stack:
            t = stack.pop()
            if t in boundary or t not in producer or producer[t] in covered:
                continue
            covered.add(producer[t])
            stack.extend(int(x) for x in by_index[producer[t]]["inputs"] if x >= 0)
    return len(delegate_nodes), covered


def count_xnnpack_partitions(model_path: str | Path, num_threads: int = 1) -> PartitionReport:
    """Load ``model_path`` in LiteRT with its default XNNPACK delegate and count partitions and CPU ops."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
    interpreter.allocate_tensors()  # default delegates are applied lazily, at the first allocation
    details = interpreter._get_ops_details()
    tensor_names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    partitions, covered = delegated_ops_from_details(details)
    original = [d for d in details if d["op_name"] != "DELEGATE"]
    undelegated = [
        (d["index"], d["op_name"], [tensor_names.get(int(t), str(int(t))) for t in d["outputs"]])
        for d in original
        if d["index"] not in covered
    ]
    return PartitionReport(partitions, len(original), len(original) - len(undelegated), undelegated)
