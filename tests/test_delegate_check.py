"""Delegate allow-lists on real converted models, and XNNPACK partitions measured in LiteRT."""

from __future__ import annotations

import json

import numpy as np
import pytest
from maskconver.converter.delegate_check import (
    DELEGATES,
    GPU,
    NNAPI,
    XNNPACK,
    check_delegates,
    count_xnnpack_partitions,
    delegated_ops_from_details,
)
from maskconver.runtime.tflite_flatbuffer import parse_tflite
from tiny_tflite import tiny_tflite

pytest.importorskip("tensorflow")


def test_topk_and_gather_are_forbidden_and_named():
    model = tiny_tflite("float", extra="topk_gather")
    report = check_delegates(model)
    names = {f.op_name for f in report.forbidden}
    assert {"TOPK_V2", "GATHER"} <= names
    topk = next(f for f in report.forbidden if f.op_name == "TOPK_V2")
    assert "peak_scores" in topk.output_name  # where it comes from: here the model output it feeds
    assert "top-K" in topk.reason and topk.severity == "forbidden"
    assert not report.ok
    gpu_bad = {f.op_name for f in report.unsupported(GPU)}
    assert {"TOPK_V2", "GATHER"} <= gpu_bad
    text = report.summary()
    assert f"FORBIDDEN op {topk.op_index} TOPK_V2" in text
    # the tf.image.resize in this graph is a half-pixel RESIZE_BILINEAR: fine on API 30, not before
    resize = [o for o in parse_tflite(model).subgraphs[0].operators if o.op_name == "RESIZE_BILINEAR"]
    assert resize and resize[0].options == {"align_corners": False, "half_pixel_centers": True}
    old = check_delegates(model, nnapi_api_level=29)
    assert any(f.op_name == "RESIZE_BILINEAR" and "API 30" in f.reason for f in old.unsupported(NNAPI))
    assert not any(f.op_name == "RESIZE_BILINEAR" for f in report.unsupported(NNAPI))


def test_7x7_depthwise_is_an_xnnpack_perf_warning_and_uint8_input_quantize_stays_on_cpu(tmp_path):
    model = tiny_tflite("int8", dw_kernel=7)
    report = check_delegates(model)
    assert report.forbidden == [] and report.dynamic_tensors == []
    (perf,) = report.perf_warnings(XNNPACK)
    assert perf.op_name == "DEPTHWISE_CONV_2D" and "7x7" in perf.reason and "49 taps" in perf.reason
    assert "depthwise" in perf.output_name
    assert report.perf_warnings(GPU) == [] and report.perf_warnings(NNAPI) == []
    (bad,) = report.unsupported(XNNPACK)
    assert bad.op_name == "QUANTIZE" and "UINT8 -> INT8" in bad.reason
    # measured: LiteRT leaves exactly that QUANTIZE on the CPU
    path = tmp_path / "int8_uint8_in.tflite"
    path.write_bytes(model)
    measured = count_xnnpack_partitions(path)
    assert measured.partitions == 1
    assert [(i, name) for i, name, _ in measured.undelegated] == [(bad.op_index, "QUANTIZE")]
    assert measured.delegated_ops == measured.total_ops - 1 == report.num_ops - 1


def test_pure_conv_int8_model_is_one_xnnpack_partition(tmp_path):
    model = tiny_tflite("int8_io", dw_kernel=3)
    report = check_delegates(model)
    assert report.ok, report.summary()
    assert all(report.delegates[d] == [] for d in DELEGATES)
    assert report.op_counts["CONV_2D"] == 6 and report.op_counts["DEPTHWISE_CONV_2D"] == 1
    path = tmp_path / "int8.tflite"
    path.write_bytes(model)
    measured = count_xnnpack_partitions(path)
    assert measured.partitions == 1 and measured.undelegated == [] and measured.fully_delegated
    assert measured.delegated_ops == measured.total_ops == report.num_ops
    assert "1 partition(s), 9/9 ops delegated" in measured.summary()
    assert json.loads(json.dumps(measured.to_dict())) == {
        "partitions": 1,
        "total_ops": 9,
        "delegated_ops": 9,
        "undelegated": [],
    }
    # NNAPI before Android 11 has no signed int8 tensors
    old = check_delegates(model, nnapi_api_level=29)
    assert len(old.unsupported(NNAPI)) == report.num_ops
    assert all("API 30" in f.reason for f in old.unsupported(NNAPI))


def test_dynamic_shapes_are_reported():
    report = check_delegates(tiny_tflite("float", input_dtype="float32", dynamic=True))
    assert report.dynamic_tensors and "image" in report.dynamic_tensors[0]
    assert not report.ok and "DYNAMIC shape" in report.summary()


def test_delegated_ops_walk_back_from_each_delegate_node():
    """Two partitions with a CPU op between them; ops outside any partition stay undelegated."""

    def op(i, name, ins, outs):
        return {"index": i, "op_name": name, "inputs": ins, "outputs": outs}

    details = [
        op(0, "CONV_2D", [0, 10], [1]),
        op(1, "ADD", [1, 11], [2]),
        op(2, "TOPK_V2", [2, 12], [3, 4]),
        op(3, "CONV_2D", [3, 13], [5]),
        op(4, "MUL", [5, 14], [6]),
        op(5, "DELEGATE", [0, 10, 11], [2]),
        op(6, "DELEGATE", [3, 13, 14], [6]),
    ]
    partitions, covered = delegated_ops_from_details(details)
    assert partitions == 2 and covered == {0, 1, 3, 4}


def test_flex_op_is_forbidden_with_its_name():
    tf = pytest.importorskip("tensorflow")
    fn = tf.function(
        lambda x: tf.math.cumprod(x, axis=3), input_signature=[tf.TensorSpec([1, 4, 4, 3], tf.float32)]
    )
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    report = check_delegates(conv.convert())
    (flex,) = report.forbidden
    assert flex.op_name == "CUSTOM" and "Select-TF (Flex) op FlexCumprod" in flex.reason
    assert all(len(report.unsupported(d)) == 1 for d in DELEGATES)


def test_old_models_with_only_deprecated_builtin_code():
    """Models from before the int32 builtin_code field carry the op in the int8 deprecated field."""
    import flatbuffers

    b = flatbuffers.Builder(256)
    name = b.CreateString("t")
    shape = b.CreateNumpyVector(np.array([1, 8, 8, 4], np.int32))
    b.StartObject(4)  # Tensor: shape, type, buffer, name
    b.PrependUOffsetTRelativeSlot(0, shape, 0)
    b.PrependUOffsetTRelativeSlot(3, name, 0)
    tensor = b.EndObject()
    io_vec = b.CreateNumpyVector(np.array([0], np.int32))
    b.StartObject(3)  # Operator: opcode_index, inputs, outputs
    b.PrependUOffsetTRelativeSlot(1, io_vec, 0)
    b.PrependUOffsetTRelativeSlot(2, io_vec, 0)
    op = b.EndObject()
    vectors = []
    for item in (tensor, op):
        b.StartVector(4, 1, 4)
        b.PrependUOffsetTRelative(item)
        vectors.append(b.EndVector())
    b.StartObject(4)  # SubGraph: tensors, inputs, outputs, operators
    b.PrependUOffsetTRelativeSlot(0, vectors[0], 0)
    b.PrependUOffsetTRelativeSlot(1, io_vec, 0)
    b.PrependUOffsetTRelativeSlot(2, io_vec, 0)
    b.PrependUOffsetTRelativeSlot(3, vectors[1], 0)
    subgraph = b.EndObject()
    b.StartObject(1)  # OperatorCode with only deprecated_builtin_code = 22 (RESHAPE)
    b.PrependInt8Slot(0, 22, 0)
    code = b.EndObject()
    b.StartObject(0)  # Buffer 0: empty
    buffer = b.EndObject()
    tables = []
    for item in (code, subgraph, buffer):
        b.StartVector(4, 1, 4)
        b.PrependUOffsetTRelative(item)
        tables.append(b.EndVector())
    b.StartObject(5)  # Model: version, operator_codes, subgraphs, description, buffers
    b.PrependUint32Slot(0, 3, 0)
    b.PrependUOffsetTRelativeSlot(1, tables[0], 0)
    b.PrependUOffsetTRelativeSlot(2, tables[1], 0)
    b.PrependUOffsetTRelativeSlot(4, tables[2], 0)
    b.Finish(b.EndObject(), file_identifier=b"TFL3")
    model = parse_tflite(bytes(b.Output()))
    (opcode,) = model.operator_codes
    assert (opcode.builtin_code, opcode.deprecated_builtin_code, opcode.name) == (0, 22, "RESHAPE")
    assert model.subgraphs[0].operators[0].op_name == "RESHAPE"
    assert model.subgraphs[0].tensors[0].shape == (1, 8, 8, 4) and model.version == 3
    report = check_delegates(bytes(b.Output()))
    assert report.op_counts == {"RESHAPE": 1} and report.ok


def test_float16_weights_behind_dequantize_count_as_constant():
    """An ``--fp16`` graph stores its weights as FLOAT16 and dequantizes them: every delegate reads them as
    constant weights, and the input CAST (wherever it sits in the op order) is the graph's I/O boundary."""
    model = tiny_tflite("fp16")
    report = check_delegates(model)
    assert report.op_counts.get("DEQUANTIZE", 0) >= 2
    sg = parse_tflite(model).subgraphs[0]
    cast = [op.index for op in sg.operators if op.op_name == "CAST"]
    assert cast and set(cast) <= set(report.input_ops)
    for d in DELEGATES:
        for f in report.unsupported(d):
            assert "not constant" not in f.reason, f
            assert f.op_index in report.input_ops, f  # only the input cast is left on the CPU
